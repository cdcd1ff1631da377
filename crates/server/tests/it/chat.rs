//! Live chat over WebSocket: resume with no gap and no duplicate, on any replica.

use std::time::{Duration, Instant};

use herd_server::chat::ChatLimits;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_with, Options, TestApp, TestBus};
use crate::ws::{End, Socket};

/// Two replicas on one SQLite file with the SQL-tail bus, as `herd cluster` runs them.
async fn two_replicas(chat: ChatLimits) -> (TestApp, TestApp) {
    let a = spawn_with(Options {
        bus: TestBus::Sql,
        chat,
        ..Options::default()
    })
    .await;
    let b = a.spawn_peer("test-b").await;
    (a, b)
}

/// Reads `message` frames of `room` until `until` seq, returning the seqs in order.
async fn read_through(socket: &mut Socket, until: i64) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.last().is_none_or(|s| *s < until) {
        let frame = socket.next_of("message").await;
        seqs.push(frame["seq"].as_i64().expect("seq"));
    }
    seqs
}

#[tokio::test]
async fn subscribe_since_delivers_history_then_live_exactly_once() {
    let app = spawn_with(Options::default()).await;
    let alice = app.user("alice").await;
    let room = app.room(&alice.access, "general").await;
    for i in 1..=3 {
        app.post_message(&alice.access, &room, "before", &format!("h{i}"))
            .await;
    }
    let mut socket = app.ws(&alice.access).await;
    socket.subscribe(&room, 1).await;
    assert_eq!(read_through(&mut socket, 3).await, [2, 3]);
    let subscribed = socket.next_of("subscribed").await;
    assert_eq!(subscribed["last_seq"], 3);

    let ack = socket.say(&room, "live", "l1").await;
    assert_eq!(
        (ack["seq"].as_i64(), ack["duplicate"].as_bool()),
        (Some(4), Some(false))
    );
    let live = socket.next_of("message").await;
    assert_eq!(
        (live["seq"].as_i64(), live["body"].as_str()),
        (Some(4), Some("live"))
    );

    let again = socket.say(&room, "live", "l1").await;
    assert_eq!(
        (again["seq"].as_i64(), again["duplicate"].as_bool()),
        (Some(4), Some(true))
    );
    socket.say(&room, "next", "l2").await;
    assert_eq!(
        socket.next_of("message").await["seq"],
        5,
        "the retry was not delivered twice"
    );
}

#[tokio::test]
async fn a_subscriber_on_one_replica_receives_what_is_sent_through_another() {
    let (a, b) = two_replicas(ChatLimits::default()).await;
    let alice = a.user("alice").await;
    let room = a.room(&alice.access, "general").await;
    let mut on_a = a.ws(&alice.access).await;
    on_a.subscribe(&room, 0).await;
    on_a.next_of("subscribed").await;

    let response = b.post_message(&alice.access, &room, "from b", "x1").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let message = on_a.next_of("message").await;
    assert_eq!(
        (message["body"].as_str(), message["seq"].as_i64()),
        (Some("from b"), Some(1))
    );
}

#[tokio::test]
async fn reconnecting_again_and_again_across_replicas_during_a_flood_misses_nothing() {
    const N: i64 = 300;
    let (a, b) = two_replicas(ChatLimits {
        sends_per_second: 10_000,
        ..ChatLimits::default()
    })
    .await;
    let alice = a.user("alice").await;
    let bob = a.user("bob").await;
    let room = a.room(&alice.access, "flood").await;
    b.join(&bob.access, &room).await;

    // Bob floods through both replicas while Alice keeps reconnecting.
    let flood = {
        let (a_url, b_url) = (a.url(""), b.url(""));
        let (token, room) = (bob.access.clone(), room.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 1..=N {
                let base = if i % 2 == 0 { &a_url } else { &b_url };
                let response = client
                    .post(format!("{base}/v1/rooms/{room}/messages"))
                    .bearer_auth(&token)
                    .json(&json!({ "body": format!("m{i}"), "client_id": format!("f{i}") }))
                    .send()
                    .await
                    .expect("send");
                assert!(response.status().is_success());
            }
        })
    };

    let mut received: Vec<i64> = Vec::new();
    let mut round = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.last().copied().unwrap_or(0) < N {
        assert!(
            Instant::now() < deadline,
            "the subscriber never caught up: {} of {N}",
            received.len()
        );
        let replica = if round % 2 == 0 { &a } else { &b };
        round += 1;
        let mut socket = replica.ws(&alice.access).await;
        socket
            .subscribe(&room, received.last().copied().unwrap_or(0))
            .await;
        // Take a handful of messages, then drop the connection mid-stream.
        for _ in 0..25 {
            match socket.next().await {
                Ok(frame) if frame["type"] == "message" => {
                    received.push(frame["seq"].as_i64().expect("seq"))
                }
                Ok(_) => {}
                Err(end) => panic!("connection ended: {end:?}"),
            }
            if received.last() == Some(&N) {
                break;
            }
        }
        socket.close().await;
    }
    flood.await.expect("flood");
    assert!(round > 3, "the test reconnected {round} times");
    assert_eq!(
        received,
        (1..=N).collect::<Vec<_>>(),
        "every seq exactly once, in order"
    );
}

