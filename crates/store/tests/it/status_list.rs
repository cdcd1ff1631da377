//! The token status list's indices: one per session, set while a revoked session's
//! tokens can pass, and handed to a new session only once every token carrying it has
//! stopped passing.

use herd_store::Store;

use crate::harness::{self, TestDb, NOW};

backend_tests!(
    each_session_gets_its_own_index_from_zero,
    a_revoked_session_stays_listed_after_its_row_is_pruned,
    an_index_is_reused_only_after_its_tokens_expire_and_the_margin,
    an_expired_sessions_index_is_freed_when_it_is_pruned,
);

/// How long past a freed index's last token the tests ask the store to wait.
const MARGIN: i64 = 60;

async fn new_session(store: &Store, id: &str, token_expiry: i64, now: i64) -> i64 {
    let ada = match store.user_by_name("ada").await.expect("user by name") {
        Some(ada) => ada,
        None => harness::user(store, "ada").await,
    };
    let token = format!("token of {id}");
    store
        .create_session(
            id,
            &ada.id,
            now,
            herd_store::NewRefresh {
                hash: token.as_bytes(),
                expires_at: token_expiry,
            },
            MARGIN,
        )
        .await
        .expect("creating a session")
}

async fn listed(store: &Store, now: i64) -> (i64, Vec<i64>) {
    store.status_list(now).await.expect("status list")
}

async fn each_session_gets_its_own_index_from_zero(db: TestDb) {
    let store = db.connect().await;
    let mut got = vec![];
    for id in ["s1", "s2", "s3"] {
        got.push(new_session(&store, id, NOW + 3600, NOW).await);
    }
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(
        listed(&store, NOW).await,
        (3, vec![]),
        "nothing revoked yet"
    );
}

async fn a_revoked_session_stays_listed_after_its_row_is_pruned(db: TestDb) {
    let store = db.connect().await;
    new_session(&store, "s1", NOW + 3600, NOW).await;
    let idx = new_session(&store, "s2", NOW + 3600, NOW).await;
    store
        .revoke_session("s2", NOW, NOW + 300)
        .await
        .expect("revoke");
    assert_eq!(listed(&store, NOW).await, (2, vec![idx]));
    store.prune(NOW + 1).await.expect("prune");
    assert_eq!(
        listed(&store, NOW + 300).await,
        (2, vec![idx]),
        "set through the last second a token can pass"
    );
    assert_eq!(listed(&store, NOW + 301).await, (2, vec![]));
}

async fn an_index_is_reused_only_after_its_tokens_expire_and_the_margin(db: TestDb) {
    let store = db.connect().await;
    let first = new_session(&store, "s1", NOW + 3600, NOW).await;
    new_session(&store, "s2", NOW + 3600, NOW).await;
    store
        .revoke_session("s1", NOW, NOW + 300)
        .await
        .expect("revoke");
    store.prune(NOW + 1).await.expect("prune");

    let early = NOW + 300 + MARGIN;
    let third = new_session(&store, "s3", early + 3600, early).await;
    assert_eq!(
        third, 2,
        "not yet: a cached list may still show the bit set"
    );

    let later = early + 1;
    let fourth = new_session(&store, "s4", later + 3600, later).await;
    assert_eq!(fourth, first, "the lowest freed index is taken first");
    let (length, revoked) = listed(&store, later).await;
    assert_eq!(length, 3, "reuse keeps the list as long as the peak");
    assert!(
        revoked.is_empty(),
        "the new session's bit is clear: {revoked:?}"
    );
}

async fn an_expired_sessions_index_is_freed_when_it_is_pruned(db: TestDb) {
    let store = db.connect().await;
    let idx = new_session(&store, "s1", NOW + 10, NOW).await;
    store.prune(NOW + 10).await.expect("prune");
    let now = NOW + 10 + MARGIN + 1;
    assert_eq!(new_session(&store, "s2", now + 3600, now).await, idx);
}
