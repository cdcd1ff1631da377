//! Revoking sessions, and the revocation log replicas tail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use herd_store::{NewRefresh, Rotation, Store, KEY_SUBJECT_PREFIX};

use crate::harness::{self, TestDb, NOW};

backend_tests!(
    revoking_twice_logs_once,
    the_log_reads_in_id_order_after_an_id_and_skips_the_moot,
    prune_deletes_what_can_no_longer_matter,
    a_tail_misses_no_revocation_logged_concurrently,
    a_withdrawn_key_is_logged_with_the_sessions_and_pages_read_in_order,
);

async fn sessions(store: &Store, ids: &[&str], token_expiry: i64) {
    let ada = match store.user_by_name("ada").await.expect("user by name") {
        Some(ada) => ada,
        None => harness::user(store, "ada").await,
    };
    for id in ids {
        let token = format!("token of {id}");
        harness::session(store, &ada, id, token.as_bytes(), token_expiry).await;
    }
}

async fn revocation_ids(store: &Store) -> Vec<i64> {
    let all = store
        .revocations_since(0, 0)
        .await
        .expect("revocations since");
    all.into_iter().map(|r| r.id).collect()
}

async fn revoking_twice_logs_once(db: TestDb) {
    let store = db.connect().await;
    sessions(&store, &["s1"], NOW + 3600).await;

    assert!(store
        .revoke_session("s1", NOW, NOW + 300)
        .await
        .expect("revoke session"));
    assert!(!store
        .revoke_session("s1", NOW + 1, NOW + 301)
        .await
        .expect("revoke session"));
    assert!(!store
        .revoke_session("no such session", NOW, NOW + 300)
        .await
        .expect("revoke session"));

    let logged = store
        .revocations_since(0, NOW)
        .await
        .expect("revocations since");
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(
        (logged[0].session_id.as_str(), logged[0].expires_at),
        ("s1", NOW + 300)
    );
    // Its refresh tokens stopped working with it.
    let rotated = store
        .rotate_refresh(
            b"token of s1",
            NewRefresh {
                hash: b"next",
                expires_at: NOW + 3600,
            },
            NOW + 2,
            30,
            NOW + 302,
            None,
        )
        .await
        .expect("rotate refresh");
    assert_eq!(rotated, Rotation::Unknown);
}

async fn the_log_reads_in_id_order_after_an_id_and_skips_the_moot(db: TestDb) {
    let store = db.connect().await;
    assert_eq!(
        store
            .last_revocation_id()
            .await
            .expect("last revocation id"),
        0
    );
    assert_eq!(
        store
            .revocations_since(0, NOW)
            .await
            .expect("revocations since"),
        vec![]
    );
    sessions(&store, &["a", "b", "c"], NOW + 3600).await;

    for (id, expiry) in [("a", NOW + 100), ("b", NOW + 50), ("c", NOW + 200)] {
        assert!(store
            .revoke_session(id, NOW, expiry)
            .await
            .expect("revoke session"));
    }

    let all = store
        .revocations_since(0, NOW)
        .await
        .expect("revocations since");
    let order: Vec<_> = all.iter().map(|r| r.session_id.as_str()).collect();
    assert_eq!(order, ["a", "b", "c"]);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "{all:?}");
    assert_eq!(
        store
            .last_revocation_id()
            .await
            .expect("last revocation id"),
        all[2].id
    );

    let after_a = store
        .revocations_since(all[0].id, NOW)
        .await
        .expect("revocations since");
    assert_eq!(after_a, all[1..]);
    // A line holds through its expiry, the last second a token may still pass, and is
    // moot after it.
    let at_expiry = store
        .revocations_since(0, NOW + 50)
        .await
        .expect("revocations since");
    assert_eq!(at_expiry, all);
    let later = store
        .revocations_since(0, NOW + 51)
        .await
        .expect("revocations since");
    assert_eq!(later, [all[0].clone(), all[2].clone()]);
    assert_eq!(
        store
            .revocations_since(all[2].id, NOW)
            .await
            .expect("revocations since"),
        vec![]
    );
}

