//! Following a room from a seq: history from the store, then live from the bus, each
//! message exactly once and in order, holes and bus gaps filled from the store.

use herd_chat::{Event, Follow, Message, RoomId, Seq, UserId};

use crate::harness::{post, TestChat};

/// The next event, which must come.
async fn next(follow: &mut Follow) -> Event {
    follow
        .next()
        .await
        .expect("the follow goes on")
        .expect("no store error")
}

/// A follow of a room from its start that has said it is caught up: what comes next
/// is news.
async fn caught_up(t: &TestChat, user: &UserId, room: &RoomId) -> Follow {
    let mut follow = t.chat.follow(user, room, Seq::ZERO).await.expect("follow");
    assert!(matches!(next(&mut follow).await, Event::CaughtUp { .. }));
    follow
}

fn stored(event: Event) -> Message {
    match event {
        Event::Stored(m) => m,
        other => panic!("expected a stored message, got {other:?}"),
    }
}

fn live(event: Event) -> Message {
    match event {
        Event::Live(m) => m.into_message(),
        other => panic!("expected a live message, got {other:?}"),
    }
}

#[tokio::test]
async fn history_after_since_then_caught_up_then_live() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let room = t.room(&ada, "general").await;
    for i in 1..=3 {
        t.post(&ada, &room.id, &format!("m{i}"), &format!("c{i}"))
            .await;
    }
    let since = Seq::new(1).expect("a seq");
    let mut follow = t.chat.follow(&ada, &room.id, since).await.expect("follow");
    assert_eq!(follow.room(), &room.id);
    assert_eq!(stored(next(&mut follow).await).seq.get(), 2);
    assert_eq!(stored(next(&mut follow).await).seq.get(), 3);
    assert_eq!(
        next(&mut follow).await,
        Event::CaughtUp {
            last_seq: Seq::new(3).expect("a seq")
        }
    );
    let posted = t.post(&ada, &room.id, "live", "c4").await;
    assert_eq!(live(next(&mut follow).await), posted.message);
}

#[tokio::test]
async fn a_follow_of_an_empty_room_is_caught_up_at_zero() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let room = t.room(&ada, "general").await;
    let mut follow = t
        .chat
        .follow(&ada, &room.id, Seq::ZERO)
        .await
        .expect("follow");
    assert_eq!(
        next(&mut follow).await,
        Event::CaughtUp {
            last_seq: Seq::ZERO
        }
    );
}

#[tokio::test]
async fn history_longer_than_a_page_comes_whole() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let room = t.room(&ada, "general").await;
    // One more than a store read returns, so the follow must read twice.
    for i in 1..=501 {
        t.post(&ada, &room.id, "m", &format!("c{i}")).await;
    }
    let mut follow = t
        .chat
        .follow(&ada, &room.id, Seq::ZERO)
        .await
        .expect("follow");
    for seq in 1..=501 {
        assert_eq!(stored(next(&mut follow).await).seq.get(), seq);
    }
    assert!(matches!(next(&mut follow).await, Event::CaughtUp { .. }));
}

#[tokio::test]
async fn an_announcement_already_read_from_the_store_is_dropped() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let room = t.room(&ada, "general").await;
    let mut follow = t
        .chat
        .follow(&ada, &room.id, Seq::ZERO)
        .await
        .expect("follow");
    // Subscribed by the first `next`; a post between that and the store read would be
    // both in the history and on the bus. Replaying the announcement after the history
    // has been read is the same situation.
    let first = t.post(&ada, &room.id, "one", "c1").await.message;
    assert_eq!(stored(next(&mut follow).await), first);
    assert!(matches!(next(&mut follow).await, Event::CaughtUp { .. }));
    let replayed = serde_json::to_vec(&first).expect("json");
    t.bus
        .publish(&format!("room:{}", room.id), &replayed)
        .await
        .expect("publish");
    let second = t.post(&ada, &room.id, "two", "c2").await.message;
    assert_eq!(
        live(next(&mut follow).await),
        second,
        "seq 1 was not repeated"
    );
}

