//! The development balancer: one hyper HTTP/1 server in front of the replicas.
//!
//! A request goes to the next healthy replica (or, sticky, to the one its
//! `herd_affinity` cookie names). When the connection to that replica cannot be made,
//! the request never reached it, so it is retried once on another replica; a safe
//! method (GET, HEAD, ...) is also retried when the replica dropped the connection
//! before answering, as nginx's `proxy_next_upstream error` does. Only bodies the
//! balancer could buffer (at most [`RETRY_BODY_LIMIT`], with a length) can be sent twice.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::problem::problem;
use crate::replicas::{Cluster, Target};
use crate::Policy;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Request bodies up to this size are buffered so that the request can be retried.
pub const RETRY_BODY_LIMIT: u64 = 1024 * 1024;

/// The cookie that pins a client to a replica under [`Policy::Sticky`].
pub const AFFINITY_COOKIE: &str = "herd_affinity";

pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Accepts connections until `shutdown` resolves.
pub(crate) async fn serve(
    cluster: Arc<Cluster>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, usually: wait for some to close.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let cluster = cluster.clone();
                async move { Ok::<_, Infallible>(handle(cluster, remote, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(%remote, "client connection: {e}");
            }
        });
    }
}

async fn handle(
    cluster: Arc<Cluster>,
    remote: SocketAddr,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let path = request.uri().path();
    if path == "/_cluster" || path.starts_with("/_cluster/") {
        return crate::admin::handle(&cluster, remote, request).await;
    }
    if is_upgrade(request.headers()) {
        return proxy_upgrade(&cluster, remote, request).await;
    }
    proxy(&cluster, remote, request).await
}

async fn proxy(
    cluster: &Cluster,
    remote: SocketAddr,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = request.into_parts();
    let affinity = affinity(&parts.headers);
    strip_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, remote);

    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let buffered = if body.is_end_stream() {
        Some(Bytes::new())
    } else if length.is_some_and(|n| n <= RETRY_BODY_LIMIT) {
        match body.collect().await {
            Ok(collected) => Some(collected.to_bytes()),
            Err(e) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "malformed-request",
                    format!("reading the request body: {e}"),
                )
            }
        }
    } else {
        // Too large (or of unknown length) to keep a copy of: streamed, never retried.
        return match cluster.pick(affinity.as_deref(), None) {
            None => no_replica(),
            Some(target) => {
                let outgoing = outgoing(&parts, &target, body.map_err(BoxError::from).boxed());
                match cluster.client.request(outgoing).await {
                    Ok(response) => finish(cluster, &target, affinity.as_deref(), response),
                    Err(e) => {
                        if e.is_connect() {
                            cluster.mark_down(&target);
                        }
                        bad_gateway(&target, &e)
                    }
                }
            }
        };
    };
    let body = buffered.unwrap_or_default();

    let Some(first) = cluster.pick(affinity.as_deref(), None) else {
        return no_replica();
    };
    let error = match cluster
        .client
        .request(outgoing(&parts, &first, full(body.clone())))
        .await
    {
        Ok(response) => return finish(cluster, &first, affinity.as_deref(), response),
        Err(e) => e,
    };
    cluster.mark_down(&first);
    if !(error.is_connect() || parts.method.is_safe()) {
        return bad_gateway(&first, &error);
    }
    tracing::info!(replica = %first.id, "retrying on another replica: {error}");
    let Some(second) = cluster.pick(None, Some(&first.id)) else {
        return no_replica();
    };
    match cluster
        .client
        .request(outgoing(&parts, &second, full(body)))
        .await
    {
        Ok(response) => finish(cluster, &second, affinity.as_deref(), response),
        Err(e) => {
            cluster.mark_down(&second);
            bad_gateway(&second, &e)
        }
    }
}

