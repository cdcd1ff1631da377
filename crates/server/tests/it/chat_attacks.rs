//! Live chat and rooms under attack: each test does what an attacker would, and shows
//! that the promise of `docs/security.md` holds.

use std::time::Duration;

use herd_identity::Strategy;
use herd_server::chat::ChatLimits;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_problem, spawn_with, Options, TestApp, TestBus, Timeouts, TIMEOUTS};
use crate::replicas::{on_database, Db};
use crate::ws::{End, PATIENCE};

fn options(chat: ChatLimits) -> Options {
    Options {
        chat,
        ..Options::default()
    }
}

#[tokio::test]
async fn sockets_that_never_read_under_a_flood_are_dropped_and_a_reader_misses_nothing() {
    const STUCK: usize = 20;
    // 6 MB for each socket: more than the kernel buffers on loopback (whose 64 KiB
    // segments let the server's send buffer grow to 4 MiB) and the queue together.
    const N: i64 = 1600;
    const POSTERS: i64 = 4;
    let app = spawn_with(options(ChatLimits {
        sends_per_second: 100_000,
        write_timeout: Duration::from_secs(2),
        ..ChatLimits::default()
    }))
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mallory = app.user("mallory").await;
    let room = app.room(&alice.access, "flood").await;
    app.join(&bob.access, &room).await;
    app.join(&mallory.access, &room).await;

    let mut stuck = Vec::new();
    for _ in 0..STUCK {
        let mut socket = app.ws_small_buffer(&mallory.access).await;
        socket.subscribe(&room, 0).await;
        socket.next_of("subscribed").await;
        stuck.push(socket);
    }
    let mut reader = app.ws(&bob.access).await;
    reader.subscribe(&room, 0).await;
    reader.next_of("subscribed").await;

    let flood: Vec<_> = (0..POSTERS)
        .map(|poster| {
            let (url, token, room) = (app.url(""), alice.access.clone(), room.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let body = "x".repeat(3900);
                for i in (1..=N).filter(|i| i % POSTERS == poster) {
                    let response = client
                        .post(format!("{url}/v1/rooms/{room}/messages"))
                        .bearer_auth(&token)
                        .json(&json!({ "body": body, "client_id": format!("f{i}") }))
                        .send()
                        .await
                        .expect("send");
                    assert_eq!(response.status(), StatusCode::CREATED);
                }
            })
        })
        .collect();
    let mut received = Vec::new();
    while received.last() != Some(&N) {
        match reader.next().await {
            Ok(frame) if frame["type"] == "message" => {
                received.push(frame["seq"].as_i64().expect("seq"))
            }
            Ok(_) => {}
            Err(end) => panic!("the reading subscriber was closed: {end:?}"),
        }
    }
    for poster in flood {
        poster.await.expect("flood");
    }
    assert_eq!(received, (1..=N).collect::<Vec<_>>(), "every seq, in order");

    // The stuck sockets, which still read nothing, are gone from the replica: only the
    // reader's is open.
    tokio::time::timeout(PATIENCE, app.state.until_ws_open_at_most(1))
        .await
        .expect("every socket that never read was dropped");
    assert_eq!(app.state.open_connections(), 1);
    drop(stuck);
}

#[tokio::test]
async fn one_user_cannot_take_every_connection() {
    let app = spawn_with(options(ChatLimits {
        max_connections_per_user: 2,
        ..ChatLimits::default()
    }))
    .await;
    let mallory = app.user("mallory").await;
    let _first = app.ws(&mallory.access).await;
    let _second = app.ws(&mallory.access).await;
    let refused = app
        .ws_raw(Some(&mallory.access), None)
        .await
        .err()
        .expect("a third connection is refused");
    assert_eq!(refused, 429);

    // Through an auth frame, the same limit, as a close.
    let mut socket = app.ws_raw(None, None).await.expect("upgrade");
    socket
        .send(json!({ "type": "auth", "token": mallory.access }))
        .await;
    assert_eq!(socket.closed().await, End::Closed(4009));

    // Another user is not charged for Mallory's.
    let alice = app.user("alice").await;
    app.ws(&alice.access).await;
}

#[tokio::test]
async fn sockets_that_never_authenticate_cannot_take_the_authenticated_ones_places() {
    let app = spawn_with(options(ChatLimits {
        max_connections: 1,
        max_unauthenticated: 2,
        ..ChatLimits::default()
    }))
    .await;
    let _silent: Vec<_> = [
        app.ws_raw(None, None).await.expect("upgrade"),
        app.ws_raw(None, None).await.expect("upgrade"),
    ]
    .into();
    assert_eq!(app.ws_raw(None, None).await.err(), Some(503));
    let alice = app.user("alice").await;
    app.ws(&alice.access).await;
}

