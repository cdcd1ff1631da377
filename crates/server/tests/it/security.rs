//! Attacks on what `docs/security.md` promises, each test named after what it attacks.
//! The login lockout has its own module (`lockout.rs`).

use reqwest::{Method, StatusCode};

use crate::helpers::spawn_app;

/// Counts the series of a metric family in `/metrics`' text.
fn series(text: &str, name: &str) -> usize {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .count()
}

#[tokio::test]
async fn made_up_http_methods_add_no_metric_series() {
    let app = spawn_app().await;
    let before = series(&app.metrics().await, "herd_http_requests_total");
    for i in 0..300 {
        let method = Method::from_bytes(format!("PROBE{i}").as_bytes()).expect("a method token");
        let response = app
            .client
            .request(method, app.url(&format!("/made/up/path/{i}")))
            .send()
            .await
            .expect("request");
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let text = app.metrics().await;
    assert!(!text.contains("PROBE"), "no client-chosen method in a label");
    assert!(!text.contains("/made/up"), "no client-chosen path in a label");
    // The first `/metrics` request adds its own series, and the probes one `other`
    // series per status they got: a handful, whatever their number.
    let after = series(&text, "herd_http_requests_total");
    assert!(after <= before + 3, "{before} -> {after} series:\n{text}");
    assert!(
        text.contains(r#"method="other",route="(unmatched)""#),
        "{text}"
    );
}
