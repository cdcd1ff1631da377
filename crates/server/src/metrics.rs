//! Prometheus metrics: requests by route and status, a latency histogram by route, and
//! authentication failures by reason. Rendered as the text exposition format.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, Method};
use axum::response::IntoResponse;

use crate::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requests: HashMap<(&'static str, String, u16), u64>,
    latency: HashMap<String, Histogram>,
    auth_failures: HashMap<(&'static str, &'static str), u64>,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Counts a request. `route` must be a matched route pattern (or a fixed stand-in),
    /// never the path as sent: every label value comes from a set the server fixes, so
    /// no client can add series.
    pub fn record_request(&self, method: &Method, route: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner
            .requests
            .entry((method_label(method), route.to_owned(), status))
            .or_default() += 1;
        let h = inner.latency.entry(route.to_owned()).or_default();
        h.count += 1;
        h.sum += seconds;
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            h.counts[i] += 1;
        }
    }

    /// Counts a refused credential: `kind` is what was presented (access_token, login,
    /// refresh_token), `reason` why it failed.
    pub fn record_auth_failure(&self, kind: &'static str, reason: &'static str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner.auth_failures.entry((kind, reason)).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str(
            "# HELP herd_http_requests_total HTTP requests served, by route and status.\n",
        );
        out.push_str("# TYPE herd_http_requests_total counter\n");
        let mut requests: Vec<_> = inner.requests.iter().collect();
        requests.sort();
        for ((method, route, status), n) in requests {
            let _ = writeln!(
                out,
                "herd_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str(
            "# HELP herd_http_request_duration_seconds Time to produce a response, by route.\n",
        );
        out.push_str("# TYPE herd_http_request_duration_seconds histogram\n");
        let mut latency: Vec<_> = inner.latency.iter().collect();
        latency.sort_by(|a, b| a.0.cmp(b.0));
        for (route, h) in latency {
            let route = escape(route);
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "herd_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "herd_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "herd_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "herd_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out.push_str(
            "# HELP herd_auth_failures_total Refused credentials, by what was presented and why.\n",
        );
        out.push_str("# TYPE herd_auth_failures_total counter\n");
        let mut failures: Vec<_> = inner.auth_failures.iter().collect();
        failures.sort();
        for ((kind, reason), n) in failures {
            let _ = writeln!(
                out,
                "herd_auth_failures_total{{kind=\"{kind}\",reason=\"{reason}\"}} {n}"
            );
        }
        out
    }
}

/// The method as a label: one of the methods HTTP defines, or `other` for any token a
/// client made up, so that made-up methods cannot grow the metrics without bound.
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus metrics of this replica.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4.", body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8")),
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = state.metrics.render();
    let _ = writeln!(
        body,
        "# HELP herd_revoked_sessions Revoked sessions this replica refuses tokens of.\n\
         # TYPE herd_revoked_sessions gauge\nherd_revoked_sessions {}",
        state.auth.revoked_sessions()
    );
    let _ = writeln!(
        body,
        "# HELP herd_live_peers Other replicas heard announcing themselves on the bus within \
         the last 3 s: those a revocation waits for.\n\
         # TYPE herd_live_peers gauge\nherd_live_peers {}",
        state.confirmations().live_peers().len()
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
