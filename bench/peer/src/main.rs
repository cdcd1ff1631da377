//! The peers of bench/wrk.sh, one per mode:
//!
//! - `peer bare LISTEN`: `GET /healthz` and `GET /v1/me` answer a constant (`/v1/me` a
//!   JSON body shaped as herd's); the ceiling of a minimal axum exchange on this machine.
//! - `peer sessions LISTEN REDIS_URL`: axum + tower-sessions with its Redis store
//!   (fred, a pool of 4 connections, or `PEER_REDIS_POOL`), sessions ending after 30 minutes unused as
//!   herd's `shared` sessions do. `POST /login` starts a session (the `id` cookie);
//!   `GET /v1/me` answers the session's user, 401 without one.
//!
//! Prints `listening on ADDR` once bound (LISTEN may be 127.0.0.1:0).

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_sessions::cookie::time::Duration;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use tower_sessions_redis_store::fred::prelude::*;
use tower_sessions_redis_store::RedisStore;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: peer bare LISTEN | peer sessions LISTEN REDIS_URL";
    let (mode, listen) = match (args.get(1), args.get(2)) {
        (Some(mode), Some(listen)) => (mode.as_str(), listen.as_str()),
        _ => panic!("{usage}"),
    };
    let app = match mode {
        "bare" => Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/v1/me",
                get(|| async {
                    Json(json!({
                        "user_id": "00000000-0000-0000-0000-000000000000",
                        "username": "bench",
                        "session_id": "00000000-0000-0000-0000-000000000000",
                        "replica": "peer",
                    }))
                }),
            ),
        "sessions" => {
            let url = args.get(3).expect(usage);
            let config = Config::from_url(url).expect("a redis:// URL");
            // PEER_REDIS_POOL: how many connections fred keeps (4 unless told).
            let size = std::env::var("PEER_REDIS_POOL")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(4);
            let pool = Pool::new(config, None, None, None, size).expect("a Redis pool");
            let _connections = pool.connect();
            pool.wait_for_connect().await.expect("Redis answers");
            let layer = SessionManagerLayer::new(RedisStore::new(pool))
                .with_secure(false)
                .with_expiry(Expiry::OnInactivity(Duration::minutes(30)));
            Router::new()
                .route("/login", post(login))
                .route("/v1/me", get(me))
                .layer(layer)
        }
        _ => panic!("{usage}"),
    };
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    println!(
        "listening on {}",
        listener.local_addr().expect("local address")
    );
    axum::serve(listener, app).await.expect("serve");
}

async fn login(session: Session) -> impl IntoResponse {
    session
        .insert("user", "bench")
        .await
        .expect("session store");
    StatusCode::NO_CONTENT
}

async fn me(session: Session) -> impl IntoResponse {
    match session.get::<String>("user").await {
        Ok(Some(user)) => Json(json!({"user_id": "0", "username": user})).into_response(),
        Ok(None) => StatusCode::UNAUTHORIZED.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
