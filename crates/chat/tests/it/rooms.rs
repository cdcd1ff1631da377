//! Rooms, membership, posting and history.

use herd_chat::{ChatError, ClientId, MessageBody, PageSize, RoomId, Seq};

use crate::harness::{post, seqs, TestChat, NOW};

#[tokio::test]
async fn a_room_is_created_with_its_creator_as_member_and_listed_by_name() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let bob = t.user("bob").await;
    let zeta = t.room(&ada, "  zeta ").await;
    let alpha = t.room(&ada, "alpha").await;
    t.room(&bob, "bob's").await;
    assert_eq!(zeta.name.as_str(), "zeta", "stored trimmed");
    assert_eq!(zeta.created_by, ada);
    assert_eq!(zeta.created_at, NOW);
    assert_eq!(zeta.last_seq, Seq::ZERO);
    assert_ne!(zeta.id, alpha.id);
    let mine = t.chat.rooms_of(&ada).await.expect("rooms");
    let names: Vec<&str> = mine.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["alpha", "zeta"]);
}

#[tokio::test]
async fn joining_and_leaving_say_whether_anything_changed() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let bob = t.user("bob").await;
    let room = t.room(&ada, "general").await;
    assert!(t.chat.join(&bob, &room.id).await.expect("join"));
    assert!(!t.chat.join(&bob, &room.id).await.expect("join again"));
    assert!(t.chat.leave(&bob, &room.id).await.expect("leave"));
    assert!(!t.chat.leave(&bob, &room.id).await.expect("leave again"));
    let nowhere = RoomId::new("no-such-room");
    assert!(matches!(
        t.chat.join(&bob, &nowhere).await,
        Err(ChatError::NoSuchRoom)
    ));
    assert!(matches!(
        t.chat.leave(&bob, &nowhere).await,
        Err(ChatError::NoSuchRoom)
    ));
}

#[tokio::test]
async fn only_members_post_read_or_follow() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let eve = t.user("eve").await;
    let room = t.room(&ada, "general").await;
    let body = || MessageBody::parse("hi").expect("body");
    let cid = || ClientId::parse("c1").expect("client id");
    let posted = t.chat.post(&eve, &room.id, body(), cid()).await;
    assert!(matches!(posted, Err(ChatError::NotAMember)), "{posted:?}");
    let read = t
        .chat
        .history(&eve, &room.id, Seq::ZERO, PageSize::DEFAULT)
        .await;
    assert!(matches!(read, Err(ChatError::NotAMember)), "{read:?}");
    let follow = t.chat.follow(&eve, &room.id, Seq::ZERO).await;
    assert!(matches!(follow, Err(ChatError::NotAMember)), "{follow:?}");
    let nowhere = RoomId::new("no-such-room");
    let posted = t.chat.post(&ada, &nowhere, body(), cid()).await;
    assert!(matches!(posted, Err(ChatError::NoSuchRoom)), "{posted:?}");
    let follow = t.chat.follow(&ada, &nowhere, Seq::ZERO).await;
    assert!(matches!(follow, Err(ChatError::NoSuchRoom)), "{follow:?}");
}

#[tokio::test]
async fn a_post_is_stored_with_the_next_seq_before_it_returns() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let room = t.room(&ada, "general").await;
    let first = t.post(&ada, &room.id, "hello", "c-1").await;
    let second = t.post(&ada, &room.id, "again", "c-2").await;
    assert!(!first.duplicate);
    assert_eq!(first.message.seq.get(), 1);
    assert_eq!(second.message.seq.get(), 2);
    assert_eq!(first.message.author, "ada");
    assert_eq!(first.message.author_id, ada);
    assert_eq!(first.message.created_at, NOW);
    // Another replica over the same store reads it at once.
    let page = t
        .unheard()
        .history(&ada, &room.id, Seq::ZERO, PageSize::DEFAULT)
        .await
        .expect("history");
    assert_eq!(page.messages, [first.message, second.message]);
}

#[tokio::test]
async fn a_retried_post_returns_the_first_and_announces_nothing() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let room = t.room(&ada, "general").await;
    let mut live = t.bus.subscribe(&format!("room:{}", room.id)).await;
    let first = t.post(&ada, &room.id, "hello", "c-1").await;
    let retry = t.post(&ada, &room.id, "a different body", "c-1").await;
    assert!(retry.duplicate);
    assert_eq!(retry.message, first.message, "the original is kept");
    let other = t.post(&ada, &room.id, "next", "c-2").await;
    assert_eq!(other.message.seq.get(), 2, "the retry took no seq");
    // The bus heard the first and the third, not the retry.
    let mut heard = Vec::new();
    for _ in 0..2 {
        match live.recv().await {
            Some(herd_bus::Delivery::Message { payload, .. }) => {
                let m: herd_chat::Message = serde_json::from_slice(&payload).expect("a message");
                heard.push(m);
            }
            other => panic!("expected an announcement, got {other:?}"),
        }
    }
    assert_eq!(heard, [first.message, other.message]);
}

#[tokio::test]
async fn history_comes_in_pages_with_a_cursor() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let room = t.room(&ada, "general").await;
    for i in 0..5 {
        t.post(&ada, &room.id, &format!("m{i}"), &format!("c{i}"))
            .await;
    }
    let size = PageSize::new(2).expect("a page size");
    let mut after = Seq::ZERO;
    let mut pages = Vec::new();
    loop {
        let page = t
            .chat
            .history(&ada, &room.id, after, size)
            .await
            .expect("history");
        if page.messages.is_empty() {
            assert_eq!(page.next_after, after, "past the end the cursor stays");
            break;
        }
        after = page.next_after;
        pages.push(seqs(&page.messages));
    }
    assert_eq!(pages, [vec![1, 2], vec![3, 4], vec![5]]);
}

#[tokio::test]
async fn seqs_are_per_room() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let one = t.room(&ada, "one").await;
    let two = t.room(&ada, "two").await;
    post(&t.chat, &ada, &one.id, "a", "c1").await;
    let in_two = post(&t.chat, &ada, &two.id, "b", "c1").await;
    assert_eq!(in_two.message.seq.get(), 1);
    assert!(!in_two.duplicate, "a client id is per room");
}

#[tokio::test]
async fn a_user_who_posts_or_creates_rooms_too_fast_is_refused_and_others_are_not() {
    let t = TestChat::start().await;
    let chat = t.chat.clone().with_limits(herd_chat::Limits {
        posts_per_second: 2,
        rooms_per_minute: 1,
    });
    let ada = t.user("ada").await;
    let bob = t.user("bob").await;
    let name = || herd_chat::RoomName::parse("r").expect("a name");
    let room = chat.create_room(&ada, name()).await.expect("a room");
    assert!(matches!(
        chat.create_room(&ada, name()).await,
        Err(ChatError::TooManyRooms { retry_after }) if (1..=60).contains(&retry_after)
    ));
    chat.create_room(&bob, name()).await.expect("bob's room");
    chat.join(&bob, &room.id).await.expect("join");
    post(&chat, &ada, &room.id, "1", "c1").await;
    post(&chat, &ada, &room.id, "2", "c2").await;
    let body = herd_chat::MessageBody::parse("3").expect("a body");
    let client_id = herd_chat::ClientId::parse("c3").expect("a client id");
    assert!(matches!(
        chat.post(&ada, &room.id, body, client_id).await,
        Err(ChatError::TooManyPosts { retry_after: 1 })
    ));
    post(&chat, &bob, &room.id, "b", "b1").await;
}
