//! Prometheus metrics: requests by route and status, a latency histogram by route, and
//! authentication failures by reason. Kept in prometheus-client's atomic counters and
//! label families and rendered as the Prometheus text exposition format (0.0.4).
//!
//! On the request path nothing allocates and nothing takes an exclusive lock shared by
//! all requests: a label set is a method from a fixed list, the route's matched pattern
//! (axum's `MatchedPath`, whose clone is a reference count) and the status, hashed as one
//! word (`fnv1a`); looking a series up takes the family's read lock, shared by every
//! reader; only the first request of a series inserts it. The latency histogram's lock is
//! per route.
//!
//! Live chat's stages (`herd_chat_stage_seconds`): what a message spent in each, on the
//! replica that took it ([`herd_chat::Stage`]: waiting for its room's commit, the commit,
//! waiting for its announcement, the publish) and on the replica that delivered it
//! ([`DeliveryStage`]: from the bus to a connection's queue, from the queue to the
//! socket); and how many posts each commit wrote (`herd_chat_commit_posts`). The label
//! sets are fixed, and each histogram is made at start-up and held, so recording one
//! looks nothing up.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use axum::extract::{MatchedPath, State};
use axum::http::{header, Method};
use axum::response::IntoResponse;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

use crate::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the chat stage buckets, in seconds: finer than the requests', since a
/// stage of a message that should arrive within 10 ms takes well under one.
const STAGE_BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Upper bounds of the posts-per-commit buckets.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A live message's stages on the replica that delivers it to its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStage {
    /// From the moment the replica decoded the bus's delivery to the moment one
    /// connection's subscription queued its frame: the wake-up of every subscription.
    Fanout,
    /// From the frame being queued to its write being flushed to the socket.
    Write,
}

/// The value of the `stage` label of every chat stage, chat's and the transport's.
const STAGES: [&str; 6] = [
    "commit_queue",
    "commit",
    "announce_queue",
    "publish",
    "fanout",
    "write",
];

fn stage_index(stage: herd_chat::Stage) -> usize {
    match stage {
        herd_chat::Stage::CommitQueue => 0,
        herd_chat::Stage::Commit => 1,
        herd_chat::Stage::AnnounceQueue => 2,
        herd_chat::Stage::Publish => 3,
    }
}

/// The counter families, whose text prometheus-client writes in the OpenMetrics manner
/// (`# TYPE name counter` above `name_total` samples); `render` names them as the 0.0.4
/// format and the dashboards do, `name_total`.
const COUNTERS: [&str; 2] = ["herd_http_requests", "herd_auth_failures"];

/// A route label: the matched route pattern, or `(unmatched)` for a request no route
/// took. Never the path as sent: every label value comes from a set the server fixes,
/// so no client can add series.
#[derive(Debug, Clone)]
pub struct Route(Option<MatchedPath>);

impl Route {
    pub fn of(matched: Option<&MatchedPath>) -> Route {
        Route(matched.cloned())
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref().map_or("(unmatched)", MatchedPath::as_str)
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Route) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Route {}
impl Hash for Route {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(fnv1a(self.as_str().as_bytes()));
    }
}

/// FNV-1a of `bytes`: what a label set's hash is made of, so that the family's SipHash
/// takes one word instead of the label text byte by byte on every request. Consistent
/// with equality (equal text, equal hash), which is all a map needs; a collision only
/// costs a comparison, and no client chooses a label.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        // prometheus-client writes label values as they are; a route pattern is the
        // server's own, but escape as the format asks all the same.
        for c in self.as_str().chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: Route,
    status: u16,
}

impl Hash for RequestLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One word for the three labels (see `fnv1a`).
        let method = fnv1a(self.method.as_bytes());
        let route = fnv1a(self.route.as_str().as_bytes());
        state.write_u64(method ^ route.rotate_left(17) ^ (u64::from(self.status) << 48));
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    kind: &'static str,
    reason: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

