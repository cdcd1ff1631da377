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
use hyper::{Method, Request, Response, StatusCode};
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

/// Accepts connections until `shutdown` resolves, each under the cluster's
/// [`EdgeLimits`](crate::EdgeLimits).
pub(crate) async fn serve(
    cluster: Arc<Cluster>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let limits = cluster.config.edge;
    let pressure = cluster.pressure.clone();
    crate::listen::accept(
        listener,
        limits,
        pressure,
        shutdown,
        move |io, remote, activity, spare| {
            let cluster = cluster.clone();
            async move {
                let service = hyper::service::service_fn(move |request| {
                    let cluster = cluster.clone();
                    let in_flight = activity.begin();
                    async move {
                        let response = handle(cluster, remote, request).await;
                        drop(in_flight);
                        Ok::<_, Infallible>(response)
                    }
                });
                let connection = limits
                    .builder()
                    .serve_connection(io, service)
                    .with_upgrades();
                if let Err(e) = connection.await {
                    tracing::debug!(%remote, "client connection: {e}");
                    spare.close_after(&e).await;
                }
            }
        },
    )
    .await;
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
    if request.method() == Method::GET && is_websocket_upgrade(request.headers()) {
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
    // `Upgrade` goes too: only a WebSocket GET is upgraded (see `handle`), any other
    // request that asks for one (`h2c` from curl --http2) is proxied as what it is.
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
        // A client that stops sending its body is not waited for longer than for a head.
        let deadline = cluster.config.edge.header_read_timeout;
        match tokio::time::timeout(deadline, body.collect()).await {
            Ok(Ok(collected)) => Some(collected.to_bytes()),
            Ok(Err(e)) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "malformed-request",
                    format!("reading the request body: {e}"),
                )
            }
            Err(_) => {
                return problem(
                    StatusCode::REQUEST_TIMEOUT,
                    "request-timeout",
                    format!(
                        "the request body did not arrive within {} s",
                        deadline.as_secs()
                    ),
                )
            }
        }
    } else {
        // Too large (or of unknown length) to keep a copy of: streamed, never retried.
        return match cluster.pick(affinity.as_deref(), None) {
            None => no_replica(),
            Some(target) => {
                let outgoing = outgoing(&parts, &target, body.map_err(BoxError::from).boxed());
                match attempt(cluster, &target, outgoing, false).await {
                    Ok(response) => finish(cluster, &target, affinity.as_deref(), response),
                    Err(failure) => failure.answer(cluster, &target),
                }
            }
        };
    };
    let body = buffered.unwrap_or_default();
    // GET, HEAD, OPTIONS, TRACE: sending one twice changes nothing.
    let repeatable = parts.method.is_safe();

    let Some(first) = cluster.pick(affinity.as_deref(), None) else {
        return no_replica();
    };
    let outgoing_first = outgoing(&parts, &first, full(body.clone()));
    let failure = match attempt(cluster, &first, outgoing_first, repeatable).await {
        Ok(response) => return finish(cluster, &first, affinity.as_deref(), response),
        Err(failure) => failure,
    };
    if !(failure.never_reached() || repeatable) {
        return failure.answer(cluster, &first);
    }
    failure.mark(cluster, &first);
    let second = if let TryFailure::OutOfDescriptors(_) = failure {
        // The shortage is the balancer's, not the replica's: once idle client
        // connections made room, any replica will do, the first one too.
        tracing::info!("retrying once idle connections made room: {failure}");
        cluster.pressure.relieve().await;
        cluster.pick(affinity.as_deref(), None)
    } else {
        tracing::info!(replica = %first.id, "retrying on another replica: {failure}");
        cluster.pick(None, Some(&first.id))
    };
    let Some(second) = second else {
        return no_replica();
    };
    match attempt(
        cluster,
        &second,
        outgoing(&parts, &second, full(body)),
        repeatable,
    )
    .await
    {
        Ok(response) => finish(cluster, &second, affinity.as_deref(), response),
        Err(failure) => failure.answer(cluster, &second),
    }
}

/// Why one try at a replica brought no response.
#[derive(Debug)]
enum TryFailure {
    /// No connection could be made: the request never reached the replica.
    Connect(hyper_util::client::legacy::Error),
    /// No connection could be opened because the balancer itself is out of file
    /// descriptors: the request never left, and the replica is not to blame.
    OutOfDescriptors(hyper_util::client::legacy::Error),
    /// The exchange broke before a response head: the replica dropped the connection,
    /// or refused the request and hung up on a body it did not want. The replica may be
    /// fine and the request to blame, so this alone does not take it out of rotation.
    Broken(hyper_util::client::legacy::Error),
    /// No response head within the per-try bound.
    TimedOut(Duration),
    /// The replica left rotation (its `/readyz` failed or it died) while the try waited.
    LeftRotation,
}

