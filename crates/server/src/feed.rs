//! The revocation feed: what services that verify herd's tokens themselves (from the
//! JWKS, with `herd-verify` or any JOSE library) need to refuse a logged-out session or
//! a withdrawn key within a second, with no call to herd per request.
//!
//! Two views of the store's revocation log (ids commit in order, so a cursor misses
//! nothing):
//! - `GET /v1/revocations?after=ID&limit=N`: a page, for catch-up; with no cursor it
//!   lists every revocation still in force.
//! - `GET /v1/revocations/stream`: Server-Sent Events, resumable with `Last-Event-ID`
//!   (or `?after=ID`): the revocations in force after the cursor, a `caught_up` event,
//!   then each new one as it is logged, with a comment every [`KEEP_ALIVE`] so that no
//!   idle timeout in between (the replica's own, a proxy's) closes a quiet stream.
//!
//! A cursor that is not a decimal id answers 400 `invalid-cursor`; one from before the
//! oldest line still kept (lines are pruned once their tokens have expired) or past the
//! newest answers 410 `cursor-expired`, and the client starts again with no cursor.
//! A stream is a task writing into a queue of [`QUEUE`] events: the backlog waits for room
//! (up to [`WRITE_TIMEOUT`]), a live event that finds the queue full ends the stream, as a
//! live chat message does a WebSocket's (the client resumes with `Last-Event-ID`).
//!
//! The feed is public: see `docs/security.md` for why a revoked session id discloses
//! nothing. Open streams are bounded per replica ([`MAX_STREAMS`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use herd_store::{Revocation, KEY_SUBJECT_PREFIX};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, Code, FieldError, Problem};
use crate::AppState;

/// Events a stream may have queued for a reader that is not reading.
pub const QUEUE: usize = 64;
/// How long a backlog event may wait for room in the queue before the stream ends.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a quiet stream sends a comment (and reads the log, in case a wake-up was
/// missed), at most: well under the 60 s idle timeouts of nginx and the development
/// balancer, and a third of the replica's own `--idle-timeout` when that is shorter.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Streams one replica serves at once.
pub const MAX_STREAMS: usize = 256;
/// The page size when a request names none, and the largest it may name.
pub const DEFAULT_LIMIT: i64 = 500;
pub const MAX_LIMIT: i64 = 1000;

/// The feed's per-replica state: the bound on open streams.
#[derive(Debug)]
pub struct FeedState {
    streams: Arc<Semaphore>,
}

impl Default for FeedState {
    fn default() -> Self {
        FeedState {
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/revocations", get(page))
        .route("/v1/revocations/stream", get(stream))
}

/// What a revocation is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A login session (logout, refresh-token reuse, an administrator): refuse every
    /// token whose `sid` is the subject.
    Session,
    /// A signing key withdrawn at once (`herd keys revoke`): refuse every token whose
    /// header `kid` is the subject, and drop it from a cached JWKS.
    Key,
}

/// One revocation still in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevocationEntry {
    /// Its place in the log: the cursor to resume after it.
    pub id: i64,
    pub kind: Kind,
    /// The session id (`sid`) or key id (`kid`).
    pub subject: String,
    /// Unix seconds after which no token it refuses can pass anyway (its `exp` plus the
    /// leeway): a verifier may forget it then.
    pub expires_at: i64,
}

impl From<Revocation> for RevocationEntry {
    fn from(line: Revocation) -> RevocationEntry {
        let (kind, subject) = match line.session_id.strip_prefix(KEY_SUBJECT_PREFIX) {
            Some(kid) => (Kind::Key, kid.to_owned()),
            None => (Kind::Session, line.session_id),
        };
        RevocationEntry {
            id: line.id,
            kind,
            subject,
            expires_at: line.expires_at,
        }
    }
}

/// A page of the revocations in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevocationPage {
    pub revocations: Vec<RevocationEntry>,
    /// The cursor for the next page, or for the stream once `more` is false.
    pub next: i64,
    /// Whether more revocations follow `next` already.
    pub more: bool,
}

/// The cursor and page size of a request.
#[derive(Debug, Clone, Copy, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The id of the last revocation seen; absent (or 0) for every revocation in force.
    #[param(minimum = 0, maximum = 999_999_999_999_999_999_i64)]
    after: Option<i64>,
    /// At most this many revocations, 1 to 1000 (500 by default).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

