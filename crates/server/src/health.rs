//! Liveness, readiness and metrics: the routes an orchestrator and a scraper use.

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, Code, Problem};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::metrics))
}

/// The process is up and serving; says nothing of its dependencies.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive.", body = Health)),
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(value_type = String)]
    pub status: &'static str,
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Always `ready` (a replica that is not answers 503).
    #[schema(value_type = String)]
    pub status: &'static str,
    /// `ok` or `down`: the bus only speeds news up, so a bus that is down is reported but
    /// does not make the replica unready.
    #[schema(value_type = String)]
    pub bus: &'static str,
}

/// Ready when the store, and the session store if there is one, answer within a second,
/// the replica is not draining, and its clock agrees with its peers' (docs/security.md,
/// "Clock skew").
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve.", body = Ready),
        (status = 503, description = "`unavailable`: the store or the session store did not \
            answer within a second, the replica is draining, or its clock is off from its \
            peers' by more than the leeway; take it out of rotation.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Ready>> {
    if state.is_draining() {
        return Err(ApiError::new(
            Code::Unavailable,
            "this replica is shutting down; send requests to another",
        ));
    }
    if !state.confirmations().clock_settled() {
        return Err(ApiError::new(
            Code::Unavailable,
            "starting: not yet heard its peers' clocks, to compare its own with",
        ));
    }
    if let Some(problem) = state.confirmations().clock_skew() {
        return Err(ApiError::new(Code::Unavailable, problem));
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
            Ok(Json(Ready {
                status: "ready",
                bus,
            }))
        }
        Ok(Err(e)) => Err(ApiError::unavailable(e)),
        Err(_) => Err(ApiError::unavailable("the store did not answer within 1 s")),
    }
}