fn stage_histogram() -> Histogram {
    Histogram::new(STAGE_BUCKETS)
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    auth_failures: Family<FailureLabels, Counter>,
    revoked_sessions: Gauge,
    /// One histogram a stage, in [`STAGES`]' order: the series of
    /// `herd_chat_stage_seconds`.
    chat_stages: [Histogram; 6],
    chat_batch: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let auth_failures = Family::<FailureLabels, Counter>::default();
        let revoked_sessions = Gauge::default();
        let mut registry = Registry::default();
        // prometheus-client ends every help text with a full stop.
        registry.register(
            "herd_http_requests",
            "HTTP requests served, by route and status",
            requests.clone(),
        );
        registry.register(
            "herd_http_request_duration_seconds",
            "Time to produce a response, by route",
            latency.clone(),
        );
        registry.register(
            "herd_auth_failures",
            "Refused credentials, by what was presented and why",
            auth_failures.clone(),
        );
        registry.register(
            "herd_revoked_sessions",
            "Revoked sessions this replica refuses tokens of",
            revoked_sessions.clone(),
        );
        let stages = Family::<StageLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            stage_histogram,
        );
        let chat_stages = STAGES.map(|stage| stages.get_or_create(&StageLabels { stage }).clone());
        registry.register(
            "herd_chat_stage_seconds",
            "Time a live chat message spent in each stage, on the replica that took it \
             (commit_queue, commit, announce_queue, publish) and on each that delivered it \
             (fanout, write; once a connection)",
            stages,
        );
        let chat_batch = Histogram::new(BATCH_BUCKETS);
        registry.register(
            "herd_chat_commit_posts",
            "Posts written by each commit of a room's messages",
            chat_batch.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            auth_failures,
            revoked_sessions,
            chat_stages,
            chat_batch,
        }
    }
}