impl FeedQuery {
    fn read(query: &str) -> Result<FeedQuery, ApiError> {
        let mut read = FeedQuery {
            after: None,
            limit: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "after" => read.after = Some(parse_cursor(value)?),
                "limit" => {
                    let limit = value.parse::<i64>().ok().filter(|n| {
                        (1..=MAX_LIMIT).contains(n) && value.bytes().all(|b| b.is_ascii_digit())
                    });
                    let Some(limit) = limit else {
                        return Err(ApiError::validation(vec![FieldError {
                            field: "limit".into(),
                            message: format!("a whole number from 1 to {MAX_LIMIT}"),
                        }]));
                    };
                    read.limit = Some(limit);
                }
                _ => {}
            }
        }
        Ok(read)
    }
}

/// A cursor is the decimal id of a revocation, as the feed gave it.
pub fn parse_cursor(text: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::new(
            Code::InvalidCursor,
            "a cursor is the decimal id of a revocation this feed sent (`after` or \
             `Last-Event-ID`); leave it out to list every revocation in force",
        ));
    }
    text.parse()
        .map_err(|_| ApiError::new(Code::InvalidCursor, "the cursor is not a revocation id"))
}

/// Where to start reading after `after`, and the newest id logged so far; 410 when the
/// log no longer holds what follows `after`.
async fn start(state: &AppState, after: Option<i64>) -> ApiResult<(i64, i64)> {
    let (oldest, newest) = state.auth.revocation_bounds().await?;
    let after = after.unwrap_or(0);
    // Lines are pruned oldest first once their tokens have expired. A cursor before the
    // oldest line kept may have missed lines since pruned; one past the newest was not
    // given by this log (the database was replaced). Either way, start again. A false
    // alarm (ids skipped by a rolled-back insert) only costs the client a full catch-up.
    let pruned = oldest.is_some_and(|oldest| after > 0 && after < oldest - 1);
    if pruned || after > newest {
        return Err(ApiError::new(
            Code::CursorExpired,
            "this cursor is older than the revocations herd keeps (or was not given by \
             this herd): list again with no cursor, which returns every revocation still \
             in force, replace what you hold with it, and resume from its `next`",
        ));
    }
    Ok((after, newest))
}

