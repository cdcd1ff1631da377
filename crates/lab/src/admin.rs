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

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::balancer::ProxyBody;
use crate::problem::{json, problem};
use crate::replicas::{ActionError, Cluster};

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
    if request.method() != Method::GET && !same_origin(request.headers()) {
        return problem(
            StatusCode::FORBIDDEN,
            "csrf-failed",
            "a cluster action must come from the cluster's own page (Origin differs from Host)",
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
            Err(e @ crate::LabError::FixedUpstreams) => {
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
