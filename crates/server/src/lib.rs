//! herd's HTTP application.
//!
//! [`App::build`] is how a replica starts, for the `herd` binary and the tests alike: it
//! opens the store and starts identity, the bus and the [`AppState`] from validated
//! [`Settings`], and binds the listener. [`router`] builds the axum application from an
//! [`AppState`]; [`serve`] runs it on a listener the caller bound (port 0 in tests), with
//! the replica's upkeep task, until a shutdown future resolves, then finishes the
//! requests in flight.
//!
//! Layout: `app.rs` is the start-up above; then one module a feature, each with its own
//! `router()`:
//! - `auth.rs`: signup, login, refresh, logout, `GET /v1/me`.
//! - `account.rs`: what a user controls: their sessions (`/v1/sessions`), their password
//!   and the account (`/v1/account/...`); every revocation it makes goes through
//!   `account::revoke`.
//! - `rooms.rs`: rooms and message history over HTTP (stateless), a thin transport over
//!   [`herd_chat::Chat`].
//! - `chat.rs`: live chat over WebSocket, with gap-free resume on any replica: a
//!   connection is a `Handler` value over the same `Chat`.
//! - `feed.rs`: the revocation feed (a page, and Server-Sent Events) for services that
//!   verify herd's tokens themselves.
//! - `wellknown.rs`: JWKS and the authorization server metadata (RFC 8414).
//! - `oauth.rs`: the standard spellings: the OAuth token endpoint (`refresh_token`
//!   grant), token revocation (RFC 7009) and the Token Status List.
//! - `health.rs`: `/healthz`, `/readyz`, `/metrics`.
//! - `web.rs`: the web page at `/` and the API reference at `/docs/api` (HTML, CSS and
//!   JavaScript embedded from `web/`), served under a Content-Security-Policy that allows
//!   no inline script or style.
//! - `openapi.rs`: the OpenAPI 3.1 description at `/openapi.json`, generated from the
//!   handlers' types and `#[utoipa::path]` attributes.
//! - `extract.rs`: the JSON body reader and the [`Identity`](extract::Identity) extractor.
//! - `listen.rs`: serving connections under the edge's limits (header size and count,
//!   header-read and idle timeouts, idle connections closed when descriptors run out).
//! - `client.rs`: the client's address, from the socket or, behind a trusted proxy, from
//!   `X-Forwarded-For`.
//! - `cookies.rs`: the browser transport: HttpOnly cookies and CSRF protection.
//! - `error.rs`: [`ApiError`](error::ApiError) and the table of problem codes.
//! - `metrics.rs`: the Prometheus registry.
//! - `news.rs`: revocations and key rotations relayed between replicas over the bus.

pub mod account;
pub mod app;
pub mod auth;
pub mod chat;
pub mod client;
pub mod cookies;
pub mod error;
pub mod extract;
pub mod feed;
pub mod health;
pub mod listen;
pub mod metrics;
pub mod news;
pub mod oauth;
pub mod openapi;
pub mod rooms;
pub mod web;
pub mod wellknown;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::header::{CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Router;
use herd_bus::Bus;
use herd_chat::Chat;
use herd_identity::{Auth, Rejection};
use tokio::net::TcpListener;
use tower::{Layer, Service};

use crate::chat::{ChatLimits, ChatState};
use crate::client::TrustedProxies;
use crate::cookies::{CookiePolicy, Cookies};
use crate::error::{ApiError, Code, InternalError};
pub use crate::listen::ConnectionLimits;
use crate::metrics::Metrics;

pub use crate::app::{App, Settings};

/// The header naming the replica that served a response.
pub const REPLICA_HEADER: HeaderName = HeaderName::from_static("x-herd-replica");

/// The Content-Security-Policy of every response that is not the web page: nothing may
/// load, run or frame it.
pub const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// What the HTTP layer needs besides identity.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A stable id for this replica, sent in `x-herd-replica`.
    pub replica_id: String,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// How often the key ring is reloaded and the revocation log tailed.
    pub upkeep_interval: Duration,
    /// Browser cookies and the origins that may send cookie-authenticated writes.
    pub cookies: CookiePolicy,
    /// Limits of live chat.
    pub chat: ChatLimits,
    /// Proxies whose `X-Forwarded-For` names the client (login throttling per address).
    pub trusted_proxies: TrustedProxies,
    /// Header size, header-read and idle timeouts of every client connection.
    pub connections: ConnectionLimits,
    /// How long a revocation waits for every live replica to confirm it before it
    /// answers anyway, naming those that did not (`--confirm-deadline`).
    pub confirm_deadline: Duration,
}

