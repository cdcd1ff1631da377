//! The admin API under `/_cluster/`, answered by the balancer itself and never proxied.
//! It can kill processes, so it answers loopback clients only unless the cluster runs
//! with `admin_public`.
//!
//! - `GET /_cluster/replicas`: `{"replicas": [...], "policy": "round-robin"|"sticky",
//!   "sessions": "token"|"shared"|"memory"|null, "traffic_seconds": 30}`; each replica
//!   with its requests per second over the last `traffic_seconds` (every client's).
//! - `POST /_cluster/replicas`: add a replica (201, the replica)
//! - `POST /_cluster/replicas/{id}/kill`: SIGKILL, a crash (202)
//! - `POST /_cluster/replicas/{id}/drain`: no new requests, then SIGTERM (202)
//!
//! A POST that carries an `Origin` must come from the balancer's own host (the page
//! the replicas serve), so another site open in the same browser cannot kill replicas.
//! Being loopback-only is not enough against DNS rebinding (a site whose name is made to
//! resolve to 127.0.0.1 is, to the browser, same-origin with itself), so unless the API
//! is public the `Host` must be a loopback name, and a POST must carry [`ADMIN_HEADER`]:
//! a page on another origin can send that only after a CORS preflight, which this API
//! refuses. The number of replicas a POST can start is capped (`max_replicas`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::balancer::ProxyBody;
use crate::problem::{json, problem};
use crate::replicas::{ActionError, Cluster};

/// The header every state-changing admin request carries (any value): the cluster's
/// page sends it; a cross-origin page cannot without a preflight, which is refused.
pub const ADMIN_HEADER: &str = "x-herd-admin";

pub(crate) async fn handle(
    cluster: &Arc<Cluster>,
    remote: SocketAddr,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    if !allowed(remote.ip(), cluster.config.admin_public) {
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the cluster admin API answers loopback clients only (see --admin-public)",
        );
    }
    if !cluster.config.admin_public && !loopback_host(request.headers()) {
        return problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the cluster admin API answers to a loopback Host only (localhost, 127.0.0.1, [::1]) \
             unless --admin-public: another name may be a page rebinding its DNS to this machine",
        );
    }
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads && !same_origin(request.headers()) {
        return problem(
            StatusCode::FORBIDDEN,
            "csrf-failed",
            "a cluster action must come from the cluster's own page (Origin differs from Host)",
        );
    }
    if !reads && !request.headers().contains_key(ADMIN_HEADER) {
        return problem(
            StatusCode::FORBIDDEN,
            "csrf-failed",
            format!(
                "a cluster action must carry the {ADMIN_HEADER} header (the cluster's page and \
                 scripts send it; a page from another site cannot)"
            ),
        );
    }
    let path = request.uri().path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(2).collect();
    let method = request.method().clone();
    match (segments.as_slice(), method) {
        (["replicas"], Method::GET) => json(
            StatusCode::OK,
            &json!({
                "replicas": cluster.views(),
                "policy": cluster.config.policy,
                "sessions": cluster.config.sessions,
                "traffic_seconds": crate::replicas::TRAFFIC_SECONDS,
            }),
        ),
        (["replicas"], Method::POST) => match cluster.add() {
            Ok(view) => json(StatusCode::CREATED, &view),
            Err(e @ (crate::LabError::FixedUpstreams | crate::LabError::TooManyReplicas(_))) => {
                problem(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            Err(e) => {
                tracing::error!("adding a replica: {e}");
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the replica could not be started; the cluster's log says why",
                )
            }
        },
        (["replicas", id, action @ ("kill" | "drain")], Method::POST) => {
            let done = if *action == "kill" {
                cluster.kill(id)
            } else {
                cluster.drain(id)
            };
            match done {
                Ok(view) => json(StatusCode::ACCEPTED, &view),
                Err(ActionError::NoSuchReplica) => problem(
                    StatusCode::NOT_FOUND,
                    "not-found",
                    format!("there is no replica {id:?}"),
                ),
                Err(ActionError::NotRunning) => problem(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("replica {id} is not running"),
                ),
            }
        }
        (["replicas"] | ["replicas", _, "kill" | "drain"], _) => problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "see the admin API's methods in herd cluster --help",
        ),
        _ => problem(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no admin endpoint at {path}"),
        ),
    }
}

/// Whether a client at `ip` may use the admin API.
pub(crate) fn allowed(ip: IpAddr, public: bool) -> bool {
    public || ip.to_canonical().is_loopback()
}

/// Whether the request names this machine by a loopback name or address: a page whose
/// own name was rebound to 127.0.0.1 sends that name instead.
fn loopback_host(headers: &hyper::HeaderMap) -> bool {
    let Some(host) = headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // `[::1]:8080`: the address is between the brackets.
        Some(rest) => rest.split_once(']').map_or("", |(inside, _)| inside),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Whether a state-changing request may come from where it says it comes from. Being
/// loopback-only does not stop another site open in a developer's browser from posting
/// to 127.0.0.1, so a browser's `Origin` must name this host; clients that send no
/// `Origin` (curl, scripts) are not browsers acting for some other site.
fn same_origin(headers: &hyper::HeaderMap) -> bool {
    let Some(origin) = headers.get(hyper::header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok().and_then(|o| o.strip_prefix("http://"));
    matches!((origin, host), (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_clients_reach_the_admin_api_unless_it_is_public() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(allowed(ip("127.0.0.1"), false));
        assert!(allowed(ip("127.8.9.10"), false));
        assert!(allowed(ip("::1"), false));
        assert!(allowed(ip("::ffff:127.0.0.1"), false));
        assert!(!allowed(ip("192.168.1.20"), false));
        assert!(!allowed(ip("::ffff:10.0.0.1"), false));
        assert!(!allowed(ip("2001:db8::1"), false));
        assert!(allowed(ip("192.168.1.20"), true));
    }

    #[test]
    fn a_rebound_dns_name_is_not_a_loopback_host() {
        use hyper::header::{HeaderValue, HOST};
        let host = |value: &'static str| {
            let mut headers = hyper::HeaderMap::new();
            headers.insert(HOST, HeaderValue::from_static(value));
            loopback_host(&headers)
        };
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "[::1]",
            "127.1.2.3:1",
        ] {
            assert!(host(ok), "{ok}");
        }
        for refused in [
            "evil.example:8080",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io:8080",
            "10.0.0.1:8080",
            "[2001:db8::1]:8080",
            "",
        ] {
            assert!(!host(refused), "{refused}");
        }
        assert!(!loopback_host(&hyper::HeaderMap::new()), "no Host");
    }

    #[test]
    fn a_cluster_action_from_another_site_is_refused() {
        use hyper::header::{HeaderValue, HOST, ORIGIN};
        let mut headers = hyper::HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&headers), "no Origin: not a browser");
        headers.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&headers));
        headers.insert(ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&headers));
        headers.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&headers));
    }
}
