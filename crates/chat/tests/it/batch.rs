//! Group commit: posts to one room queued together are written in one transaction, and
//! still each gets a gap-free seq, one answer, and idempotency by client id.

use herd_chat::{ChatError, ClientId, MessageBody, PageSize, Posted, Seq, Submitted, UserId};

use crate::harness::{seqs, TestChat};

fn submit(t: &TestChat, author: &UserId, room: &herd_chat::RoomId, i: usize) -> Submitted {
    t.chat.submit(
        author,
        room,
        MessageBody::parse(&format!("m{i}")).expect("a body"),
        ClientId::parse(&format!("c{i}")).expect("a client id"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_to_one_room_get_gap_free_seqs_each_answered_once() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let room = t.room(&ada, "general").await;
    let mut posters = Vec::new();
    for p in 0..8 {
        let user = t.user(&format!("poster{p}")).await;
        t.chat.join(&user, &room.id).await.expect("join");
        posters.push(user);
    }
    // Eight tasks (as eight sockets) each post 25 messages without waiting in between.
    let mut tasks = Vec::new();
    for (p, user) in posters.iter().enumerate() {
        let chat = t.chat.clone();
        let (user, room) = (user.clone(), room.id.clone());
        tasks.push(tokio::spawn(async move {
            let submitted: Vec<_> = (0..25)
                .map(|i| {
                    chat.submit(
                        &user,
                        &room,
                        MessageBody::parse(&format!("{p}/{i}")).expect("a body"),
                        ClientId::parse(&format!("c{i}")).expect("a client id"),
                    )
                })
                .collect();
            let mut answers = Vec::new();
            for s in submitted {
                answers.push(s.await.expect("posted"));
            }
            answers
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let answers = task.await.expect("poster");
        // One poster's messages keep the order it sent them in.
        let own: Vec<i64> = answers.iter().map(|a| a.message.seq.get()).collect();
        assert!(own.windows(2).all(|w| w[0] < w[1]), "{own:?}");
        assert!(answers.iter().all(|a| !a.duplicate));
        all.extend(answers);
    }
    let mut got: Vec<i64> = all.iter().map(|a| a.message.seq.get()).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (1..=200).collect::<Vec<_>>(),
        "every post one seq, none twice"
    );
    let page = t
        .chat
        .history(&ada, &room.id, Seq::ZERO, PageSize::MAX)
        .await
        .expect("history");
    assert_eq!(seqs(&page.messages), (1..=200).collect::<Vec<_>>());
    for a in &all {
        assert_eq!(page.messages[a.message.seq.get() as usize - 1], a.message);
    }
}

#[tokio::test]
async fn a_retry_in_the_same_batch_or_a_later_one_returns_the_stored_message() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let room = t.room(&ada, "general").await;
    // Queued before any commits: one batch, with the same client id twice.
    let first = submit(&t, &ada, &room.id, 1);
    let again = t.chat.submit(
        &ada,
        &room.id,
        MessageBody::parse("another body").expect("a body"),
        ClientId::parse("c1").expect("a client id"),
    );
    let second = submit(&t, &ada, &room.id, 2);
    let (first, again, second) = (
        first.await.expect("first"),
        again.await.expect("again"),
        second.await.expect("second"),
    );
    assert!(!first.duplicate && again.duplicate && !second.duplicate);
    assert_eq!(again.message, first.message, "the original is kept");
    assert_eq!(second.message.seq.get(), 2, "the retry took no seq");
    let later: Posted = submit(&t, &ada, &room.id, 2).await.expect("later");
    assert!(later.duplicate);
    assert_eq!(later.message, second.message);
}

#[tokio::test]
async fn a_non_member_in_a_batch_is_refused_alone() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let eve = t.user("eve").await;
    let room = t.room(&ada, "general").await;
    let a = submit(&t, &ada, &room.id, 1);
    let e = submit(&t, &eve, &room.id, 2);
    let b = submit(&t, &ada, &room.id, 3);
    assert_eq!(a.await.expect("ada's first").message.seq.get(), 1);
    assert!(matches!(e.await, Err(ChatError::NotAMember)));
    assert_eq!(b.await.expect("ada's second").message.seq.get(), 2);
}

#[tokio::test]
async fn a_failed_commit_answers_every_post_of_its_batch_with_an_error_and_writes_nothing() {
    let t = TestChat::start().await;
    let ada = t.user("ada").await;
    let room = t.room(&ada, "general").await;
    // The database refuses every message from now on, after the batch has taken the
    // room's row and read what it needs: the failure is in the middle of the batch.
    let raw = sqlx::SqlitePool::connect(&t.url).await.expect("raw pool");
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    .execute(&raw)
    .await
    .expect("trigger");
    let submitted: Vec<_> = (1..=5).map(|i| submit(&t, &ada, &room.id, i)).collect();
    for s in submitted {
        let answer = s.await;
        assert!(
            answer.is_err(),
            "acknowledged a post that was not stored: {answer:?}"
        );
    }
    let page = t
        .chat
        .history(&ada, &room.id, Seq::ZERO, PageSize::MAX)
        .await
        .expect("history");
    assert!(page.messages.is_empty());
    let rooms = t.chat.rooms_of(&ada).await.expect("rooms");
    assert_eq!(rooms[0].last_seq, Seq::ZERO, "the failed batch took no seq");
    // Once the database takes messages again, the retries are posted, from seq 1.
    sqlx::query("DROP TRIGGER refuse")
        .execute(&raw)
        .await
        .expect("drop trigger");
    let submitted: Vec<_> = (1..=5).map(|i| submit(&t, &ada, &room.id, i)).collect();
    for (i, s) in submitted.into_iter().enumerate() {
        let posted = s.await.expect("retried");
        assert!(!posted.duplicate);
        assert_eq!(posted.message.seq.get(), i as i64 + 1);
    }
}