/// A WebSocket (or any other) upgrade: the request goes over a connection of its own to
/// the replica, and once both sides have switched protocols the bytes are copied both
/// ways until either side closes.
async fn proxy_upgrade(
    cluster: &Cluster,
    remote: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let client_side = hyper::upgrade::on(&mut request);
    let (mut parts, _body) = request.into_parts();
    let affinity = affinity(&parts.headers);
    add_forwarded(&mut parts.headers, remote);

    let mut excluded: Option<String> = None;
    let (target, stream) = loop {
        let Some(target) = cluster.pick(affinity.as_deref(), excluded.as_deref()) else {
            return no_replica();
        };
        let connect = TcpStream::connect(target.addr);
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok(stream)) => break (target, stream),
            _ if excluded.is_none() => {
                cluster.mark_down(&target);
                excluded = Some(target.id.clone());
            }
            _ => {
                cluster.mark_down(&target);
                return problem(
                    StatusCode::BAD_GATEWAY,
                    "bad-gateway",
                    format!("replica {} refused the connection", target.id),
                );
            }
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(handshake) => handshake,
            Err(e) => return bad_gateway(&target, &e),
        };
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!("upgrade connection to a replica: {e}");
        }
    });
    let mut outgoing = Request::new(empty());
    *outgoing.method_mut() = parts.method.clone();
    *outgoing.uri_mut() = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".parse(), |pq| pq.as_str().parse())
        .unwrap_or_default();
    *outgoing.headers_mut() = parts.headers;
    let mut response = match sender.send_request(outgoing).await {
        Ok(response) => response,
        Err(e) => return bad_gateway(&target, &e),
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let replica_side = hyper::upgrade::on(&mut response);
        let id = target.id.clone();
        tokio::spawn(async move {
            let (client, replica) = match tokio::try_join!(client_side, replica_side) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(replica = %id, "upgrade failed: {e}");
                    return;
                }
            };
            let (mut client, mut replica) = (TokioIo::new(client), TokioIo::new(replica));
            let _ = tokio::io::copy_bidirectional(&mut client, &mut replica).await;
        });
    }
    finish(cluster, &target, affinity.as_deref(), response)
}

/// The request as it goes to `target`: same method, path, query and headers.
fn outgoing(parts: &Parts, target: &Target, body: ProxyBody) -> Request<ProxyBody> {
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = format!("http://{}{path}", target.addr)
        .parse()
        .unwrap_or_default();
    *request.headers_mut() = parts.headers.clone();
    request
}

/// The replica's answer, unchanged but for the affinity cookie when sticky.
fn finish<B>(
    cluster: &Cluster,
    target: &Target,
    affinity: Option<&str>,
    response: Response<B>,
) -> Response<ProxyBody>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    cluster.served(target);
    let mut response = response.map(|body| body.map_err(Into::into).boxed());
    if cluster.config.policy == Policy::Sticky && affinity != Some(target.id.as_str()) {
        let cookie = format!(
            "{AFFINITY_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax",
            target.id
        );
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    response
}

fn no_replica() -> Response<ProxyBody> {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "no replica is healthy right now; try again shortly",
    )
}

fn bad_gateway(target: &Target, error: &dyn std::fmt::Display) -> Response<ProxyBody> {
    tracing::warn!(replica = %target.id, "proxying failed: {error}");
    problem(
        StatusCode::BAD_GATEWAY,
        "bad-gateway",
        format!("replica {} failed to answer", target.id),
    )
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The replica id in the request's `herd_affinity` cookie.
fn affinity(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == AFFINITY_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Headers that describe one connection, not the request (RFC 9110 7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

fn add_forwarded(headers: &mut HeaderMap, remote: SocketAddr) {
    let ip = remote.ip().to_canonical().to_string();
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {ip}"),
        None => ip,
    };
    if let Ok(chain) = HeaderValue::from_str(&chain) {
        headers.insert("x-forwarded-for", chain);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_affinity_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; herd_affinity=r2; b=3"),
        );
        assert_eq!(affinity(&headers).as_deref(), Some("r2"));
        assert_eq!(affinity(&HeaderMap::new()), None);
    }

    #[test]
    fn forwarded_for_appends_to_an_existing_chain() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded(&mut headers, "127.0.0.1:5000".parse().expect("addr"));
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_with_those_connection_names() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
    }

    #[test]
    fn an_upgrade_needs_both_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_upgrade(&headers));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_upgrade(&headers));
    }
}
