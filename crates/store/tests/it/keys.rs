//! The signing-key ring.

use std::sync::Arc;

use tokio::sync::Barrier;

use crate::harness::{key, TestDb, NOW};

backend_tests!(
    the_first_key_is_stored_only_into_an_empty_ring,
    racing_first_keys_store_exactly_one,
    keys_list_by_sign_from_then_created_at_then_kid_and_delete,
);

async fn the_first_key_is_stored_only_into_an_empty_ring(db: TestDb) {
    let store = db.connect().await;
    assert_eq!(store.signing_keys().await.expect("signing keys"), vec![]);

    let first = key("k1", NOW, NOW);
    assert!(store
        .insert_first_signing_key(&first)
        .await
        .expect("insert first signing key"));
    assert!(!store
        .insert_first_signing_key(&key("k2", NOW, NOW))
        .await
        .expect("insert first signing key"));

    // Every field comes back as it went in, the secret included.
    assert_eq!(
        store.signing_keys().await.expect("signing keys"),
        vec![first]
    );
}

async fn racing_first_keys_store_exactly_one(db: TestDb) {
    let store = db.connect().await;
    let racers = 8;
    let barrier = Arc::new(Barrier::new(racers));
    for round in 0..20 {
        let tasks: Vec<_> = (0..racers)
            .map(|i| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    let candidate = key(&format!("k{round}-{i}"), NOW, NOW);
                    barrier.wait().await;
                    let stored = store
                        .insert_first_signing_key(&candidate)
                        .await
                        .expect("insert first signing key");
                    (candidate, stored)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (candidate, stored) = task.await.expect("the task panicked");
            if stored {
                winners.push(candidate);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(store.signing_keys().await.expect("signing keys"), winners);

        // Empty the ring again for the next round.
        store
            .delete_signing_key(&winners[0].kid)
            .await
            .expect("delete signing key");
    }
}

async fn keys_list_by_sign_from_then_created_at_then_kid_and_delete(db: TestDb) {
    let store = db.connect().await;
    for k in [
        key("late", 1, NOW + 300),
        key("b", 2, NOW + 100),
        key("a", 2, NOW + 100),
        key("old", 1, NOW + 100),
        key("first", 5, NOW),
    ] {
        store
            .insert_signing_key(&k)
            .await
            .expect("insert signing key");
    }
    let kids = |keys: Vec<herd_store::SigningKeyRecord>| -> Vec<String> {
        keys.into_iter().map(|k| k.kid).collect()
    };
    assert_eq!(
        kids(store.signing_keys().await.expect("signing keys")),
        ["first", "old", "a", "b", "late"]
    );

    store
        .delete_signing_key("old")
        .await
        .expect("delete signing key");
    store
        .delete_signing_key("never there")
        .await
        .expect("delete signing key");
    assert_eq!(
        kids(store.signing_keys().await.expect("signing keys")),
        ["first", "a", "b", "late"]
    );
}