/// Everything a handler can reach, behind one reference count: axum clones the state
/// for every request (its router, each layer's copy of a route, the `State`
/// extractor), and with a count per field those clones and drops were a tenth of a
/// replica's CPU on `GET /v1/me` (docs/benchmarks.md, the profile section).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares; its fields read as the state's own (`state.auth`).
#[derive(Debug, Clone)]
pub struct Shared {
    pub auth: Auth,
    pub replica: Arc<str>,
    pub metrics: Arc<Metrics>,
    replica_header: HeaderValue,
    config: Arc<ServerConfig>,
    bus: Bus,
    /// Peers and their confirmations: how a revocation waits until every live replica
    /// refuses what it revoked.
    confirmations: news::Confirmations,
    /// Rooms and messages: what both chat transports (REST and WebSocket) stand on.
    pub(crate) chat: Chat,
    /// The WebSocket's per-replica state: limits, open connections, shutdown.
    pub(crate) live: Arc<ChatState>,
    /// Set once the replica has been told to stop: `/readyz` fails from then on, so
    /// balancers that check it stop sending requests before the listener closes.
    draining: Arc<AtomicBool>,
    /// The cookie policy with this deployment's public origin and CSRF binding.
    cookies: Arc<Cookies>,
    /// The revocation feed's bound on open streams.
    pub(crate) feed: Arc<feed::FeedState>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Fails when the replica id cannot be sent as a header value.
    pub fn new(auth: Auth, config: ServerConfig) -> Result<AppState, String> {
        let replica_header = HeaderValue::from_str(&config.replica_id).map_err(|_| {
            format!(
                "replica id {:?} is not a valid header value",
                config.replica_id
            )
        })?;
        // Without a bus of its own a replica still delivers live chat to its own
        // connections; a cluster gives it one that reaches the others.
        let bus = Bus::in_process();
        // Identity decides what time it is, for chat's timestamps too.
        let clock = auth.clone();
        let metrics = Arc::<Metrics>::default();
        let chat = Chat::new(auth.store().clone(), bus.clone(), move || clock.now())
            .with_limits(config.chat.chat())
            .with_timings(metrics.clone());
        let cookies = Arc::new(Cookies::new(config.cookies.clone(), auth.clone()));
        let confirmations = news::Confirmations::new(
            auth.clone(),
            bus.clone(),
            &config.replica_id,
            config.confirm_deadline,
        );
        Ok(AppState(Arc::new(Shared {
            confirmations,
            cookies,
            auth,
            replica: config.replica_id.as_str().into(),
            metrics,
            replica_header,
            chat,
            live: Arc::new(ChatState::new(config.chat.clone())),
            config: Arc::new(config),
            bus,
            draining: Arc::default(),
            feed: Arc::default(),
        })))
    }

    /// From now on `/readyz` answers 503: the replica is about to stop. It keeps
    /// serving every other request until its shutdown future resolves.
    pub fn start_draining(&self) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            tracing::info!("draining: /readyz fails from now on");
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Relays identity's news to other replicas over `bus`, and theirs to this one;
    /// chat announces and follows messages over it too.
    pub fn with_bus(self, bus: Bus) -> AppState {
        // Called while starting, before the state is shared: the copy is a fallback.
        let mut shared = Arc::unwrap_or_clone(self.0);
        shared.chat = shared.chat.with_bus(bus.clone());
        shared.confirmations = news::Confirmations::new(
            shared.auth.clone(),
            bus.clone(),
            &shared.config.replica_id,
            shared.config.confirm_deadline,
        );
        shared.bus = bus;
        AppState(Arc::new(shared))
    }

