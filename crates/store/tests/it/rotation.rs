//! Login sessions and refresh-token rotation, including two callers racing on one token.

use std::sync::Arc;

use herd_store::{NewRefresh, RefreshLimit, Revocation, Rotation, SessionOwner, Store};
use tokio::sync::Barrier;

use crate::harness::{self, TestDb, NOW};

backend_tests!(
    a_live_token_rotates_and_its_successor_is_live,
    a_spent_token_within_grace_is_replayed,
    a_spent_token_past_grace_is_reuse_and_revokes_the_session,
    a_token_at_its_expiry_is_expired,
    an_unknown_token_is_unknown,
    a_token_that_outlived_its_sessions_revocation_is_session_revoked,
    racing_rotations_of_one_token_have_exactly_one_winner,
    a_session_past_its_refresh_limit_is_throttled_and_nothing_is_spent,
);

const GRACE: i64 = 30;
const ACCESS_EXPIRY: i64 = NOW + 300;
const TOKEN_EXPIRY: i64 = NOW + 3600;

fn next(hash: &[u8]) -> NewRefresh<'_> {
    NewRefresh {
        hash,
        expires_at: TOKEN_EXPIRY,
    }
}

async fn rotate(store: &Store, presented: &[u8], successor: &[u8], now: i64) -> Rotation {
    store
        .rotate_refresh(presented, next(successor), now, GRACE, ACCESS_EXPIRY, None)
        .await
        .expect("rotating")
}

/// A store with user `ada` and session `s1` whose first refresh token is `t0`.
async fn with_session(db: &TestDb) -> (Store, SessionOwner) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    let idx = harness::session(&store, &ada, "s1", b"t0", TOKEN_EXPIRY).await;
    let owner = SessionOwner {
        session_id: "s1".to_owned(),
        user_id: ada.id,
        username: ada.username,
        status_idx: Some(idx),
    };
    (store, owner)
}

async fn a_live_token_rotates_and_its_successor_is_live(db: TestDb) {
    let (store, owner) = with_session(&db).await;

    assert_eq!(
        rotate(&store, b"t0", b"t1", NOW).await,
        Rotation::Rotated(owner.clone())
    );
    assert_eq!(
        rotate(&store, b"t1", b"t2", NOW + 1).await,
        Rotation::Rotated(owner)
    );
    assert_eq!(
        store
            .revocations_since(0, NOW)
            .await
            .expect("revocations since"),
        vec![]
    );
}

async fn a_spent_token_within_grace_is_replayed(db: TestDb) {
    let (store, owner) = with_session(&db).await;
    rotate(&store, b"t0", b"t1", NOW).await;

    // The edge of the window is still inside it, and a replay changes nothing, so it
    // can happen again.
    assert_eq!(
        rotate(&store, b"t0", b"t1", NOW).await,
        Rotation::Replayed(owner.clone())
    );
    assert_eq!(
        rotate(&store, b"t0", b"t1", NOW + GRACE).await,
        Rotation::Replayed(owner.clone())
    );
    assert_eq!(
        rotate(&store, b"t1", b"t2", NOW + GRACE).await,
        Rotation::Rotated(owner)
    );
    assert_eq!(
        store
            .revocations_since(0, NOW)
            .await
            .expect("revocations since"),
        vec![]
    );
}

async fn a_spent_token_past_grace_is_reuse_and_revokes_the_session(db: TestDb) {
    let (store, _) = with_session(&db).await;
    rotate(&store, b"t0", b"t1", NOW).await;

    let at = NOW + GRACE + 1;
    assert_eq!(
        rotate(&store, b"t0", b"t9", at).await,
        Rotation::Reused {
            session_id: "s1".to_owned()
        }
    );

    let logged = store
        .revocations_since(0, at)
        .await
        .expect("revocations since");
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].session_id, "s1");
    assert_eq!(logged[0].expires_at, ACCESS_EXPIRY);
    // The session's tokens are gone, the live successor included.
    assert_eq!(rotate(&store, b"t1", b"t2", at).await, Rotation::Unknown);
    assert_eq!(rotate(&store, b"t0", b"t2", at).await, Rotation::Unknown);
    assert!(!store
        .revoke_session("s1", at, ACCESS_EXPIRY)
        .await
        .expect("revoke session"));
}

async fn a_token_at_its_expiry_is_expired(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    harness::session(&store, &ada, "s1", b"t0", NOW + 10).await;

    assert_eq!(
        rotate(&store, b"t0", b"t1", NOW + 10).await,
        Rotation::Expired
    );
    assert_eq!(
        rotate(&store, b"t0", b"t1", NOW + 11).await,
        Rotation::Expired
    );
    // Being refused spent nothing: a second earlier it still works.
    assert!(matches!(
        rotate(&store, b"t0", b"t1", NOW + 9).await,
        Rotation::Rotated(_)
    ));
}

