//! Accounts.

use herd_store::{StoreError, UserRecord};

use crate::harness::{self, TestDb, NOW};

backend_tests!(
    a_created_user_is_found_by_name,
    a_taken_username_is_a_conflict_on_users_username_key,
    a_password_hash_is_replaced_only_over_the_expected_one,
);

async fn a_created_user_is_found_by_name(db: TestDb) {
    let store = db.connect().await;
    assert_eq!(store.user_by_name("ada").await.expect("user by name"), None);

    let ada = harness::user(&store, "ada").await;

    assert_eq!(
        store.user_by_name("ada").await.expect("user by name"),
        Some(ada)
    );
    assert_eq!(store.user_by_name("Ada").await.expect("user by name"), None);
}

async fn a_taken_username_is_a_conflict_on_users_username_key(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;

    let impostor = UserRecord {
        id: "u-other".to_owned(),
        username: "ada".to_owned(),
        password_hash: "another hash".to_owned(),
        created_at: NOW + 1,
    };
    match store.create_user(&impostor).await {
        Err(StoreError::Conflict { constraint }) => assert_eq!(constraint, "users_username_key"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.user_by_name("ada").await.expect("user by name"),
        Some(ada)
    );
}

async fn a_password_hash_is_replaced_only_over_the_expected_one(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;

    assert!(!store
        .replace_password_hash(&ada.id, "not the stored hash", "rehashed")
        .await
        .expect("replace"));
    assert_eq!(
        store
            .user_by_name("ada")
            .await
            .expect("user")
            .map(|u| u.password_hash),
        Some(ada.password_hash.clone()),
        "a stale expectation changes nothing"
    );

    assert!(store
        .replace_password_hash(&ada.id, &ada.password_hash, "rehashed")
        .await
        .expect("replace"));
    assert_eq!(
        store
            .user_by_name("ada")
            .await
            .expect("user")
            .map(|u| u.password_hash),
        Some("rehashed".to_owned())
    );
    assert!(!store
        .replace_password_hash("no-such-user", "rehashed", "x")
        .await
        .expect("replace"));
}