    /// Peers, their confirmations, and
    /// [`revoke_everywhere`](news::Confirmations::revoke_everywhere), the one way a
    /// revocation answers.
    pub fn confirmations(&self) -> &news::Confirmations {
        &self.confirmations
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Open WebSocket connections on this replica.
    pub fn open_connections(&self) -> usize {
        self.live.open_connections()
    }

    /// Waits until at most `n` WebSocket connections are open, their sockets dropped.
    pub async fn until_ws_open_at_most(&self, n: usize) {
        self.live.until_open_at_most(n).await;
    }

    pub fn cookies(&self) -> &Cookies {
        &self.cookies
    }

    pub fn trusted_proxies(&self) -> &TrustedProxies {
        &self.config.trusted_proxies
    }

    /// Records and logs a refused access token, and builds its 401.
    pub(crate) fn reject(&self, rejection: Rejection) -> ApiError {
        self.metrics
            .record_auth_failure("access_token", rejection.reason());
        tracing::info!(reason = rejection.reason(), "access token refused");
        ApiError::invalid_token(rejection)
    }
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(auth::router())
        .merge(account::router())
        .merge(rooms::router())
        .merge(chat::router())
        .merge(wellknown::router())
        .merge(feed::router())
        .merge(oauth::router())
        .merge(health::router())
        .merge(web::router())
        .merge(openapi::router())
        .fallback(|| async { ApiError::new(Code::NotFound, "there is no route at this path") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "this path does not take that method",
            )
        })
        .layer(ObserveLayer(Arc::new(Edge {
            metrics: state.metrics.clone(),
            replica_header: state.replica_header.clone(),
            body_limit: state.config.body_limit,
            body_deadline: state.config.connections.header_read_timeout,
        })))
        .with_state(state)
}

/// What [`Observe`] needs of the state.
#[derive(Debug)]
struct Edge {
    metrics: Arc<Metrics>,
    replica_header: HeaderValue,
    body_limit: usize,
    body_deadline: Duration,
}

/// Wraps every route in [`Observe`], which calls it through axum's `DefaultBodyLimit` at
/// the body limit when the request may carry a body. One layer, not three (the body
/// limit, this, and tower-http's `CatchPanicLayer`): each layer `Router::layer` adds wraps
/// every route in another boxed `Route`, cloned, boxed and driven once more on every
/// request.
#[derive(Debug, Clone)]
struct ObserveLayer(Arc<Edge>);

impl<S: Clone> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            limited: DefaultBodyLimit::max(self.0.body_limit).layer(inner.clone()),
            inner,
            edge: self.0.clone(),
        }
    }
}

/// Around every request: the replica header, the security headers, metrics, the one
/// log line for an unexpected error, the declared body read before routing
/// (`listen::read_declared_body`), and a handler's panic answered with an opaque 500
/// (and logged as one) rather than a dropped connection. A service of its own rather than
/// `middleware::from_fn`, which clones the route it wraps and boxes a second future on
/// every request: a request without a body to read calls the route it was made ready
/// for, with one future allocated.
#[derive(Debug, Clone)]
struct Observe<S> {
    /// The route as it is, for a request that carries no body.
    inner: S,
    /// The route under the body limit, for every other request.
    limited: <DefaultBodyLimit as Layer<S>>::Service,
    edge: Arc<Edge>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        std::task::ready!(self.inner.poll_ready(cx))?;
        self.limited.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let method = request.method().clone();
        // The matched pattern's clone is a reference count: nothing is allocated per request.
        let route = metrics::Route::of(request.extensions().get::<MatchedPath>());
        let edge = self.edge.clone();
        if listen::has_no_body(&request) {
            // Nothing for the limit to bound: its extension (the fourth of the request's,
            // which grew the map) is left out.
            let answer = self.inner.call(request);
            return Box::pin(async move {
                let response = unless_it_panics(answer).await;
                Ok(finish(&edge, &method, route, started, response))
            });
        }
        if !listen::has_declared_body(edge.body_limit, &request) {
            let answer = self.limited.call(request);
            return Box::pin(async move {
                let response = unless_it_panics(answer).await;
                Ok(finish(&edge, &method, route, started, response))
            });
        }
        // The body is read first: the route made ready goes with the future, a fresh
        // clone stays for the next call's `poll_ready`.
        let fresh = self.limited.clone();
        let mut ready = std::mem::replace(&mut self.limited, fresh);
        Box::pin(async move {
            let response = match listen::read_declared_body(
                edge.body_limit,
                edge.body_deadline,
                request,
            )
            .await
            {
                Ok(request) => unless_it_panics(ready.call(request)).await,
                Err(refused) => refused,
            };
            Ok(finish(&edge, &method, route, started, response))
        })
    }
}

/// The response `answer` resolves to, or a 500 if polling it panicked: the panic is
/// the handler's, and the connection and the replica carry on.
async fn unless_it_panics(answer: impl Future<Output = Result<Response, Infallible>>) -> Response {
    let mut answer = std::pin::pin!(answer);
    std::future::poll_fn(|cx| {
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| answer.as_mut().poll(cx)));
        match polled {
            Ok(Poll::Ready(Ok(response))) => Poll::Ready(response),
            Ok(Poll::Ready(Err(never))) => match never {},
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(ApiError::internal("a handler panicked").into_response()),
        }
    })
    .await
}