async fn prune_deletes_what_can_no_longer_matter(db: TestDb) {
    let store = db.connect().await;
    sessions(&store, &["revoked early", "revoked late"], NOW + 3600).await;
    sessions(&store, &["short"], NOW + 100).await;
    sessions(&store, &["long"], NOW + 300).await;
    store
        .revoke_session("revoked early", NOW, NOW + 50)
        .await
        .expect("revoke session");
    store
        .revoke_session("revoked late", NOW, NOW + 200)
        .await
        .expect("revoke session");

    // One revocation and one refresh token are past it; the revoked sessions' tokens
    // went with the revocation. Three sessions are left without a token (the two
    // revoked, and the one whose token expired) and go too.
    assert_eq!(store.prune(NOW + 150).await.expect("prune"), 2 + 3);
    assert_eq!(
        store.session_rows().await.expect("rows"),
        (1, 1),
        "the live session and its token"
    );
    assert_eq!(store.prune(NOW + 150).await.expect("prune"), 0);

    let left = store
        .revocations_since(0, 0)
        .await
        .expect("revocations since");
    let left: Vec<_> = left.iter().map(|r| r.session_id.as_str()).collect();
    assert_eq!(left, ["revoked late"]);
    let refresh = |token: &'static str| {
        let store = store.clone();
        async move {
            let next = NewRefresh {
                hash: b"next",
                expires_at: NOW + 3600,
            };
            store
                .rotate_refresh(token.as_bytes(), next, NOW + 1, 30, NOW + 300, None)
                .await
                .expect("rotate refresh")
        }
    };
    assert_eq!(refresh("token of short").await, Rotation::Unknown);
    assert!(matches!(
        refresh("token of long").await,
        Rotation::Rotated(_)
    ));
}

// On PostgreSQL, ids are handed out at insert and commits can land out of that order; a
// reader that had moved past a later id would never see the earlier one.
async fn a_tail_misses_no_revocation_logged_concurrently(db: TestDb) {
    let store = db.connect().await;
    let ids: Vec<String> = (0..60).map(|i| format!("s{i}")).collect();
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    sessions(&store, &names, NOW + 3600).await;

    let done = Arc::new(AtomicBool::new(false));
    let writers = {
        let (store, done) = (store.clone(), done.clone());
        let chunks: Vec<Vec<String>> = ids.chunks(15).map(<[String]>::to_vec).collect();
        tokio::spawn(async move {
            let tasks: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        for id in chunk {
                            assert!(store
                                .revoke_session(&id, NOW, NOW + 300)
                                .await
                                .expect("revoke session"));
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("the task panicked");
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let mut seen = Vec::new();
    let mut last = 0;
    loop {
        // Read the flag first: a read that starts after every writer finished is final.
        let finished = done.load(Ordering::SeqCst);
        let batch = store
            .revocations_since(last, NOW)
            .await
            .expect("revocations since");
        if let Some(newest) = batch.last() {
            last = newest.id;
        }
        seen.extend(batch.into_iter().map(|r| r.id));
        if finished {
            break;
        }
        tokio::task::yield_now().await;
    }
    writers.await.expect("the task panicked");

    let all = revocation_ids(&store).await;
    assert_eq!(all.len(), ids.len());
    assert_eq!(seen, all, "the tail skipped a revocation");
}

/// The revocation feed reads the log a page at a time, and a key withdrawn with `herd
/// keys revoke` is a line of the same log, so that followers hear of it in order.
async fn a_withdrawn_key_is_logged_with_the_sessions_and_pages_read_in_order(db: TestDb) {
    let store = db.connect().await;
    assert_eq!(store.revocation_bounds().await.expect("bounds"), (None, 0));
    sessions(&store, &["s1", "s2"], NOW + 3600).await;
    let key = harness::key("k1", NOW, NOW);
    store.insert_signing_key(&key).await.expect("insert key");
    store
        .revoke_session("s1", NOW, NOW + 300)
        .await
        .expect("revoke");
    store
        .revoke_signing_key("k1", NOW, NOW + 300)
        .await
        .expect("revoke key");
    store
        .revoke_session("s2", NOW, NOW + 300)
        .await
        .expect("revoke");
    assert!(
        store.signing_keys().await.expect("keys").is_empty(),
        "the key is gone"
    );

    let first = store.revocation_page(0, NOW, 2).await.expect("page");
    let rest = store
        .revocation_page(first[1].id, NOW, 2)
        .await
        .expect("page");
    let subjects: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|r| r.session_id.clone())
        .collect();
    assert_eq!(
        subjects,
        [
            "s1".to_owned(),
            format!("{KEY_SUBJECT_PREFIX}k1"),
            "s2".to_owned()
        ]
    );
    let (oldest, newest) = store.revocation_bounds().await.expect("bounds");
    assert_eq!((oldest, newest), (Some(first[0].id), rest[0].id));
    assert!(
        store
            .revocation_page(0, NOW + 301, 10)
            .await
            .expect("page")
            .is_empty(),
        "lines past their expiry are not in force"
    );
}
