//! An example service built on `herd-verify`: each of herd's users keeps private notes
//! here. It has no accounts of its own and never calls herd per request: a note is
//! written or read under the verified token's `sub`, and a token whose session was logged
//! out on herd is refused within a second, from herd's revocation feed.
//!
//! `POST /notes` goes through [`herd_verify::VerifyLayer`] (the layer refuses, the
//! handler reads the claims it left); `GET /notes` and `GET /whoami` use the
//! [`herd_verify::Verified`] extractor directly. `GET /healthz` needs no token and says
//! whether the feed is followed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use herd_verify::{Verified, Verifier, VerifyLayer};
use serde::{Deserialize, Serialize};

/// The service's state: the verifier and the notes, by user id (in memory: this is an
/// example of verification, not of storage).
#[derive(Debug, Clone)]
pub struct Notes {
    verifier: Verifier,
    notes: Arc<Mutex<HashMap<String, Vec<Note>>>>,
}

impl FromRef<Notes> for Verifier {
    fn from_ref(notes: &Notes) -> Verifier {
        notes.verifier.clone()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Note {
    pub text: String,
}

#[derive(Debug, Serialize)]
struct WhoAmI {
    user_id: String,
    username: String,
}

#[derive(Debug, Serialize)]
struct Health {
    following_herd: bool,
}

/// Serves the notes API on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, verifier: Verifier) -> std::io::Result<()> {
    axum::serve(listener, router(verifier)).await
}

/// The notes API over `verifier`.
pub fn router(verifier: Verifier) -> Router {
    let state = Notes {
        verifier: verifier.clone(),
        notes: Arc::default(),
    };
    let writes = Router::new()
        .route("/notes", axum::routing::post(add))
        .layer(VerifyLayer::new(verifier));
    Router::new()
        .route("/notes", get(list))
        .route("/whoami", get(whoami))
        .route("/healthz", get(health))
        .merge(writes)
        .with_state(state)
}

async fn add(
    State(state): State<Notes>,
    Verified(claims): Verified,
    Json(note): Json<Note>,
) -> (StatusCode, Json<Note>) {
    let mut notes = state.notes.lock().unwrap_or_else(|e| e.into_inner());
    notes
        .entry(claims.sub.clone())
        .or_default()
        .push(note.clone());
    (StatusCode::CREATED, Json(note))
}

async fn list(State(state): State<Notes>, Verified(claims): Verified) -> Json<Vec<Note>> {
    let notes = state.notes.lock().unwrap_or_else(|e| e.into_inner());
    Json(notes.get(&claims.sub).cloned().unwrap_or_default())
}

async fn whoami(Verified(claims): Verified) -> Json<WhoAmI> {
    Json(WhoAmI {
        user_id: claims.sub.clone(),
        username: claims.preferred_username.clone(),
    })
}

async fn health(State(state): State<Notes>) -> Json<Health> {
    Json(Health {
        following_herd: state.verifier.is_following(),
    })
}
