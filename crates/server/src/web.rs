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
    body: &'static [u8],
    etag: HeaderValue,
}

impl Asset {
    fn new(content_type: &'static str, body: &'static str) -> Asset {
        Asset::binary(content_type, body.as_bytes())
    }

    fn binary(content_type: &'static str, body: &'static [u8]) -> Asset {
        // FNV-1a is enough to tell builds apart; nobody gains by forging a collision.
        let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
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

// Browsers ask for /favicon.ico on their own; an icon in the binary answers them rather
// than a 404 in every developer console (and nothing is fetched from a CDN).
static FAVICON: LazyLock<Asset> =
    LazyLock::new(|| Asset::binary("image/x-icon", include_bytes!("../web/favicon.ico")));

static API_HTML: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("text/html; charset=utf-8", include_str!("../web/api.html")));
static API_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/javascript; charset=utf-8",
        include_str!("../web/api.js"),
    )
});
static API_CSS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("text/css; charset=utf-8", include_str!("../web/api.css")));

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/favicon.ico", get(favicon))
        .route("/docs/api", get(api_reference))
        .route("/docs/api.js", get(api_reference_js))
        .route("/docs/api.css", get(api_reference_css))
}

/// The web page: sign up, log in, rooms, live chat.
#[utoipa::path(get, path = "/", tag = "web", responses(
    (status = 200, description = "The page.", content_type = "text/html; charset=utf-8", body = String),
    (status = 304, description = "Unchanged since the `ETag` in `If-None-Match`."),
))]
async fn index(h: HeaderMap) -> Response {
    INDEX.respond(&h)
}

/// The web page's script.
#[utoipa::path(get, path = "/app.js", tag = "web", responses(
    (status = 200, description = "The script.", content_type = "text/javascript; charset=utf-8", body = String),
    (status = 304, description = "Unchanged since the `ETag` in `If-None-Match`."),
))]
async fn app_js(h: HeaderMap) -> Response {
    APP_JS.respond(&h)
}

/// The web page's style sheet.
#[utoipa::path(get, path = "/style.css", tag = "web", responses(
    (status = 200, description = "The style sheet.", content_type = "text/css; charset=utf-8", body = String),
    (status = 304, description = "Unchanged since the `ETag` in `If-None-Match`."),
))]
async fn style_css(h: HeaderMap) -> Response {
    STYLE.respond(&h)
}

/// The page's icon.
#[utoipa::path(get, path = "/favicon.ico", tag = "web", responses(
    (status = 200, description = "The icon.", content_type = "image/x-icon", body = Vec<u8>),
    (status = 304, description = "Unchanged since the `ETag` in `If-None-Match`."),
))]
async fn favicon(h: HeaderMap) -> Response {
    FAVICON.respond(&h)
}

/// This API's reference, rendered in the browser from `/openapi.json` by a small
/// embedded script (nothing fetched from elsewhere).
#[utoipa::path(get, path = "/docs/api", tag = "web", responses(
    (status = 200, description = "The reference page.", content_type = "text/html; charset=utf-8", body = String),
    (status = 304, description = "Unchanged since the `ETag` in `If-None-Match`."),
))]
async fn api_reference(h: HeaderMap) -> Response {
    API_HTML.respond(&h)
}

/// The reference page's script.
#[utoipa::path(get, path = "/docs/api.js", tag = "web", responses(
    (status = 200, description = "The script.", content_type = "text/javascript; charset=utf-8", body = String),
    (status = 304, description = "Unchanged since the `ETag` in `If-None-Match`."),
))]
async fn api_reference_js(h: HeaderMap) -> Response {
    API_JS.respond(&h)
}

/// The reference page's style sheet.
#[utoipa::path(get, path = "/docs/api.css", tag = "web", responses(
    (status = 200, description = "The style sheet.", content_type = "text/css; charset=utf-8", body = String),
    (status = 304, description = "Unchanged since the `ETag` in `If-None-Match`."),
))]
async fn api_reference_css(h: HeaderMap) -> Response {
    API_CSS.respond(&h)
}
