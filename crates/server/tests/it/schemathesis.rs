//! schemathesis, an API fuzzer that knows nothing of herd but /openapi.json, against a
//! live replica: every operation, the stateful links (signup -> login, room -> join,
//! send, history), all checks. It fails on any 5xx, any response that breaks its schema,
//! any undocumented status or content type.

use std::process::Command;

use serde_json::json;

use crate::helpers::{spawn_app, PASSWORD};

fn run(st: &str, base: &str, token: &str, filter: &[&str]) {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/schemathesis.toml");
    let output = Command::new(st)
        .args(["--config-file", config])
        .args(["run", &format!("{base}/openapi.json"), "--checks", "all"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        // Bounded so the run takes a minute or two on CI; the seed varies between runs.
        .args(["--max-examples", "30", "--workers", "2", "--no-color"])
        .args(filter)
        .output()
        .unwrap_or_else(|e| panic!("could not run {st}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs schemathesis: set HERD_TEST_SCHEMATHESIS"]
async fn schemathesis_finds_no_5xx_no_schema_break_and_no_undocumented_status() {
    let st = std::env::var("HERD_TEST_SCHEMATHESIS")
        .expect("HERD_TEST_SCHEMATHESIS must name schemathesis's `st` executable");
    let app = spawn_app().await;
    let signup = app.signup("fuzzer", PASSWORD).await;
    assert_eq!(signup.status(), 201);
    let token = app.login("fuzzer").await.access;
    // The room the fuzzer's token is a member of, so message operations get past 403.
    app.post_authed(&token, "/v1/rooms", json!({"name": "fuzz"}))
        .await;
    let base = app.base.clone();
    let token2 = token.clone();
    // Logout, ending every session (`DELETE /v1/sessions`) and deleting the account end
    // the session the token belongs to, so they run last, on their own; the WebSocket
    // path is not HTTP past the upgrade (tests/it/ws.rs and protocol.rs), and the
    // revocation stream is an answer that never ends (tests/it/feed.rs).
    tokio::task::spawn_blocking(move || {
        run(
            &st,
            &base,
            &token2,
            &[
                "--exclude-path",
                "/v1/auth/logout",
                "--exclude-path",
                "/v1/sessions",
                "--exclude-path",
                "/v1/account/delete",
                "--exclude-path",
                "/v1/ws",
                "--exclude-path",
                "/v1/revocations/stream",
            ],
        );
        run(
            &st,
            &base,
            &token2,
            &[
                "--include-path",
                "/v1/auth/logout",
                "--include-path",
                "/v1/sessions",
                "--include-path",
                "/v1/account/delete",
                "--phases",
                "examples,coverage,fuzzing",
            ],
        );
    })
    .await
    .expect("schemathesis runs");
}
