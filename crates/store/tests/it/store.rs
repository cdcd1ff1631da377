//! Opening a store, and what needs no database at all.

use herd_store::{Store, StoreError};

use crate::harness::TestDb;

backend_tests!(a_store_answers_ping);

async fn a_store_answers_ping(db: TestDb) {
    let store = db.connect().await;
    store.ping().await.expect("ping");
    store.close().await;
}

#[tokio::test]
async fn an_unsupported_url_is_refused_naming_both_forms() {
    for url in [
        "mysql://root@localhost/herd",
        "herd.db",
        "postgres//missing-colon",
    ] {
        let err = Store::open(url)
            .await
            .expect_err("an unsupported URL opened");
        assert!(
            matches!(err, StoreError::UnsupportedUrl(ref u) if u == url),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("sqlite://"), "{message}");
        assert!(message.contains("postgres://"), "{message}");
    }
}

#[tokio::test]
async fn a_malformed_url_is_reported_without_its_password() {
    let err = Store::open("postgres://herd:s3cr3t@db.example:notaport/herd")
        .await
        .expect_err("a URL with a bad port opened");
    let StoreError::UnsupportedUrl(url) = &err else {
        panic!("expected UnsupportedUrl, got {err:?}");
    };
    assert_eq!(url, "postgres://herd:***@db.example:notaport/herd");
    assert!(!format!("{err} {err:?}").contains("s3cr3t"));
}

#[tokio::test]
async fn an_unreachable_postgres_is_unavailable() {
    // Nothing listens on port 1; the pool retries a refused connection until its
    // acquire timeout, so this takes a few seconds.
    let err = Store::open("postgres://postgres@127.0.0.1:1/herd")
        .await
        .expect_err("a store opened on a closed port");
    assert!(err.is_unavailable(), "{err:?}");
}

/// Identity and the server hold store futures across `.await` in spawned tasks and axum
/// handlers, so every one must be `Send` on both backends. Never run; compiling is the
/// test.
#[allow(dead_code)]
fn store_futures_are_send(store: &Store) {
    use herd_store::{NewRefresh, SharedSession};
    fn send<T: Send>(_: T) {}
    let refresh = NewRefresh {
        hash: b"h",
        expires_at: 0,
    };
    let key = crate::harness::key("k", 0, 0);
    let user = herd_store::UserRecord {
        id: String::new(),
        username: String::new(),
        password_hash: String::new(),
        created_at: 0,
    };
    let shared = SharedSession {
        id: String::new(),
        user_id: String::new(),
        username: String::new(),
        created_at: 0,
        last_seen: 0,
    };
    send(Store::connect(""));
    send(Store::open(""));
    send(store.migrate());
    send(store.pending_migrations());
    send(store.ping());
    send(store.create_user(&user));
    send(store.user_by_name(""));
    send(store.create_session("", "", 0, refresh, 0));
    send(store.status_list(0));
    send(store.rotate_refresh(b"", refresh, 0, 0, 0, None));
    send(store.revoke_session("", 0, 0));
    send(store.revocations_since(0, 0));
    send(store.last_revocation_id());
    send(store.prune(0));
    send(store.signing_keys());
    send(store.insert_first_signing_key(&key));
    send(store.insert_signing_key(&key));
    send(store.delete_signing_key(""));
    send(store.secret("", b""));
    send(store.append_event("", b"", 0));
    send(store.events_since(0, 0));
    send(store.last_event_id());
    send(store.prune_events(0));
    send(store.create_shared_session(&shared));
    send(store.shared_session(""));
    send(store.touch_shared_session("", 0));
    send(store.delete_shared_session(""));
    send(store.prune_shared_sessions(0, 0));
    send(store.create_room("", "", "", 0));
    send(store.room(""));
    send(store.rooms_of(""));
    send(store.join_room("", "", 0));
    send(store.leave_room("", ""));
    send(store.is_member("", ""));
    send(store.post_message("", "", "", "", "", 0));
    send(store.messages_after("", 0, 0));
    send(store.close());
}