impl Metrics {
    /// Counts a request under its method, route (see [`Route`]) and status.
    pub fn record_request(&self, method: &Method, route: Route, status: u16, elapsed: Duration) {
        self.latency
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                route,
                status,
            })
            .inc();
    }

    /// Counts a refused credential: `kind` is what was presented (access_token, login,
    /// refresh_token), `reason` why it failed.
    pub fn record_auth_failure(&self, kind: &'static str, reason: &'static str) {
        self.auth_failures
            .get_or_create(&FailureLabels { kind, reason })
            .inc();
    }

    /// One live message spent `took` in `stage` on its way to one connection.
    pub fn record_delivery(&self, stage: DeliveryStage, took: Duration) {
        let index = match stage {
            DeliveryStage::Fanout => 4,
            DeliveryStage::Write => 5,
        };
        self.chat_stages[index].observe(took.as_secs_f64());
    }

    /// The text exposition format (0.0.4), with `revoked_sessions` as the gauge's value.
    pub fn render(&self, revoked_sessions: usize) -> String {
        self.revoked_sessions
            .set(i64::try_from(revoked_sessions).unwrap_or(i64::MAX));
        let mut text = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut text, &self.registry).is_err() {
            return String::new();
        }
        // The OpenMetrics text names a counter family without `_total`; the 0.0.4 format
        // (the content type served) and every dashboard name it with.
        let mut out = String::with_capacity(text.len() + 64);
        for line in text.lines() {
            let counter_header = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
                let rest = line.strip_prefix(prefix)?;
                let (name, tail) = rest.split_once(' ')?;
                COUNTERS.contains(&name).then_some((prefix, name, tail))
            });
            if let Some((prefix, name, tail)) = counter_header {
                let _ = writeln!(out, "{prefix}{name}_total {tail}");
            } else if let Some(bucket) = bucket_as_before(line) {
                out.push_str(&bucket);
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl herd_chat::Timings for Metrics {
    fn stage(&self, stage: herd_chat::Stage, took: Duration) {
        self.chat_stages[stage_index(stage)].observe(took.as_secs_f64());
    }

    fn batch(&self, posts: usize) {
        self.chat_batch.observe(posts as f64);
    }
}

/// A bucket line as herd wrote it before prometheus-client: the route label first, then
/// `le` with the bound written as Rust writes an `f64` (`1`, not `1.0`), so that queries
/// naming a bucket keep matching on any Prometheus version.
fn bucket_as_before(line: &str) -> Option<String> {
    let rest = line.strip_prefix("herd_http_request_duration_seconds_bucket{le=\"")?;
    let (bound, rest) = rest.split_once("\",")?;
    let (labels, value) = rest.split_once("} ")?;
    let bound = match bound {
        "+Inf" => "+Inf".to_owned(),
        b => b.parse::<f64>().ok()?.to_string(),
    };
    Some(format!(
        "herd_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {value}\n"
    ))
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

/// Prometheus metrics of this replica.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4.", body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8")),
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = state.metrics.render(state.auth.revoked_sessions());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format_as_before() {
        let metrics = Metrics::default();
        let method = Method::from_bytes(b"PROBE").expect("a method token");
        metrics.record_request(&method, Route::of(None), 404, Duration::from_millis(2));
        metrics.record_request(&Method::GET, Route::of(None), 404, Duration::from_secs(20));
        metrics.record_auth_failure("access_token", "expired");
        let text = metrics.render(3);
        for line in [
            "# HELP herd_http_requests_total HTTP requests served, by route and status.",
            "# TYPE herd_http_requests_total counter",
            r#"herd_http_requests_total{method="other",route="(unmatched)",status="404"} 1"#,
            r#"herd_http_requests_total{method="GET",route="(unmatched)",status="404"} 1"#,
            "# TYPE herd_http_request_duration_seconds histogram",
            r#"herd_http_request_duration_seconds_bucket{route="(unmatched)",le="0.001"} 0"#,
            r#"herd_http_request_duration_seconds_bucket{route="(unmatched)",le="0.0025"} 1"#,
            r#"herd_http_request_duration_seconds_bucket{route="(unmatched)",le="1"} 1"#,
            r#"herd_http_request_duration_seconds_bucket{route="(unmatched)",le="10"} 1"#,
            r#"herd_http_request_duration_seconds_bucket{route="(unmatched)",le="+Inf"} 2"#,
            r#"herd_http_request_duration_seconds_count{route="(unmatched)"} 2"#,
            "# TYPE herd_auth_failures_total counter",
            r#"herd_auth_failures_total{kind="access_token",reason="expired"} 1"#,
            "# TYPE herd_revoked_sessions gauge",
            "herd_revoked_sessions 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn every_chat_stage_is_a_series_named_as_chat_names_it() {
        use herd_chat::Timings as _;
        let metrics = Metrics::default();
        for stage in herd_chat::Stage::ALL {
            assert_eq!(STAGES[stage_index(stage)], stage.as_str());
            metrics.stage(stage, Duration::from_micros(300));
        }
        metrics.record_delivery(DeliveryStage::Fanout, Duration::from_millis(3));
        metrics.record_delivery(DeliveryStage::Write, Duration::from_secs(20));
        metrics.batch(17);
        let text = metrics.render(0);
        for stage in ["commit_queue", "commit", "announce_queue", "publish"] {
            let line =
                format!(r#"herd_chat_stage_seconds_bucket{{le="0.0005",stage="{stage}"}} 1"#);
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        for line in [
            "# TYPE herd_chat_stage_seconds histogram",
            r#"herd_chat_stage_seconds_bucket{le="0.0025",stage="fanout"} 0"#,
            r#"herd_chat_stage_seconds_bucket{le="0.005",stage="fanout"} 1"#,
            r#"herd_chat_stage_seconds_bucket{le="10.0",stage="write"} 0"#,
            r#"herd_chat_stage_seconds_count{stage="write"} 1"#,
            "# TYPE herd_chat_commit_posts histogram",
            r#"herd_chat_commit_posts_bucket{le="16.0"} 0"#,
            r#"herd_chat_commit_posts_bucket{le="32.0"} 1"#,
            "herd_chat_commit_posts_sum 17.0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