#[tokio::test]
async fn a_hole_in_the_live_sequence_is_filled_from_the_store() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let room = t.room(&ada, "general").await;
    let mut follow = caught_up(&t, &ada, &room.id).await;
    // Stored, but its announcement never reaches this follower's bus.
    let lost = post(&t.unheard(), &ada, &room.id, "lost", "c1")
        .await
        .message;
    let heard = t.post(&ada, &room.id, "heard", "c2").await.message;
    assert_eq!(stored(next(&mut follow).await), lost);
    assert_eq!(stored(next(&mut follow).await), heard);
    let after = t.post(&ada, &room.id, "after", "c3").await.message;
    assert_eq!(live(next(&mut follow).await), after);
}

#[tokio::test]
async fn a_bus_gap_is_filled_from_the_store() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let room = t.room(&ada, "general").await;
    let mut follow = caught_up(&t, &ada, &room.id).await;
    let missed = post(&t.unheard(), &ada, &room.id, "missed", "c1")
        .await
        .message;
    // More news than a subscription holds, unread: the bus reports a gap. None of it is
    // a message, so only the store can tell the follower what it missed.
    let topic = format!("room:{}", room.id);
    for _ in 0..=herd_bus::CAPACITY {
        t.bus.publish(&topic, b"noise").await.expect("publish");
    }
    assert_eq!(stored(next(&mut follow).await), missed);
    // The noise still fills the subscription, so this may come as another gap and be
    // read from the store: either way it comes next, once.
    let after = t.post(&ada, &room.id, "after", "c2").await.message;
    match next(&mut follow).await {
        Event::Stored(m) => assert_eq!(m, after),
        Event::Live(m) => assert_eq!(m, after),
        other => panic!("expected the next message, got {other:?}"),
    }
}

#[tokio::test]
async fn following_again_from_the_last_seq_resumes_exactly_there() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let room = t.room(&ada, "general").await;
    let mut follow = caught_up(&t, &ada, &room.id).await;
    let seen = t.post(&ada, &room.id, "seen", "c1").await.message;
    assert_eq!(live(next(&mut follow).await), seen);
    drop(follow);
    // Sent while the reader was away, on another replica.
    let away = post(&t.unheard(), &ada, &room.id, "away", "c2")
        .await
        .message;
    let mut again = t
        .unheard()
        .follow(&ada, &room.id, seen.seq)
        .await
        .expect("follow again");
    assert_eq!(stored(next(&mut again).await), away);
    assert_eq!(
        next(&mut again).await,
        Event::CaughtUp { last_seq: away.seq }
    );
}

#[tokio::test]
async fn a_follow_ends_when_its_reader_leaves_the_room() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let bob = t.user("bob").await;
    let room = t.room(&ada, "general").await;
    t.chat.join(&bob, &room.id).await.expect("join");
    let mut bobs = caught_up(&t, &bob, &room.id).await;
    let mut adas = caught_up(&t, &ada, &room.id).await;

    assert!(t.chat.leave(&bob, &room.id).await.expect("leave"));
    assert_eq!(next(&mut bobs).await, Event::Left);
    t.post(&ada, &room.id, "after", "c1").await;
    assert!(bobs.next().await.is_none(), "nothing after the leave");
    // Someone else's leave ends no one else's follow.
    assert_eq!(live(next(&mut adas).await).seq.get(), 1);
}

#[tokio::test]
async fn a_follow_whose_leave_notice_was_lost_ends_at_its_next_read() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let bob = t.user("bob").await;
    let room = t.room(&ada, "general").await;
    t.chat.join(&bob, &room.id).await.expect("join");
    let mut bobs = caught_up(&t, &bob, &room.id).await;

    // Bob leaves, and Ada posts, on a replica whose announcements never arrive; then
    // Ada posts where they do. The follow sees a hole, and before it reads the store
    // to fill it, asks whether Bob may.
    let unheard = t.unheard();
    assert!(unheard.leave(&bob, &room.id).await.expect("leave"));
    post(&unheard, &ada, &room.id, "unheard", "c1").await;
    t.post(&ada, &room.id, "heard", "c2").await;
    assert_eq!(next(&mut bobs).await, Event::Left);
    assert!(bobs.next().await.is_none());
}
