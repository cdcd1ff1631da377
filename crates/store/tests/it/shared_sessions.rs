//! Sessions of identity's `shared` strategy, kept in the SQL store.

use herd_store::SharedSession;

use crate::harness::{self, TestDb, NOW};

backend_tests!(a_shared_session_lives_is_touched_and_ends);

async fn a_shared_session_lives_is_touched_and_ends(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    let session = |id: &str, created_at: i64, last_seen: i64| SharedSession {
        id: id.to_owned(),
        user_id: ada.id.clone(),
        username: ada.username.clone(),
        created_at,
        last_seen,
    };
    let s1 = session("h1", NOW, NOW);
    store
        .create_shared_session(&s1)
        .await
        .expect("create shared session");
    store
        .create_shared_session(&session("h2", NOW, NOW))
        .await
        .expect("create shared session");
    store
        .create_shared_session(&session("h3", NOW - 1000, NOW))
        .await
        .expect("create shared session");
    assert_eq!(
        store.shared_session("h1").await.expect("shared session"),
        Some(s1)
    );
    assert_eq!(
        store.shared_session("nope").await.expect("shared session"),
        None
    );

    // last_seen never moves backwards.
    store
        .touch_shared_session("h1", NOW + 50)
        .await
        .expect("touch shared session");
    store
        .touch_shared_session("h1", NOW + 20)
        .await
        .expect("touch shared session");
    let touched = store
        .shared_session("h1")
        .await
        .expect("shared session")
        .expect("h1 is still there");
    assert_eq!(touched.last_seen, NOW + 50);

    assert!(store
        .delete_shared_session("h2")
        .await
        .expect("delete shared session"));
    assert!(!store
        .delete_shared_session("h2")
        .await
        .expect("delete shared session"));

    // h3 is too old, whatever its last use; h1 was seen recently enough.
    assert_eq!(
        store
            .prune_shared_sessions(NOW + 10, NOW - 500)
            .await
            .expect("prune shared sessions"),
        1
    );
    assert_eq!(
        store.shared_session("h3").await.expect("shared session"),
        None
    );
    assert!(store
        .shared_session("h1")
        .await
        .expect("shared session")
        .is_some());
}
