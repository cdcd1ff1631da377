//! What a user controls of their account, at the store: sessions opened only over the
//! hash a login verified, a user's sessions listed and ended (never another user's), the
//! password changed and the account deleted together with the sessions they end.

use herd_store::{NewRefresh, NewSession, SessionOrigin, SessionScope, Store, UserRecord};

use crate::harness::{self, TestDb, NOW};

backend_tests!(
    a_session_opens_only_over_the_verified_hash_of_an_account_not_deleted,
    ending_sessions_touches_only_the_users_own_and_logs_each,
    a_password_change_ends_the_other_sessions_only_over_the_current_hash,
);

const LATER: i64 = NOW + 86_400;

async fn open(store: &Store, user: &UserRecord, id: &str, hash: &str, agent: &str) -> bool {
    let token = format!("token of {id}");
    store
        .open_session(
            NewSession {
                id,
                user_id: &user.id,
                verified_hash: hash,
                origin: SessionOrigin {
                    client_addr: Some("192.0.2.7"),
                    user_agent: Some(agent),
                },
                status_margin: 60,
            },
            NOW,
            NewRefresh {
                hash: token.as_bytes(),
                expires_at: LATER,
            },
        )
        .await
        .expect("open session")
        .is_some()
}

async fn listed(store: &Store, user: &UserRecord) -> Vec<String> {
    store
        .user_sessions(&user.id, NOW)
        .await
        .expect("sessions")
        .into_iter()
        .map(|s| s.id)
        .collect()
}

async fn a_session_opens_only_over_the_verified_hash_of_an_account_not_deleted(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;

    assert!(!open(&store, &ada, "s-stale", "a hash changed meanwhile", "A").await);
    assert!(open(&store, &ada, "s-1", &ada.password_hash, "Browser/1").await);
    let sessions = store.user_sessions(&ada.id, NOW).await.expect("sessions");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id, "s-1");
    assert_eq!(sessions[0].client_addr.as_deref(), Some("192.0.2.7"));
    assert_eq!(sessions[0].user_agent.as_deref(), Some("Browser/1"));
    assert_eq!(sessions[0].refreshed_at, None);

    let ended = store
        .delete_user(&ada.id, &ada.password_hash, NOW, NOW + 300)
        .await
        .expect("delete");
    assert_eq!(ended, Some(vec!["s-1".to_owned()]));
    assert!(!open(&store, &ada, "s-2", &ada.password_hash, "A").await);
    assert!(
        !open(&store, &ada, "s-3", "", "A").await,
        "the emptied hash opens nothing"
    );
    assert_eq!(store.user_by_name("ada").await.expect("by name"), None);
    assert_eq!(store.user_by_id(&ada.id).await.expect("by id"), None);
    assert!(listed(&store, &ada).await.is_empty());
    // Deleting again finds nothing to delete.
    assert_eq!(
        store
            .delete_user(&ada.id, &ada.password_hash, NOW, NOW + 300)
            .await
            .expect("delete"),
        None
    );
}

async fn ending_sessions_touches_only_the_users_own_and_logs_each(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    let bob = harness::user(&store, "bob").await;
    for id in ["a-1", "a-2", "a-3"] {
        assert!(open(&store, &ada, id, &ada.password_hash, "A").await);
    }
    assert!(open(&store, &bob, "b-1", &bob.password_hash, "B").await);
    let before = store.last_revocation_id().await.expect("last id");

    let none = store
        .revoke_user_sessions(&ada.id, SessionScope::One("b-1"), NOW, NOW + 300)
        .await
        .expect("revoke");
    assert!(none.is_empty(), "bob's session is not ada's to end");
    assert_eq!(listed(&store, &bob).await, ["b-1"]);

    let one = store
        .revoke_user_sessions(&ada.id, SessionScope::One("a-1"), NOW, NOW + 300)
        .await
        .expect("revoke");
    assert_eq!(one, ["a-1"]);
    let mut others = store
        .revoke_user_sessions(&ada.id, SessionScope::AllBut("a-3"), NOW, NOW + 300)
        .await
        .expect("revoke");
    others.sort();
    assert_eq!(others, ["a-2"], "a-1 was ended already");
    assert_eq!(listed(&store, &ada).await, ["a-3"]);

    let logged: Vec<String> = store
        .revocations_since(before, NOW)
        .await
        .expect("log")
        .into_iter()
        .map(|r| r.session_id)
        .collect();
    assert_eq!(logged, ["a-1", "a-2"]);
    // Sessions opened here hold status-list indices 0 to 3, in order; the two ended are
    // set in the Token Status List, as a logout's would be.
    let (length, revoked) = store.status_list(NOW).await.expect("status list");
    assert_eq!(length, 4);
    assert_eq!(revoked, [0, 1]);
}

async fn a_password_change_ends_the_other_sessions_only_over_the_current_hash(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    for id in ["s-1", "s-2"] {
        assert!(open(&store, &ada, id, &ada.password_hash, "A").await);
    }
    let stale = store
        .change_password(&ada.id, "not the hash", "new hash", "s-1", NOW, NOW + 300)
        .await
        .expect("change");
    assert_eq!(stale, None);
    assert_eq!(listed(&store, &ada).await.len(), 2, "nothing changed");

    let ended = store
        .change_password(
            &ada.id,
            &ada.password_hash,
            "new hash",
            "s-1",
            NOW,
            NOW + 300,
        )
        .await
        .expect("change");
    assert_eq!(ended, Some(vec!["s-2".to_owned()]));
    assert_eq!(listed(&store, &ada).await, ["s-1"]);
    assert_eq!(
        store
            .user_by_id(&ada.id)
            .await
            .expect("user")
            .map(|u| u.password_hash),
        Some("new hash".to_owned())
    );
}