#[tokio::test]
async fn a_socket_stops_delivering_a_room_its_user_left_on_any_replica() {
    let bus = herd_bus::Bus::in_process();
    let a = spawn_with(Options {
        bus: TestBus::InProcess(bus),
        ..Options::default()
    })
    .await;
    let b = a.spawn_peer("test-b").await;
    let alice = a.user("alice").await;
    let bob = a.user("bob").await;
    let room = a.room(&alice.access, "secret").await;
    a.join(&bob.access, &room).await;
    let mut on_a = a.ws(&bob.access).await;
    let mut on_b = b.ws(&bob.access).await;
    for socket in [&mut on_a, &mut on_b] {
        socket.subscribe(&room, 0).await;
        socket.next_of("subscribed").await;
    }

    let left = a
        .post_authed(&bob.access, &format!("/v1/rooms/{room}/leave"), json!({}))
        .await;
    assert_eq!(left.status(), StatusCode::OK);
    for socket in [&mut on_a, &mut on_b] {
        let ended = socket.next().await.expect("a frame");
        assert_eq!(
            (ended["type"].as_str(), ended["room"].as_str()),
            (Some("unsubscribed"), Some(room.as_str()))
        );
    }
    // What Alice posts now reaches neither socket: the next frame each gets is the
    // answer to a frame sent after the post.
    let posted = a.post_message(&alice.access, &room, "after", "p1").await;
    assert_eq!(posted.status(), StatusCode::CREATED);
    for socket in [&mut on_a, &mut on_b] {
        socket.subscribe(&room, 0).await;
        let next = socket.next().await.expect("a frame");
        assert_eq!(next["code"], "not-a-member", "{next}");
    }
}

