//! What a user controls of their account: their sessions listed and ended (one, all
//! others, all), their password changed, the account deleted; each a revocation refused
//! at once here and, over the bus, on the other replicas. And what an attacker holding
//! one session, or another account, cannot do with these routes.

use herd_identity::{Rate, Strategy, ThrottleConfig};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, spawn_app, spawn_with, Options, TestApp, TestBus, Tokens, PASSWORD,
};

const NEW_PASSWORD: &str = "a much newer secret";

impl TestApp {
    /// Logs `username` in with `password`, sending `user_agent`.
    async fn login_as(&self, username: &str, password: &str, user_agent: &str) -> Response {
        self.client
            .post(self.url("/v1/auth/login"))
            .header("user-agent", user_agent)
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .expect("request")
    }

    async fn sessions(&self, token: &str) -> Vec<Value> {
        let response = self.get_authed(token, "/v1/sessions").await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        body["sessions"].as_array().expect("sessions").clone()
    }

    async fn delete_authed(&self, token: &str, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    async fn session_id(&self, token: &str) -> String {
        let me: Value = self.me(token).await.json().await.expect("json");
        me["session_id"].as_str().expect("session_id").to_owned()
    }

    /// Whether `tokens` still work here: the access token, then the refresh token.
    async fn works(&self, tokens: &Tokens) -> (bool, bool) {
        let access = self.me(&tokens.access).await.status() == StatusCode::OK;
        let refresh = self.refresh(&tokens.refresh).await.status() == StatusCode::OK;
        (access, refresh)
    }
}

async fn ended(response: Response) -> u64 {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    body["ended"].as_u64().expect("ended")
}

#[tokio::test]
async fn a_user_lists_their_sessions_with_where_each_logged_in_from_and_which_is_this_one() {
    let app = spawn_app().await;
    assert_eq!(
        app.signup("alice", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let laptop = app.login_as("alice", PASSWORD, "Laptop/1.0").await;
    let laptop = TestApp::tokens_of(&laptop.json().await.expect("json"));
    app.clock.advance(30);
    let phone = app.login_as("alice", PASSWORD, "Phone/2.0").await;
    let phone = TestApp::tokens_of(&phone.json().await.expect("json"));
    // Someone else's session is not in alice's list.
    app.user("bob").await;

    let listed = app.sessions(&laptop.access).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    // Newest first: the phone, then the laptop, which is the one asking.
    assert_eq!(listed[0]["user_agent"], "Phone/2.0");
    assert_eq!(listed[0]["current"], false);
    assert_eq!(listed[1]["user_agent"], "Laptop/1.0");
    assert_eq!(listed[1]["current"], true);
    assert_eq!(listed[1]["id"], app.session_id(&laptop.access).await);
    assert_eq!(
        listed[0]["created_at"].as_i64().expect("created_at")
            - listed[1]["created_at"].as_i64().expect("created_at"),
        30
    );
    for session in &listed {
        assert_eq!(session["client_address"], "127.0.0.1");
        assert_eq!(session["refreshed_at"], Value::Null, "never refreshed yet");
    }

    // A refresh shows as the phone's "last refreshed", at the clock's time.
    app.clock.advance(60);
    assert_eq!(app.refresh(&phone.refresh).await.status(), StatusCode::OK);
    let listed = app.sessions(&phone.access).await;
    assert_eq!(listed[0]["refreshed_at"], app.auth.now());
    assert_eq!(listed[0]["current"], true);
    assert_eq!(listed[1]["refreshed_at"], Value::Null);
}

#[tokio::test]
async fn another_users_session_id_answers_404_and_that_session_lives_on() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let alices = app.session_id(&alice.access).await;

    let response = app
        .delete_authed(&mallory.access, &format!("/v1/sessions/{alices}"))
        .await;
    assert_problem(response, StatusCode::NOT_FOUND, "not-found").await;
    // The same answer as for an id that does not exist at all.
    let response = app
        .delete_authed(&mallory.access, "/v1/sessions/no-such-session")
        .await;
    assert_problem(response, StatusCode::NOT_FOUND, "not-found").await;

    assert_eq!(app.works(&alice).await, (true, true));
    assert!(!app.auth.is_revoked(&alices));
}

#[tokio::test]
async fn ending_one_session_refuses_its_tokens_at_once_and_spares_the_others() {
    let app = spawn_app().await;
    let laptop = app.user("alice").await;
    let stolen = app.login("alice").await;
    let stolen_id = app.session_id(&stolen.access).await;

    let response = app
        .delete_authed(&laptop.access, &format!("/v1/sessions/{stolen_id}"))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.works(&stolen).await, (false, false));
    assert_eq!(app.works(&laptop).await, (true, true));
    // Ended is ended: a second try finds no such session.
    let response = app
        .delete_authed(&laptop.access, &format!("/v1/sessions/{stolen_id}"))
        .await;
    assert_problem(response, StatusCode::NOT_FOUND, "not-found").await;
}

#[tokio::test]
async fn ending_every_other_session_keeps_this_one_and_ending_all_ends_it_too() {
    let app = spawn_app().await;
    let this = app.user("alice").await;
    let others = [app.login("alice").await, app.login("alice").await];
    let bobs = app.user("bob").await;

    let response = app.delete_authed(&this.access, "/v1/sessions/others").await;
    assert_eq!(ended(response).await, 2);
    for other in &others {
        assert_eq!(app.works(other).await, (false, false));
    }
    assert_eq!(app.me(&this.access).await.status(), StatusCode::OK);
    assert_eq!(app.sessions(&this.access).await.len(), 1);
    assert_eq!(
        app.works(&bobs).await,
        (true, true),
        "bob's are not alice's"
    );

    let second = app.login("alice").await;
    let response = app.delete_authed(&this.access, "/v1/sessions").await;
    assert_eq!(ended(response).await, 2);
    assert_eq!(
        app.me(&this.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.works(&second).await, (false, false));
}

#[tokio::test]
async fn a_password_change_ends_every_other_session_but_not_this_one() {
    let app = spawn_app().await;
    let this = app.user("alice").await;
    let other = app.login("alice").await;

    let response = app
        .post_authed(
            &this.access,
            "/v1/account/password",
            json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD }),
        )
        .await;
    assert_eq!(ended(response).await, 1);
    assert_eq!(app.works(&other).await, (false, false));
    assert_eq!(app.works(&this).await, (true, true), "this session stays");
    assert_eq!(
        app.try_login("alice", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.try_login("alice", NEW_PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_new_password_is_checked_like_a_signups() {
    let app = spawn_app().await;
    let this = app.user("alice").await;
    let response = app
        .post_authed(
            &this.access,
            "/v1/account/password",
            json!({ "current_password": PASSWORD, "new_password": "short" }),
        )
        .await;
    let body = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "new_password");
    assert_eq!(
        app.try_login("alice", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_wrong_current_password_changes_nothing_and_counts_against_the_login_throttle() {
    let app = spawn_with(Options {
        throttle: ThrottleConfig {
            account: None,
            account_address: Some(Rate {
                attempts: 2,
                period_secs: 600,
            }),
            address: None,
            signup: None,
            ..ThrottleConfig::default()
        },
        ..Options::default()
    })
    .await;
    let this = app.user("alice").await;
    let other = app.login("alice").await;
    for guess in ["guess one", "guess two"] {
        let response = app
            .post_authed(
                &this.access,
                "/v1/account/password",
                json!({ "current_password": guess, "new_password": NEW_PASSWORD }),
            )
            .await;
        assert_problem(response, StatusCode::FORBIDDEN, "wrong-password").await;
    }
    // The guesses spent the account's failed-login allowance from this address: neither
    // this route nor the login is a way around it, even with the right password now.
    let response = app
        .post_authed(
            &this.access,
            "/v1/account/delete",
            json!({ "password": PASSWORD }),
        )
        .await;
    assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "too-many-attempts").await;
    assert_eq!(
        app.try_login("alice", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Nothing changed: both sessions live, the password is the old one.
    assert_eq!(app.works(&this).await, (true, true));
    assert_eq!(app.works(&other).await, (true, true));
    app.clock.advance(600);
    assert_eq!(
        app.try_login("alice", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_deleted_account_cannot_log_in_its_tokens_are_refused_and_its_messages_stay() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let alices_phone = app.login("alice").await;
    let bob = app.user("bob").await;
    let room = app.room(&bob.access, "general").await;
    assert_eq!(
        app.join(&alice.access, &room).await.status(),
        StatusCode::OK
    );
    for (who, text) in [(&bob, "hi"), (&alice, "bye"), (&bob, "see you")] {
        let response = app
            .post_message(&who.access, &room, text, &herd_identity::random_id())
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    let response = app
        .post_authed(
            &alice.access,
            "/v1/account/delete",
            json!({ "password": "not it" }),
        )
        .await;
    assert_problem(response, StatusCode::FORBIDDEN, "wrong-password").await;
    assert_eq!(app.works(&alices_phone).await, (true, true));

    let response = app
        .post_authed(
            &alice.access,
            "/v1/account/delete",
            json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.works(&alice).await, (false, false));
    assert_eq!(app.works(&alices_phone).await, (false, false));
    assert_problem(
        app.try_login("alice", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
    )
    .await;
    // The name stays taken: nobody can pass for the author of alice's messages.
    assert_problem(
        app.signup("alice", PASSWORD).await,
        StatusCode::CONFLICT,
        "username-taken",
    )
    .await;

    // Her message stays where it was, its author shown as deleted, seqs without a gap.
    let page: Value = app
        .get_authed(&bob.access, &format!("/v1/rooms/{room}/messages?after=0"))
        .await
        .json()
        .await
        .expect("json");
    let messages = page["messages"].as_array().expect("messages");
    let seqs: Vec<i64> = messages.iter().filter_map(|m| m["seq"].as_i64()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(messages[1]["body"], "bye");
    assert_eq!(messages[1]["author"], "[deleted]");
    assert_eq!(messages[0]["author"], "bob");
}

#[tokio::test]
async fn a_session_ended_on_one_replica_is_refused_by_the_other_before_the_answer() {
    let app = spawn_with(Options {
        bus: TestBus::InProcess(herd_bus::Bus::in_process()),
        ..Options::default()
    })
    .await;
    let peer = app.spawn_peer("test-b").await;
    let this = app.user("alice").await;
    let others = [app.login("alice").await, app.login("alice").await];
    for other in &others {
        assert_eq!(peer.me(&other.access).await.status(), StatusCode::OK);
    }
    let response = app.delete_authed(&this.access, "/v1/sessions/others").await;
    // The answer waited for the peer's confirmation, as logout's does (read-your-logout).
    assert!(
        response.headers().get("herd-unconfirmed").is_none(),
        "the peer did not confirm: {:?}",
        response.headers().get("herd-unconfirmed")
    );
    assert_eq!(ended(response).await, 2);
    for other in &others {
        assert_eq!(
            peer.me(&other.access).await.status(),
            StatusCode::UNAUTHORIZED,
            "the peer still accepts a session ended before the answer"
        );
    }
    assert_eq!(peer.me(&this.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn under_a_stateful_strategy_the_account_routes_say_they_are_not_supported() {
    let app = spawn_with(Options {
        strategy: Strategy::Memory,
        ..Options::default()
    })
    .await;
    let session = app.user("alice").await;
    assert_problem(
        app.get_authed(&session.access, "/v1/sessions").await,
        StatusCode::BAD_REQUEST,
        "accounts-not-supported",
    )
    .await;
    assert_problem(
        app.delete_authed(&session.access, "/v1/sessions/others")
            .await,
        StatusCode::BAD_REQUEST,
        "accounts-not-supported",
    )
    .await;
    let response = app
        .post_authed(
            &session.access,
            "/v1/account/password",
            json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD }),
        )
        .await;
    assert_problem(response, StatusCode::BAD_REQUEST, "accounts-not-supported").await;
    // Nothing was checked or changed.
    assert_eq!(app.me(&session.access).await.status(), StatusCode::OK);
    assert_eq!(
        app.try_login("alice", PASSWORD).await.status(),
        StatusCode::OK
    );
}