#[tokio::test]
async fn a_logout_closes_the_sessions_sockets_on_every_replica_within_a_second() {
    let (a, b) = two_replicas(ChatLimits::default()).await;
    let alice = a.user("alice").await;
    let mut on_b = b.ws(&alice.access).await;
    let started = Instant::now();
    assert_eq!(
        a.logout(&alice.access).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(on_b.closed().await, End::Closed(4003));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_server_asks_for_a_fresh_token_and_closes_without_one() {
    let app = spawn_with(Options {
        access_ttl: 2,
        chat: ChatLimits {
            reauth_before: Duration::from_secs(1),
            ..ChatLimits::default()
        },
        ..Options::default()
    })
    .await;
    let alice = app.user("alice").await;

    let mut answering = app.ws(&alice.access).await;
    let mut silent = app.ws(&alice.access).await;
    let ask = answering.next_of("reauth").await;
    assert!(ask["expires_at"].is_i64());
    let fresh = app.login("alice").await;
    answering
        .send(json!({ "type": "reauth", "token": fresh.access }))
        .await;
    answering.next_of("reauthed").await;

    silent.next_of("reauth").await;
    assert_eq!(
        silent.closed().await,
        End::Closed(4002),
        "no fresh token: closed once the old expired"
    );

    let bob = app.user("bob").await;
    answering
        .send(json!({ "type": "reauth", "token": bob.access }))
        .await;
    let refused = answering.next_of("error").await;
    assert_eq!(
        refused["code"], "reauth-failed",
        "a token of another user is refused"
    );
}

#[tokio::test]
async fn a_slow_consumer_is_told_to_resume_and_loses_nothing() {
    const N: i64 = 1000;
    let app = spawn_with(Options {
        chat: ChatLimits {
            outbound_queue: 4,
            // The flood is one user's, and this client reads again once it is over:
            // neither the send limit nor the write deadline (which would drop the socket
            // without a close frame) is what this test is about.
            sends_per_second: 100_000,
            write_timeout: Duration::from_secs(600),
            ..ChatLimits::default()
        },
        ..Options::default()
    })
    .await;
    let alice = app.user("alice").await;
    let room = app.room(&alice.access, "big").await;
    let mut socket = app.ws(&alice.access).await;
    socket.subscribe(&room, 0).await;
    socket.next_of("subscribed").await;

    // Live messages arrive while the client reads nothing: the socket's buffers fill,
    // then its queue, and the server gives up on it rather than buffer without bound.
    let big = "x".repeat(4000);
    for i in 1..=N {
        let response = app
            .post_message(&alice.access, &room, &big, &format!("b{i}"))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let mut received = Vec::new();
    let end = loop {
        match socket.next().await {
            Ok(frame) if frame["type"] == "message" => {
                received.push(frame["seq"].as_i64().expect("seq"))
            }
            Ok(_) => {}
            Err(end) => break end,
        }
    };
    assert_eq!(end, End::Closed(4008));
    assert!(
        (received.len() as i64) < N,
        "the queue overflowed before the end"
    );

    // Resuming from the last seq received, on a fresh connection, misses nothing: history
    // is read at the client's pace.
    let mut resumed = app.ws(&alice.access).await;
    resumed
        .subscribe(&room, received.last().copied().unwrap_or(0))
        .await;
    received.extend(read_through(&mut resumed, N).await);
    assert_eq!(received, (1..=N).collect::<Vec<_>>());
}

#[tokio::test]
async fn limits_answer_with_clear_errors() {
    let app = spawn_with(Options {
        chat: ChatLimits {
            max_subscriptions: 1,
            sends_per_second: 2,
            max_frame_bytes: 2048,
            ..ChatLimits::default()
        },
        ..Options::default()
    })
    .await;
    let alice = app.user("alice").await;
    let one = app.room(&alice.access, "one").await;
    let two = app.room(&alice.access, "two").await;
    let mut socket = app.ws(&alice.access).await;

    socket.subscribe(&one, 0).await;
    socket.next_of("subscribed").await;
    socket.subscribe(&two, 0).await;
    assert_eq!(
        socket.next_of("error").await["code"],
        "too-many-subscriptions"
    );

    socket.say(&one, "a", "r1").await;
    socket.say(&one, "b", "r2").await;
    socket
        .send(json!({ "type": "send", "room": one, "body": "c", "client_id": "r3" }))
        .await;
    let limited = socket.next_of("error").await;
    assert_eq!(
        (limited["code"].as_str(), limited["client_id"].as_str()),
        (Some("rate-limited"), Some("r3"))
    );

    socket
        .send(json!({ "type": "send", "room": one, "body": "", "client_id": "r4" }))
        .await;
    assert_eq!(socket.next_of("error").await["code"], "validation-failed");
    socket.send_raw("not json".into()).await;
    assert_eq!(socket.next_of("error").await["code"], "bad-frame");
    let stranger = app.user("eve").await;
    let mut eve = app.ws(&stranger.access).await;
    eve.subscribe(&one, 0).await;
    assert_eq!(eve.next_of("error").await["code"], "not-a-member");

    socket.send_raw("x".repeat(4096)).await;
    assert_eq!(socket.closed().await, End::Closed(1009));
}

#[tokio::test]
async fn credentials_may_come_in_a_first_frame_and_must_come() {
    let app = spawn_with(Options {
        chat: ChatLimits {
            auth_timeout: Duration::from_millis(300),
            ..ChatLimits::default()
        },
        ..Options::default()
    })
    .await;
    let alice = app.user("alice").await;
    let mut socket = app.ws_raw(None, None).await.expect("upgrade");
    socket
        .send(json!({ "type": "auth", "token": alice.access }))
        .await;
    assert_eq!(socket.next_of("ready").await["replica"], "test-a");

    let mut bad = app.ws_raw(None, None).await.expect("upgrade");
    bad.send(json!({ "type": "auth", "token": "nope" })).await;
    assert_eq!(bad.closed().await, End::Closed(4001));
    let mut silent = app.ws_raw(None, None).await.expect("upgrade");
    assert_eq!(silent.closed().await, End::Closed(4001));
    assert_eq!(app.ws_raw(Some("nope"), None).await.err(), Some(401));
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1012() {
    let mut app = spawn_with(Options::default()).await;
    let alice = app.user("alice").await;
    let mut socket = app.ws(&alice.access).await;
    app.trigger_shutdown();
    assert_eq!(socket.closed().await, End::Closed(1012));
    app.stop().await.expect("stopped");
}

/// Found by the ws_frame fuzz target: serde decoded a JSON array `["send", room, body,
/// client_id]` as a send frame, a spelling outside the protocol.
#[tokio::test]
async fn a_frame_sent_as_a_json_array_is_a_bad_frame_and_sends_nothing() {
    let app = spawn_with(Options::default()).await;
    let alice = app.user("alice").await;
    let room = app.room(&alice.access, "arrays").await;
    let mut socket = app.ws(&alice.access).await;
    socket
        .send_raw(json!(["send", room, "hidden", "a1"]).to_string())
        .await;
    let refused = socket.next_of("error").await;
    assert_eq!(refused["code"], "bad-frame", "{refused}");
    socket
        .send_raw(json!(["subscribe", room, 0]).to_string())
        .await;
    assert_eq!(socket.next_of("error").await["code"], "bad-frame");

    // The connection still works, and the array sent nothing.
    socket.say(&room, "shown", "a2").await;
    assert_eq!(app.history_seqs(&alice.access, &room, 0).await, [1]);
}