/// What [`Observe`] does to every response, and records of it.
fn finish(
    edge: &Edge,
    method: &Method,
    route: metrics::Route,
    started: Instant,
    mut response: Response,
) -> Response {
    let status = response.status();
    if let Some(InternalError(error)) = response.extensions_mut().remove::<InternalError>() {
        if status.is_server_error() && status != axum::http::StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(%method, route = route.as_str(), %error, "request failed");
        } else {
            tracing::warn!(%method, route = route.as_str(), %error, "dependency unavailable");
        }
    }
    let headers = response.headers_mut();
    headers.reserve(4);
    headers.insert(REPLICA_HEADER, edge.replica_header.clone());
    // Every response, not only the page's, is kept from being sniffed into HTML, framed,
    // or rendered with active content: a JSON body opened as a document runs nothing.
    // The page's own files set their stricter-where-it-matters values first (web.rs).
    headers
        .entry(X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    headers
        .entry(CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(API_POLICY));
    headers
        .entry(REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    let elapsed = started.elapsed();
    tracing::debug!(%method, route = route.as_str(), status = status.as_u16(), elapsed_us = elapsed.as_micros() as u64, "served");
    edge.metrics
        .record_request(method, route, status.as_u16(), elapsed);
    response
}

/// Serves `state` on `listener` until `shutdown` resolves, then lets the requests in
/// flight finish. Runs the replica's upkeep (key-ring reload, revocation tail) meanwhile.
/// Every connection lives under `ServerConfig::connections` (see [`listen`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(upkeep(state.auth.clone(), state.config.upkeep_interval));
    let confirmations = state.confirmations.clone();
    news::relay(confirmations.clone(), &mut tasks).await;
    let live = state.live.clone();
    let shutdown = async move {
        shutdown.await;
        // WebSockets are not requests axum waits for: tell them to move elsewhere (1012)
        // once their in-flight send is acknowledged, and give them a moment to.
        live.close_all(Duration::from_secs(10)).await;
    };
    let limits = state.config.connections;
    let served = listen::run(listener, router(state), limits, shutdown).await;
    // Peers stop waiting for this replica's confirmations at once, not LIVE_FOR later.
    if let Err(e) = confirmations.announce(true).await {
        tracing::debug!(error = %e, "could not tell peers this replica is leaving");
    }
    tasks.shutdown().await;
    served
}

async fn upkeep(auth: Auth, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = auth.maintain().await {
            tracing::warn!(error = %e, "upkeep failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    fn observed(router: Router) -> Router {
        router.layer(ObserveLayer(Arc::new(Edge {
            metrics: Arc::default(),
            replica_header: HeaderValue::from_static("r1"),
            body_limit: 1024,
            body_deadline: Duration::from_secs(1),
        })))
    }

    #[tokio::test]
    async fn a_handler_that_panics_is_an_opaque_500_with_the_edge_headers() {
        let app = observed(Router::new().route(
            "/boom",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("a handler's bug");
                }
                "unreachable"
            }),
        ));
        let request = Request::builder()
            .uri("/boom")
            .body(Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[&REPLICA_HEADER], "r1");
        assert_eq!(response.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("a handler's bug"),
            "the panic stays in the log: {text}"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_by_the_one_layer() {
        let app = observed(Router::new().route(
            "/echo",
            axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        ));
        let status = |framing: Option<(&'static str, &'static str)>, version, size| {
            let mut request = Request::post("/echo").version(version);
            if let Some((name, value)) = framing {
                request = request.header(name, value);
            }
            let request = request.body(Body::from(vec![b'x'; size])).expect("request");
            let app = app.clone();
            async move { app.oneshot(request).await.expect("infallible").status() }
        };
        let http1 = axum::http::Version::HTTP_11;
        // As hyper hands them over: a body comes with the header that frames it.
        let small = status(Some(("content-length", "1000")), http1, 1000).await;
        assert_eq!(small, StatusCode::OK);
        let large = status(Some(("content-length", "2000")), http1, 2000).await;
        assert_eq!(large, StatusCode::PAYLOAD_TOO_LARGE);
        let chunked = status(Some(("transfer-encoding", "chunked")), http1, 2000).await;
        assert_eq!(chunked, StatusCode::PAYLOAD_TOO_LARGE);
        // HTTP/2 frames a body without either header.
        let h2 = status(None, axum::http::Version::HTTP_2, 2000).await;
        assert_eq!(h2, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
