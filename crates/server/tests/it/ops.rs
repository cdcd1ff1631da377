//! Health, readiness, metrics, and graceful shutdown.

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{assert_problem, metric, spawn_app, PASSWORD};

#[tokio::test]
async fn healthz_and_readyz_answer_while_the_store_is_up() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-herd-replica"], "test-a");
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn readyz_fails_and_store_work_is_a_503_when_the_store_is_gone() {
    let app = spawn_app().await;
    let tokens = app.user("alice").await;
    app.auth.store().close().await;
    assert_problem(
        app.get("/readyz").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
    let response = app.signup("bob", PASSWORD).await;
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    // Verifying a token needs no store at all.
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_with_latency() {
    let app = spawn_app().await;
    let tokens = app.user("carol").await;
    for _ in 0..3 {
        app.me(&tokens.access).await;
    }
    app.me("nope").await;
    let response = app.get("/metrics").await;
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    let text = response.text().await.expect("text");
    assert_eq!(
        metric(
            &text,
            r#"herd_http_requests_total{method="GET",route="/v1/me",status="200"}"#
        ),
        3
    );
    assert_eq!(
        metric(
            &text,
            r#"herd_http_requests_total{method="GET",route="/v1/me",status="401"}"#
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            r#"herd_http_request_duration_seconds_count{route="/v1/me"}"#
        ),
        4
    );
    assert_eq!(
        metric(
            &text,
            r#"herd_http_request_duration_seconds_bucket{route="/v1/me",le="+Inf"}"#
        ),
        4
    );
    assert!(!text.contains(&tokens.access), "no token in metrics");
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight() {
    let mut app = spawn_app().await;
    app.user("dave").await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let body = format!(r#"{{"username":"dave","password":"{PASSWORD}"}}"#);
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/auth/login HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    // The server answers 100 Continue only once the handler starts reading the body:
    // from then on the request is in flight.
    let mut buf = vec![0u8; 1024];
    let n = stream.read(&mut buf).await.expect("read 100");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    app.trigger_shutdown();
    stream.write_all(body.as_bytes()).await.expect("write body");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("access_token"));
    app.stop().await.expect("server stopped cleanly");
}

/// The series `/metrics` answered before metrics went through prometheus-client, written
/// down from main before the change: every sample's name with its label names, and
/// every family's type. Dashboards and alerts depend on exactly these. Added since, not
/// changed: `herd_live_peers` (the replicas a revocation waits for), and chat's stage
/// timings `herd_chat_stage_seconds` and posts per commit `herd_chat_commit_posts`
/// (docs/benchmarks.md, "Where the time goes").
const SERIES_BEFORE: &[(&str, &[&str])] = &[
    ("herd_auth_failures_total", &["kind", "reason"]),
    ("herd_chat_commit_posts_bucket", &["le"]),
    ("herd_chat_commit_posts_count", &[]),
    ("herd_chat_commit_posts_sum", &[]),
    ("herd_chat_stage_seconds_bucket", &["le", "stage"]),
    ("herd_chat_stage_seconds_count", &["stage"]),
    ("herd_chat_stage_seconds_sum", &["stage"]),
    (
        "herd_http_request_duration_seconds_bucket",
        &["le", "route"],
    ),
    ("herd_http_request_duration_seconds_count", &["route"]),
    ("herd_http_request_duration_seconds_sum", &["route"]),
    ("herd_http_requests_total", &["method", "route", "status"]),
    ("herd_live_peers", &[]),
    ("herd_revoked_sessions", &[]),
];
const TYPES_BEFORE: &[(&str, &str)] = &[
    ("herd_auth_failures_total", "counter"),
    ("herd_chat_commit_posts", "histogram"),
    ("herd_chat_stage_seconds", "histogram"),
    ("herd_http_request_duration_seconds", "histogram"),
    ("herd_http_requests_total", "counter"),
    ("herd_live_peers", "gauge"),
    ("herd_revoked_sessions", "gauge"),
];

#[tokio::test]
async fn metrics_answer_the_same_series_names_labels_and_types_as_before() {
    use std::collections::BTreeSet;
    let app = spawn_app().await;
    let tokens = app.user("erin").await;
    app.me(&tokens.access).await;
    app.me("nope").await;
    let text = app.metrics().await;
    let mut series = BTreeSet::new();
    let mut types = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert((name.to_owned(), kind.to_owned()));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, labels) = match line.split_once('{') {
            Some((name, rest)) => {
                let labels = rest.rsplit_once('}').expect("closing brace").0;
                let names: Vec<String> = labels
                    .split("\",")
                    .filter(|l| !l.is_empty())
                    .map(|l| l.split_once('=').expect("name=value").0.to_owned())
                    .collect();
                (name.to_owned(), names)
            }
            None => (
                line.split_once(' ').expect("name value").0.to_owned(),
                vec![],
            ),
        };
        let mut labels = labels;
        labels.sort();
        series.insert((name, labels));
    }
    let expected: BTreeSet<(String, Vec<String>)> = SERIES_BEFORE
        .iter()
        .map(|(name, labels)| {
            (
                (*name).to_owned(),
                labels.iter().map(|l| (*l).to_owned()).collect(),
            )
        })
        .collect();
    assert_eq!(series, expected, "{text}");
    let expected: BTreeSet<(String, String)> = TYPES_BEFORE
        .iter()
        .map(|(n, k)| ((*n).to_owned(), (*k).to_owned()))
        .collect();
    assert_eq!(types, expected, "{text}");
}
