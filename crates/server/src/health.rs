//! Liveness, readiness and metrics: the routes an orchestrator and a scraper use.

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult, Code};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::metrics))
}

/// The process is up and serving; says nothing of its dependencies.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the store, and the session store if there is one, answer within a second,
/// and the replica is not draining.
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    if state.is_draining() {
        return Err(ApiError::new(
            Code::Unavailable,
            "this replica is shutting down; send requests to another",
        ));
    }
    match tokio::time::timeout(Duration::from_secs(1), state.auth.ready()).await {
        // The bus only speeds news up (the store has it all), so a bus that is down is
        // reported but does not take the replica out of rotation.
        Ok(Ok(())) => {
            let bus = if state.bus().healthy().await {
                "ok"
            } else {
                "down"
            };
            Ok(Json(json!({ "status": "ready", "bus": bus })))
        }
        Ok(Err(e)) => Err(ApiError::unavailable(e)),
        Err(_) => Err(ApiError::unavailable("the store did not answer within 1 s")),
    }
}
