//! The web page at `/`: served with its security headers, and written so that a
//! Content-Security-Policy without 'unsafe-inline' costs it nothing.

use std::collections::BTreeSet;

use reqwest::{Response, StatusCode};

use crate::helpers::spawn_app;

const POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("header text")
}

async fn text_of(path: &str) -> String {
    let app = spawn_app().await;
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.text().await.expect("body")
}

/// Every tag of an HTML document: its lower-cased name and attribute names.
fn tags(html: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let end = rest.find('>').expect("every tag is closed");
        let inside = &rest[..end];
        rest = &rest[end + 1..];
        if inside.starts_with('!') || inside.starts_with('/') {
            continue;
        }
        // Drop the quoted values; what is left is the name and the attribute names.
        let unquoted: String = inside.split('"').step_by(2).collect::<Vec<_>>().join(" ");
        let mut words = unquoted.split_whitespace();
        let name = words.next().unwrap_or("").to_ascii_lowercase();
        let attributes = words
            .map(|w| w.split('=').next().unwrap_or("").to_ascii_lowercase())
            .filter(|a| !a.is_empty())
            .collect();
        found.push((name, attributes));
    }
    found
}

#[tokio::test]
async fn the_page_is_html_under_a_strict_content_security_policy() {
    let app = spawn_app().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type"),
        "text/html; charset=utf-8"
    );
    assert_eq!(header(&response, "content-security-policy"), POLICY);
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(header(&response, "referrer-policy"), "no-referrer");
    assert_eq!(header(&response, "cache-control"), "no-cache");
    assert_eq!(header(&response, "x-herd-replica"), "test-a");
    let html = response.text().await.expect("body");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains(r#"<script src="/app.js" defer></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="/style.css">"#));
}

#[tokio::test]
async fn the_script_and_the_stylesheet_are_served_with_their_types() {
    let app = spawn_app().await;
    for (path, content_type) in [
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&response, "content-type"), content_type, "{path}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header(&response, "content-security-policy"), POLICY);
        assert_eq!(header(&response, "cache-control"), "no-cache");
        assert!(!response.text().await.expect("body").is_empty());
    }
}

#[tokio::test]
async fn an_unchanged_file_is_revalidated_with_a_304() {
    let app = spawn_app().await;
    let first = app.get("/app.js").await;
    let etag = header(&first, "etag").to_owned();
    let again = app
        .client
        .get(app.url("/app.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&again, "etag"), etag);
    assert!(again.bytes().await.expect("body").is_empty());
    let stale = app
        .client
        .get(app.url("/app.js"))
        .header("if-none-match", "\"an-older-build\"")
        .send()
        .await
        .expect("request");
    assert_eq!(stale.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_page_has_no_inline_script_style_or_handler() {
    let html = text_of("/").await;
    let tags = tags(&html);
    assert!(
        tags.iter().any(|(name, _)| name == "form"),
        "the scanner sees tags"
    );
    for (name, attributes) in &tags {
        assert_ne!(name, "style", "a <style> element");
        if name == "script" {
            assert!(
                attributes.iter().any(|a| a == "src"),
                "a <script> without src"
            );
        }
        for attribute in attributes {
            assert_ne!(attribute, "style", "a style= attribute on <{name}>");
            assert!(
                !attribute.starts_with("on"),
                "an inline handler {attribute}= on <{name}>"
            );
        }
    }
    assert!(!html.to_ascii_lowercase().contains("javascript:"));
}

#[tokio::test]
async fn the_script_builds_no_markup_from_strings_and_evaluates_none() {
    let js = text_of("/app.js").await;
    for banned in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        ".style.",
    ] {
        assert!(!js.contains(banned), "app.js uses {banned}");
    }
}

/// Regression guard for the browser test's selectors: every id the script looks up with
/// `$('...')` is in the page.
#[tokio::test]
async fn every_element_the_script_looks_up_is_in_the_page() {
    let app = spawn_app().await;
    let html = app.get("/").await.text().await.expect("html");
    let js = app.get("/app.js").await.text().await.expect("js");
    let ids: BTreeSet<&str> = js
        .split("$('")
        .skip(1)
        .filter_map(|rest| rest.split_once("')").map(|(id, _)| id))
        .collect();
    assert!(ids.len() > 20, "found only {ids:?}");
    let missing: Vec<&str> = ids
        .into_iter()
        .filter(|id| !html.contains(&format!("id=\"{id}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "ids used by app.js but not in index.html: {missing:?}"
    );
}

/// The page's security headers, on every file of the page and on its 304s (a browser
/// revalidates the cached files on every visit): a policy with no inline script or style
/// and no framing, no sniffing, no referrer.
#[tokio::test]
async fn every_page_response_carries_every_security_header() {
    let app = spawn_app().await;
    for path in ["/", "/app.js", "/style.css"] {
        let first = app.get(path).await;
        let etag = header(&first, "etag").to_owned();
        let revalidated = app
            .client
            .get(app.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("request");
        assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED, "{path}");
        for response in [&first, &revalidated] {
            let policy = header(response, "content-security-policy");
            assert_eq!(policy, POLICY, "{path}");
            assert!(!policy.contains("unsafe-inline"), "{path}: {policy}");
            assert!(!policy.contains("unsafe-eval"), "{path}: {policy}");
            assert!(
                policy.contains("frame-ancestors 'none'"),
                "{path}: {policy}"
            );
            assert_eq!(header(response, "x-content-type-options"), "nosniff");
            assert_eq!(header(response, "referrer-policy"), "no-referrer");
            assert_eq!(header(response, "x-frame-options"), "DENY");
        }
    }
}

/// An API answer opened as a document (a problem, a JSON body, the metrics) can be
/// neither sniffed into HTML, nor framed, nor run anything.
#[tokio::test]
async fn api_responses_are_not_sniffed_framed_or_active() {
    let app = spawn_app().await;
    let tokens = app.user("alice").await;
    let login = app
        .post_json(
            "/v1/auth/login",
            serde_json::json!({ "username": "alice", "password": crate::helpers::PASSWORD }),
        )
        .await;
    let responses = [
        ("login", login),
        ("me", app.me(&tokens.access).await),
        ("bad token", app.me("not-a-token").await),
        ("no route", app.get("/nowhere").await),
        ("jwks", app.get("/.well-known/jwks.json").await),
        ("healthz", app.get("/healthz").await),
        ("metrics", app.get("/metrics").await),
    ];
    for (what, response) in &responses {
        assert_eq!(
            header(response, "x-content-type-options"),
            "nosniff",
            "{what}"
        );
        assert_eq!(
            header(response, "content-security-policy"),
            herd_server::API_POLICY,
            "{what}"
        );
        assert_eq!(header(response, "referrer-policy"), "no-referrer", "{what}");
    }
    assert_eq!(
        header(&responses[0].1, "cache-control"),
        "no-store",
        "tokens are never cached"
    );
}

/// Browsers ask for `/favicon.ico` on their own: an embedded icon answers, not a 404
/// in every developer console, and the page names it so nothing else is asked for.
#[tokio::test]
async fn the_favicon_is_served_from_the_binary() {
    let app = spawn_app().await;
    let response = app.get("/favicon.ico").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), "image/x-icon");
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    let icon = response.bytes().await.expect("body");
    assert_eq!(&icon[..4], &[0, 0, 1, 0], "an ICO header");
    let html = text_of("/").await;
    assert!(html.contains(r#"<link rel="icon" href="/favicon.ico">"#));
}