/// A NUL in every field a client can put one, over both transports: each is refused
/// with a 4xx (or its WebSocket error), never a 500 or "internal, retry".
async fn nul_everywhere_is_refused(app: &TestApp) {
    let alice = app.user("alice").await;
    let room = app.room(&alice.access, "nul").await;

    let body = app
        .post_message(&alice.access, &room, "a\u{0}b", "c1")
        .await;
    assert_problem(body, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    let client_id = app.post_message(&alice.access, &room, "ok", "c\u{0}").await;
    assert_problem(
        client_id,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    )
    .await;
    let name = app
        .post_authed(&alice.access, "/v1/rooms", json!({ "name": "a\u{0}b" }))
        .await;
    assert_problem(name, StatusCode::UNPROCESSABLE_ENTITY, "validation-failed").await;
    for path in ["/v1/rooms/%00/join", "/v1/rooms/%00/leave"] {
        let response = app.post_authed(&alice.access, path, json!({})).await;
        assert_problem(response, StatusCode::NOT_FOUND, "not-found").await;
    }
    let post = app.post_message(&alice.access, "%00", "hi", "c2").await;
    assert_problem(post, StatusCode::NOT_FOUND, "not-found").await;
    let history = app
        .get_authed(&alice.access, "/v1/rooms/%00/messages")
        .await;
    assert_problem(history, StatusCode::NOT_FOUND, "not-found").await;

    let mut socket = app.ws(&alice.access).await;
    socket
        .send(json!({ "type": "send", "room": room, "body": "a\u{0}b", "client_id": "w1" }))
        .await;
    assert_eq!(socket.next_of("error").await["code"], "validation-failed");
    socket
        .send(json!({ "type": "send", "room": "\u{0}", "body": "hi", "client_id": "w2" }))
        .await;
    assert_eq!(socket.next_of("error").await["code"], "not-found");
    socket.subscribe("\u{0}", 0).await;
    assert_eq!(socket.next_of("error").await["code"], "not-found");
}

#[tokio::test]
async fn a_nul_in_a_body_a_name_or_a_room_id_is_refused_at_the_edge() {
    nul_everywhere_is_refused(&spawn_with(Options::default()).await).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set HERD_TEST_POSTGRES"]
async fn a_nul_on_postgres_is_refused_not_a_500() {
    on_database(Db::Postgres, |database| async move {
        let app = crate::helpers::spawn_on_database(database, Options::default()).await;
        nul_everywhere_is_refused(&app).await;
    })
    .await;
}

#[tokio::test]
async fn a_body_of_control_characters_is_refused_alike_on_both_transports() {
    let app = spawn_with(Options::default()).await;
    let alice = app.user("alice").await;
    let room = app.room(&alice.access, "ctl").await;
    let body = "\u{1}".repeat(4000);

    let over_http = app.post_message(&alice.access, &room, &body, "c1").await;
    assert_problem(
        over_http,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
    )
    .await;
    let mut socket = app.ws(&alice.access).await;
    socket
        .send(json!({ "type": "send", "room": room, "body": body, "client_id": "c2" }))
        .await;
    assert_eq!(socket.next_of("error").await["code"], "validation-failed");

    // Invisible or reordering room names are refused: two rooms cannot look alike.
    for name in ["\u{feff}", "\u{200b}", "abc\u{202e}def"] {
        let response = app
            .post_authed(&alice.access, "/v1/rooms", json!({ "name": name }))
            .await;
        assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        )
        .await;
    }
}

#[tokio::test]
async fn the_largest_valid_body_fits_a_frame_however_it_is_escaped() {
    let app = spawn_with(Options::default()).await;
    let alice = app.user("alice").await;
    let room = app.room(&alice.access, "big").await;
    let mut socket = app.ws(&alice.access).await;
    // 4,000 characters outside the Basic Multilingual Plane, each written as a
    // surrogate pair of \u escapes (as encoders that escape all but ASCII do).
    let escaped = "\\ud83d\\ude00".repeat(4000);
    let frame = format!(r#"{{"type":"send","room":"{room}","body":"{escaped}","client_id":"e1"}}"#);
    socket.send_raw(frame).await;
    let ack = socket.next_of("ack").await;
    assert_eq!(ack["client_id"], "e1");
}

#[tokio::test]
async fn http_posts_share_the_send_limit_of_the_websocket() {
    let app = spawn_with(options(ChatLimits {
        sends_per_second: 2,
        ..ChatLimits::default()
    }))
    .await;
    let alice = app.user("alice").await;
    let room = app.room(&alice.access, "limited").await;
    let mut socket = app.ws(&alice.access).await;
    socket.say(&room, "one", "c1").await;
    let second = app.post_message(&alice.access, &room, "two", "c2").await;
    assert_eq!(second.status(), StatusCode::CREATED);

    // The clock does not move: both transports are over the limit now.
    let third = app.post_message(&alice.access, &room, "three", "c3").await;
    let retry_after = third.headers().get("retry-after").cloned();
    assert_problem(third, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    assert_eq!(
        retry_after.as_ref().and_then(|v| v.to_str().ok()),
        Some("1")
    );
    socket
        .send(json!({ "type": "send", "room": room, "body": "four", "client_id": "c4" }))
        .await;
    assert_eq!(socket.next_of("error").await["code"], "rate-limited");

    // Another user is not charged for Alice's.
    let bob = app.user("bob").await;
    app.join(&bob.access, &room).await;
    let response = app.post_message(&bob.access, &room, "hi", "b1").await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn room_creation_is_limited_per_user() {
    let app = spawn_with(options(ChatLimits {
        rooms_per_minute: 2,
        ..ChatLimits::default()
    }))
    .await;
    let alice = app.user("alice").await;
    app.room(&alice.access, "one").await;
    app.room(&alice.access, "two").await;
    let third = app
        .post_authed(&alice.access, "/v1/rooms", json!({ "name": "three" }))
        .await;
    assert!(third.headers().contains_key("retry-after"));
    assert_problem(third, StatusCode::TOO_MANY_REQUESTS, "too-many-rooms").await;
    let bob = app.user("bob").await;
    app.room(&bob.access, "bob's").await;

    app.clock.advance(60);
    app.room(&alice.access, "three").await;
}

#[tokio::test]
async fn a_flood_of_frames_on_one_socket_closes_it() {
    let app = spawn_with(options(ChatLimits {
        frames_per_second: 5,
        ..ChatLimits::default()
    }))
    .await;
    let alice = app.user("alice").await;
    let mut socket = app.ws(&alice.access).await;
    let missing = "00000000-0000-4000-8000-000000000000";
    for _ in 0..1000 {
        socket
            .send_raw(json!({ "type": "subscribe", "room": missing, "since": 0 }).to_string())
            .await;
    }
    assert_eq!(socket.closed().await, End::Closed(1008));
}

/// A socket authenticated by a session outlives neither of its timeouts.
async fn a_session_socket_is_closed_when(strategy: Strategy, sessions: Timeouts) {
    let app = spawn_with(Options {
        strategy,
        sessions,
        ..Options::default()
    })
    .await;
    let alice = app.user("alice").await;
    let mut socket = app.ws(&alice.access).await;
    assert_eq!(socket.closed().await, End::Closed(4002));
}

#[tokio::test]
async fn a_shared_session_socket_ends_at_the_sessions_idle_timeout() {
    let idle = Timeouts {
        idle: 1,
        ..TIMEOUTS
    };
    a_session_socket_is_closed_when(Strategy::Shared, idle).await;
    a_session_socket_is_closed_when(Strategy::Memory, idle).await;
}

#[tokio::test]
async fn a_shared_session_socket_ends_at_the_sessions_absolute_timeout() {
    let absolute = Timeouts {
        absolute: 1,
        ..TIMEOUTS
    };
    a_session_socket_is_closed_when(Strategy::Shared, absolute).await;
    a_session_socket_is_closed_when(Strategy::Memory, absolute).await;
}
