//! Rooms and history over HTTP: stateless, any replica, durable before acknowledged.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn a_room_is_created_joined_listed_and_left() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = app.room(&alice.access, "  general  ").await;

    let mine: Value = app
        .get_authed(&alice.access, "/v1/rooms")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        mine["rooms"][0]["id"],
        room.as_str(),
        "the creator is a member"
    );
    assert_eq!(mine["rooms"][0]["name"], "general", "names are trimmed");
    let theirs: Value = app
        .get_authed(&bob.access, "/v1/rooms")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(theirs["rooms"], json!([]));

    let joined: Value = app
        .join(&bob.access, &room)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(joined["joined"], true);
    let again: Value = app
        .join(&bob.access, &room)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["joined"], false, "joining twice is harmless");

    let path = format!("/v1/rooms/{room}/leave");
    let left: Value = app
        .post_authed(&bob.access, &path, json!({}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(left["left"], true);
    let response = app.post_message(&bob.access, &room, "hi", "c1").await;
    assert_problem(response, StatusCode::FORBIDDEN, "not-a-member").await;
}

#[tokio::test]
async fn unknown_rooms_are_404_and_strangers_403() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let eve = app.user("eve").await;
    let room = app.room(&alice.access, "private").await;
    assert_problem(
        app.join(&alice.access, "no-such-room").await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    let response = app
        .post_message(&alice.access, "no-such-room", "hi", "c1")
        .await;
    assert_problem(response, StatusCode::NOT_FOUND, "not-found").await;
    let response = app
        .get_authed(&eve.access, &format!("/v1/rooms/{room}/messages"))
        .await;
    assert_problem(response, StatusCode::FORBIDDEN, "not-a-member").await;
    let response = app.post_message(&eve.access, &room, "hi", "c1").await;
    assert_problem(response, StatusCode::FORBIDDEN, "not-a-member").await;
    assert_problem(
        app.get("/v1/rooms").await,
        StatusCode::UNAUTHORIZED,
        "invalid-token",
    )
    .await;
}

#[tokio::test]
async fn messages_get_gap_free_seqs_and_a_retry_is_not_a_copy() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let room = app.room(&alice.access, "general").await;

    let first = app.post_message(&alice.access, &room, "hello", "c-1").await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["seq"], 1);
    assert_eq!(first["author"], "alice");
    assert_eq!(first["body"], "hello");

    let retry = app.post_message(&alice.access, &room, "hello", "c-1").await;
    assert_eq!(
        retry.status(),
        StatusCode::OK,
        "the same client_id again is the same message"
    );
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(
        (retry["seq"].clone(), retry["id"].clone()),
        (first["seq"].clone(), first["id"].clone())
    );

    for i in 2..=5 {
        let m: Value = app
            .post_message(&alice.access, &room, "more", &format!("c-{i}"))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(m["seq"], i);
    }
    assert_eq!(
        app.history_seqs(&alice.access, &room, 0).await,
        [1, 2, 3, 4, 5]
    );
}

#[tokio::test]
async fn history_pages_with_a_cursor() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let room = app.room(&alice.access, "general").await;
    for i in 1..=7 {
        app.post_message(&alice.access, &room, &format!("m{i}"), &format!("c{i}"))
            .await;
    }
    let path = format!("/v1/rooms/{room}/messages?after=2&limit=3");
    let page: Value = app
        .get_authed(&alice.access, &path)
        .await
        .json()
        .await
        .expect("json");
    let seqs: Vec<i64> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(page["next_after"], 5);
    assert_eq!(app.history_seqs(&alice.access, &room, 5).await, [6, 7]);
}

#[tokio::test]
async fn bad_bodies_cursors_and_names_are_422() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let room = app.room(&alice.access, "general").await;
    for (body, client_id) in [
        ("", "c1"),
        (&"x".repeat(4001) as &str, "c1"),
        ("ok", ""),
        ("ok", "has space"),
    ] {
        let response = app
            .post_message(&alice.access, &room, body, client_id)
            .await;
        assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        )
        .await;
    }
    let ok = app
        .post_message(&alice.access, &room, &"é".repeat(4000), "c1")
        .await;
    assert_eq!(
        ok.status(),
        StatusCode::CREATED,
        "4000 characters, not bytes"
    );
    for query in ["limit=501", "limit=0", "after=-1", "after=x"] {
        let response = app
            .get_authed(&alice.access, &format!("/v1/rooms/{room}/messages?{query}"))
            .await;
        assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
        )
        .await;
    }
    for name in ["", "   ", &"n".repeat(65)] {
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
