//! News between replicas: identity's revocations and key rotations, carried by the bus.
//!
//! The bus only makes news fast. Everything it carries is in the store first, and every
//! replica reads the store on its upkeep tick, so a replica cut off from the bus (or one
//! that just started) still converges; a [`Delivery::Gap`] makes it read the store now.

use herd_bus::{Bus, Delivery};
use herd_identity::{Auth, Notice};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;

pub const REVOCATIONS: &str = "identity.revocations";
pub const KEYS: &str = "identity.keys";

#[derive(Debug, Serialize, Deserialize)]
struct Revoked {
    sid: String,
    until: i64,
}

/// Starts relaying: this replica's notices out to the bus, and other replicas' news in.
/// Subscriptions are in effect when this returns, so nothing published after is missed.
pub async fn relay(auth: Auth, bus: Bus, tasks: &mut JoinSet<()>) {
    let mut notices = auth.notices();
    let mut revocations = bus.subscribe(REVOCATIONS).await;
    let mut keys = bus.subscribe(KEYS).await;

    let out_bus = bus.clone();
    tasks.spawn(async move {
        loop {
            let (topic, payload) = match notices.recv().await {
                Ok(Notice::Revoked { session_id, until }) => {
                    let body = Revoked { sid: session_id, until };
                    (REVOCATIONS, serde_json::to_vec(&body).unwrap_or_default())
                }
                Ok(Notice::KeysChanged) => (KEYS, Vec::new()),
                // Missed notices are in the store; peers read them on their next tick.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            };
            if let Err(e) = out_bus.publish(topic, &payload).await {
                tracing::warn!(topic, error = %e, "could not publish; peers will read the store on their next upkeep");
            }
        }
    });

    tasks.spawn(async move {
        loop {
            tokio::select! {
                delivery = revocations.recv() => match delivery {
                    Some(Delivery::Message { payload, .. }) => match serde_json::from_slice::<Revoked>(&payload) {
                        Ok(r) => auth.apply_revocation(&r.sid, r.until),
                        Err(e) => tracing::warn!(error = %e, "unreadable revocation on the bus"),
                    },
                    Some(Delivery::Gap) => {
                        if let Err(e) = auth.sync_revocations().await {
                            tracing::warn!(error = %e, "could not catch up on revocations after a bus gap");
                        }
                    }
                    None => break,
                },
                delivery = keys.recv() => match delivery {
                    Some(_) => {
                        if let Err(e) = auth.reload_keys().await {
                            tracing::warn!(error = %e, "could not reload the key ring");
                        }
                    }
                    None => break,
                },
            }
        }
    });
}