async fn an_unknown_token_is_unknown(db: TestDb) {
    let (store, _) = with_session(&db).await;
    assert_eq!(
        rotate(&store, b"never issued", b"t1", NOW).await,
        Rotation::Unknown
    );
    // Nothing was stored for the successor either.
    assert_eq!(rotate(&store, b"t1", b"t2", NOW).await, Rotation::Unknown);
}

async fn a_token_that_outlived_its_sessions_revocation_is_session_revoked(db: TestDb) {
    // Revoking deletes a session's tokens, but a rotation committing alongside a logout
    // on PostgreSQL can leave its successor behind; this is that state.
    let (store, _) = with_session(&db).await;
    db.exec(&format!(
        "UPDATE sessions SET revoked_at = {NOW} WHERE id = 's1'"
    ))
    .await;

    assert_eq!(
        rotate(&store, b"t0", b"t1", NOW + 1).await,
        Rotation::SessionRevoked
    );
    assert_eq!(
        rotate(&store, b"t0", b"t1", NOW + GRACE + 100).await,
        Rotation::SessionRevoked
    );
}

async fn racing_rotations_of_one_token_have_exactly_one_winner(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    let barrier = Arc::new(Barrier::new(2));

    for round in 0..40 {
        let session_id = format!("s{round}");
        let token = format!("t{round}").into_bytes();
        harness::session(&store, &ada, &session_id, &token, TOKEN_EXPIRY).await;

        // Different successors, so that two rotations could not hide behind one row.
        let racers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|racer| {
                let (store, barrier, token) = (store.clone(), barrier.clone(), token.clone());
                let successor = format!("t{round}{racer}").into_bytes();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let outcome = store
                        .rotate_refresh(&token, next(&successor), NOW, GRACE, ACCESS_EXPIRY, None)
                        .await;
                    (successor, outcome)
                })
            })
            .collect();

        let mut winners = Vec::new();
        let mut replays = 0;
        for racer in racers {
            let (successor, outcome) = racer.await.expect("the task panicked");
            match outcome {
                Ok(Rotation::Rotated(owner)) => {
                    assert_eq!(owner.session_id, session_id);
                    winners.push(successor);
                }
                Ok(Rotation::Replayed(owner)) => {
                    assert_eq!(owner.session_id, session_id);
                    replays += 1;
                }
                other => panic!("round {round}: a racer got {other:?}"),
            }
        }
        assert_eq!((winners.len(), replays), (1, 1), "round {round}");

        // Only the winner's successor was stored.
        let loser = if winners[0].ends_with(b"a") { "b" } else { "a" };
        let loser = format!("t{round}{loser}").into_bytes();
        assert_eq!(rotate(&store, &loser, b"x", NOW).await, Rotation::Unknown);
        assert!(matches!(
            rotate(&store, &winners[0], format!("t{round}c").as_bytes(), NOW).await,
            Rotation::Rotated(_)
        ));
    }
    assert_eq!(
        store
            .revocations_since(0, NOW)
            .await
            .expect("revocations since"),
        Vec::<Revocation>::new()
    );
}

async fn a_session_past_its_refresh_limit_is_throttled_and_nothing_is_spent(db: TestDb) {
    let (store, owner) = with_session(&db).await;
    // A burst of 2, then one every 10 s.
    let limit = Some(RefreshLimit {
        interval: 10,
        tolerance: 20,
    });
    let limited = |presented: &'static [u8], successor: &'static [u8], now: i64| {
        let store = store.clone();
        async move {
            store
                .rotate_refresh(presented, next(successor), now, GRACE, ACCESS_EXPIRY, limit)
                .await
                .expect("rotating")
        }
    };
    assert_eq!(
        limited(b"t0", b"t1", NOW).await,
        Rotation::Rotated(owner.clone())
    );
    assert_eq!(
        limited(b"t0", b"t1", NOW).await,
        Rotation::Replayed(owner.clone()),
        "a replay takes from the meter too"
    );
    assert_eq!(
        limited(b"t1", b"t2", NOW).await,
        Rotation::Throttled { retry_after: 10 }
    );
    assert_eq!(
        limited(b"t0", b"t1", NOW + 5).await,
        Rotation::Throttled { retry_after: 5 }
    );
    assert_eq!(
        store.session_rows().await.expect("rows"),
        (1, 2),
        "the refused rotation stored nothing"
    );
    assert_eq!(
        limited(b"t1", b"t2", NOW + 10).await,
        Rotation::Rotated(owner),
        "t1 was left unspent, and one refresh has refilled"
    );
}