impl std::fmt::Display for TryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TryFailure::Connect(e) | TryFailure::Broken(e) => write!(f, "{e}"),
            TryFailure::OutOfDescriptors(e) => {
                write!(f, "the balancer is out of file descriptors: {e}")
            }
            TryFailure::TimedOut(after) => write!(f, "no answer within {after:?}"),
            TryFailure::LeftRotation => write!(f, "the replica left rotation"),
        }
    }
}

impl TryFailure {
    fn never_reached(&self) -> bool {
        matches!(
            self,
            TryFailure::Connect(_) | TryFailure::OutOfDescriptors(_)
        )
    }

    /// Only a failed connection takes a replica out at once: it says nothing about the
    /// request. Everything else is left to its `/readyz`, which a paused or dying
    /// replica fails within a check or two, so that no client can take replicas out by
    /// sending requests they refuse.
    fn mark(&self, cluster: &Cluster, target: &Target) {
        if let TryFailure::Connect(_) = self {
            cluster.mark_down(target);
        }
    }

    /// The answer to the client when no further try is made.
    fn answer(self, cluster: &Cluster, target: &Target) -> Response<ProxyBody> {
        self.mark(cluster, target);
        tracing::warn!(replica = %target.id, "proxying failed: {self}");
        match self {
            TryFailure::Connect(_) | TryFailure::Broken(_) => problem(
                StatusCode::BAD_GATEWAY,
                "bad-gateway",
                format!("replica {} failed to answer", target.id),
            ),
            TryFailure::OutOfDescriptors(_) => out_of_descriptors(),
            TryFailure::TimedOut(_) | TryFailure::LeftRotation => problem(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway-timeout",
                format!("replica {} did not answer in time", target.id),
            ),
        }
    }
}

/// One try at `target`, bounded by the upstream timeout; a `repeatable` request is also
/// given up as soon as `target` leaves rotation, so that it can be retried elsewhere
/// rather than wait out the bound on a replica that is paused or gone.
async fn attempt(
    cluster: &Cluster,
    target: &Target,
    request: Request<ProxyBody>,
    repeatable: bool,
) -> Result<Response<Incoming>, TryFailure> {
    let bound = cluster.config.edge.upstream_timeout;
    let left = async {
        if repeatable {
            cluster.left_rotation(target).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        answer = cluster.client.request(request) => answer.map_err(|e| {
            if herd_edge::caused_by_out_of_descriptors(&e) {
                TryFailure::OutOfDescriptors(e)
            } else if e.is_connect() {
                TryFailure::Connect(e)
            } else {
                TryFailure::Broken(e)
            }
        }),
        () = tokio::time::sleep(bound) => Err(TryFailure::TimedOut(bound)),
        () = left => Err(TryFailure::LeftRotation),
    }
}

/// A WebSocket upgrade: the request goes over a connection of its own to the replica,
/// and once both sides have switched protocols the bytes are copied both ways until
/// either side closes. It has no body: one that declares a body is refused, since the
/// replica would wait for bytes this path never forwards.
async fn proxy_upgrade(
    cluster: &Cluster,
    remote: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    if !request.body().is_end_stream() {
        return problem(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "a WebSocket upgrade carries no body",
        );
    }
    let client_side = hyper::upgrade::on(&mut request);
    let (mut parts, _body) = request.into_parts();
    let affinity = affinity(&parts.headers);
    add_forwarded(&mut parts.headers, remote);

    let mut excluded: Option<String> = None;
    let mut relieved = false;
    let (target, stream) = loop {
        let Some(target) = cluster.pick(affinity.as_deref(), excluded.as_deref()) else {
            return no_replica();
        };
        let connect = TcpStream::connect(target.addr);
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok(stream)) => break (target, stream),
            // The balancer's own shortage, as in `proxy`: not the replica's fault.
            Ok(Err(e)) if herd_edge::is_out_of_descriptors(&e) => {
                if relieved {
                    return out_of_descriptors();
                }
                cluster.pressure.relieve().await;
                relieved = true;
            }
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
    let bound = cluster.config.edge.upstream_timeout;
    let mut response = match tokio::time::timeout(bound, sender.send_request(outgoing)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return bad_gateway(&target, &e),
        Err(_) => return TryFailure::TimedOut(bound).answer(cluster, &target),
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

fn out_of_descriptors() -> Response<ProxyBody> {
    let mut response = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the balancer is out of connections right now; try again shortly",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn bad_gateway(target: &Target, error: &dyn std::fmt::Display) -> Response<ProxyBody> {
    tracing::warn!(replica = %target.id, "proxying failed: {error}");
    problem(
        StatusCode::BAD_GATEWAY,
        "bad-gateway",
        format!("replica {} failed to answer", target.id),
    )
}

/// An upgrade to WebSocket, the one protocol the balancer switches to; any other
/// `Upgrade` (such as `h2c`) is dropped as the hop-by-hop header it is.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    is_upgrade(headers)
        && headers
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
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
        assert!(is_websocket_upgrade(&headers));
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(is_upgrade(&headers));
        assert!(!is_websocket_upgrade(&headers));
    }
}
