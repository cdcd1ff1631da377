//! The web page every replica serves at `/`: plain HTML, CSS and JavaScript compiled into
//! the binary (no build step, nothing fetched from elsewhere), so any replica can serve it
//! and a redeploy ships it with the code.
//!
//! The page has no inline script or style, which lets it be served under a
//! Content-Security-Policy without `'unsafe-inline'`: an injected `<script>` or `on...=`
//! attribute does not run. It is revalidated on every load (`no-cache` with an `ETag`),
//! so a new build takes effect at once and an unchanged one costs a 304.

use std::sync::LazyLock;

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

/// What the page may load and where it may connect: only its own origin, plus WebSockets
/// to it (`'self'` does not cover `ws:` in every browser). Frames and `<base>` are refused.
pub const POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// One embedded file and its validator.
struct Asset {
    content_type: &'static str,
    body: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(content_type: &'static str, body: &'static str) -> Asset {
        // FNV-1a is enough to tell builds apart; nobody gains by forging a collision.
        let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let etag = HeaderValue::from_str(&format!("\"{hash:016x}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        Asset {
            content_type,
            body,
            etag,
        }
    }

    fn respond(&self, request: &HeaderMap) -> Response {
        let headers = [
            (CONTENT_TYPE, HeaderValue::from_static(self.content_type)),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (ETAG, self.etag.clone()),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            // For browsers that predate frame-ancestors.
            (X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ];
        let unchanged = request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| tag.trim() == self.etag || tag.trim() == "*");
        if unchanged {
            (StatusCode::NOT_MODIFIED, headers).into_response()
        } else {
            (headers, self.body).into_response()
        }
    }
}

static INDEX: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    )
});
static APP_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/javascript; charset=utf-8",
        include_str!("../web/app.js"),
    )
});
static STYLE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("text/css; charset=utf-8", include_str!("../web/style.css")));

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { INDEX.respond(&h) }))
        .route(
            "/app.js",
            get(|h: HeaderMap| async move { APP_JS.respond(&h) }),
        )
        .route(
            "/style.css",
            get(|h: HeaderMap| async move { STYLE.respond(&h) }),
        )
}