/// A page of the revocations still in force, oldest first: the feed's catch-up.
#[utoipa::path(get, path = "/v1/revocations", tag = "discovery",
    params(FeedQuery),
    responses(
        (status = 200, description = "A page; with `more` false, `next` is where the stream \
            resumes.", body = RevocationPage),
        (status = 400, description = "`invalid-cursor`: `after` is not a revocation id.",
            body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`cursor-expired`: list again with no cursor.",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation-failed`: `limit` is out of range.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<RevocationPage>> {
    let query = FeedQuery::read(query.as_deref().unwrap_or(""))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    // The newest id is read before the page: every line up to it has committed (ids
    // commit in order), so a short page may move the cursor to it without skipping one.
    let (after, newest) = start(&state, query.after).await?;
    let mut lines = state.auth.revocation_page(after, limit + 1).await?;
    let more = lines.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    lines.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let last = lines.last().map_or(after, |l| l.id);
    Ok(Json(RevocationPage {
        next: if more { last } else { last.max(newest) },
        more,
        revocations: lines.into_iter().map(RevocationEntry::from).collect(),
    }))
}

/// The revocations in force after the cursor, then each new one as it is logged, as
/// Server-Sent Events: `revoked` (its `id:` is the cursor, its data a
/// `RevocationEntry`), one `caught_up` once the backlog is sent, and a comment every
/// 15 s. Resume with `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/revocations/stream", tag = "discovery",
    params(
        ("Last-Event-ID" = Option<String>, Header,
            description = "The id of the last event received; wins over `after`."),
        ("after" = Option<i64>, Query, minimum = 0, maximum = 999_999_999_999_999_999_i64,
            description = "The cursor, for clients that cannot set headers."),
    ),
    responses(
        (status = 200, description = "The event stream.", content_type = "text/event-stream",
            body = String),
        (status = 400, description = "`invalid-cursor`: the cursor is not a revocation id.",
            body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`cursor-expired`: list again with no cursor.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too-many-connections`: the replica serves as many \
            streams as it may.", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let query = FeedQuery::read(query.as_deref().unwrap_or(""))?;
    let after = match headers.get("last-event-id") {
        Some(value) => Some(parse_cursor(value.to_str().unwrap_or("-"))?),
        None => query.after,
    };
    let Ok(permit) = state.feed.streams.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            Code::TooManyConnections,
            "this replica serves as many revocation streams as it may: retry later or \
             on another replica, or page with GET /v1/revocations",
        ));
    };
    // Subscribed before the backlog is read, so nothing logged meanwhile goes unheard.
    let wake = state.auth.revocations();
    let (cursor, _) = start(&state, after).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    let feeder = Feeder {
        shutdown: state.live.shutdown_signal(),
        state,
        cursor,
        tx,
        wake,
        _permit: permit,
    };
    tokio::spawn(feeder.run());
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            // nginx buffers proxied responses unless told not to.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Why a stream ended.
#[derive(Debug)]
enum End {
    /// The reader went away, or did not read fast enough.
    Reader,
    Store(herd_identity::AuthError),
}

/// One open stream: reads the log from its cursor into the queue its response drains.
struct Feeder {
    state: AppState,
    cursor: i64,
    tx: mpsc::Sender<Bytes>,
    wake: tokio::sync::broadcast::Receiver<String>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

impl Feeder {
    async fn run(mut self) {
        match self.serve().await {
            Ok(()) | Err(End::Reader) => {}
            Err(End::Store(e)) => {
                tracing::warn!(error = %e, "revocation stream ended: the store failed");
            }
        }
    }

    async fn serve(&mut self) -> Result<(), End> {
        // EventSource clients retry after this many milliseconds when the stream ends.
        self.send(Bytes::from_static(b"retry: 1000\n\n"), false)
            .await?;
        self.catch_up(false).await?;
        let done = format!(
            "id: {0}\nevent: caught_up\ndata: {{\"next\":{0}}}\n\n",
            self.cursor
        );
        self.send(Bytes::from(done), false).await?;
        // Bytes must move more often than the replica's idle timeout, which closes a
        // connection that moved none whatever it was doing.
        let idle = self.state.config.connections.idle_timeout;
        let period = KEEP_ALIVE.min(idle / 3).max(Duration::from_millis(10));
        let mut keep_alive = tokio::time::interval(period);
        keep_alive.tick().await;
        loop {
            tokio::select! {
                woke = self.wake.recv() => match woke {
                    Ok(_) | Err(RecvError::Lagged(_)) => self.catch_up(true).await?,
                    Err(RecvError::Closed) => return Ok(()),
                },
                _ = keep_alive.tick() => {
                    self.send(Bytes::from_static(b": keep-alive\n\n"), true).await?;
                    self.catch_up(true).await?;
                }
                _ = self.shutdown.changed() => return Ok(()),
                () = self.tx.closed() => return Err(End::Reader),
            }
        }
    }

    /// Sends every line in force after the cursor, a page at a time.
    async fn catch_up(&mut self, live: bool) -> Result<(), End> {
        let auth = self.state.auth.clone();
        loop {
            let (_, newest) = auth.revocation_bounds().await.map_err(End::Store)?;
            let lines = auth
                .revocation_page(self.cursor, DEFAULT_LIMIT)
                .await
                .map_err(End::Store)?;
            let full = lines.len() as i64 == DEFAULT_LIMIT;
            for line in lines {
                let id = line.id;
                let entry = RevocationEntry::from(line);
                let data = serde_json::to_string(&entry).unwrap_or_default();
                let event = format!("id: {id}\nevent: revoked\ndata: {data}\n\n");
                self.send(Bytes::from(event), live).await?;
                self.cursor = id;
            }
            if !full {
                // Lines up to `newest` that were not listed had expired: skip them.
                self.cursor = self.cursor.max(newest);
                return Ok(());
            }
        }
    }

    /// Queues one event. Live news does not wait for a reader that fell behind: the
    /// stream ends, and the reader resumes from its `Last-Event-ID`.
    async fn send(&mut self, event: Bytes, live: bool) -> Result<(), End> {
        if live {
            return self.tx.try_send(event).map_err(|e| {
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    tracing::info!("revocation stream reader too slow; dropped");
                }
                End::Reader
            });
        }
        match tokio::time::timeout(WRITE_TIMEOUT, self.tx.send(event)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Reader),
            Err(_) => {
                tracing::info!("revocation stream reader too slow; dropped");
                Err(End::Reader)
            }
        }
    }
}
