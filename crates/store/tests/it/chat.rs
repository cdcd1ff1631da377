//! Chat: rooms, membership, and messages numbered per room without gaps, including
//! posters racing on one room and retries racing each other.

use std::collections::HashSet;
use std::sync::Arc;

use herd_store::{Batched, MessageRecord, NewMessage, Posted, RoomRecord, Store, StoreError};
use tokio::sync::Barrier;

use crate::harness::{self, TestDb, NOW};

backend_tests!(
    a_room_is_created_listed_joined_and_left,
    a_missing_room_is_not_found,
    sequential_posts_are_numbered_from_1_with_their_authors_name,
    messages_after_pages_ascending,
    seqs_are_per_room,
    concurrent_posters_get_every_seq_exactly_once,
    a_retried_post_returns_the_first_and_stores_no_copy,
    racing_identical_posts_store_one_message_and_leave_no_gap,
    a_failed_post_takes_its_seq_back,
    a_nul_the_database_refuses_is_bad_input,
    a_batch_is_answered_in_its_order_and_numbered_without_gaps,
    concurrent_batches_to_one_room_get_every_seq_exactly_once,
);

/// Posts `body` as `author` in `room` with client id `client_id` (the message id is
/// derived from it) at `NOW`.
async fn post(store: &Store, room: &str, author: &str, client_id: &str, body: &str) -> Posted {
    store
        .post_message(
            room,
            &format!("m-{room}-{author}-{client_id}"),
            author,
            body,
            client_id,
            NOW,
        )
        .await
        .expect("posting a message")
}

/// Posts a message that must be new, and returns it.
async fn post_new(store: &Store, room: &str, author: &str, client_id: &str) -> MessageRecord {
    match post(store, room, author, client_id, &format!("body {client_id}")).await {
        Posted::New(m) => m,
        other => panic!("expected a new message, got {other:?}"),
    }
}

async fn seqs(store: &Store, room: &str) -> Vec<i64> {
    store
        .messages_after(room, 0, 10_000)
        .await
        .expect("messages after")
        .into_iter()
        .map(|m| m.seq)
        .collect()
}

async fn a_room_is_created_listed_joined_and_left(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    let bob = harness::user(&store, "bob").await;

    let general = store
        .create_room("r-general", "general", &ada.id, NOW)
        .await
        .expect("create room");
    assert_eq!(
        general,
        RoomRecord {
            id: "r-general".to_owned(),
            name: "general".to_owned(),
            created_by: ada.id.clone(),
            created_at: NOW,
            last_seq: 0,
        }
    );
    assert_eq!(
        store.room("r-general").await.expect("room"),
        Some(general.clone())
    );
    assert_eq!(store.room("r-nope").await.expect("room"), None);

    // The creator is the first member, and only they are.
    assert!(store
        .is_member("r-general", &ada.id)
        .await
        .expect("is member"));
    assert!(!store
        .is_member("r-general", &bob.id)
        .await
        .expect("is member"));
    assert_eq!(
        store.rooms_of(&ada.id).await.expect("rooms of"),
        vec![general.clone()]
    );
    assert_eq!(store.rooms_of(&bob.id).await.expect("rooms of"), vec![]);

    assert!(store
        .join_room("r-general", &bob.id, NOW + 1)
        .await
        .expect("join room"));
    assert!(!store
        .join_room("r-general", &bob.id, NOW + 2)
        .await
        .expect("join room"));
    assert!(store
        .is_member("r-general", &bob.id)
        .await
        .expect("is member"));

    // By name, code point by code point on both backends (so "Zeta" before "alpha"),
    // then by id.
    for (id, name) in [
        ("r-b", "beta"),
        ("r-a2", "alpha"),
        ("r-a1", "alpha"),
        ("r-z", "Zeta"),
    ] {
        store
            .create_room(id, name, &bob.id, NOW)
            .await
            .expect("create room");
    }
    let listed: Vec<_> = store
        .rooms_of(&bob.id)
        .await
        .expect("rooms of")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ["r-z", "r-a1", "r-a2", "r-b", "r-general"]);

    assert!(store
        .leave_room("r-general", &bob.id)
        .await
        .expect("leave room"));
    assert!(!store
        .leave_room("r-general", &bob.id)
        .await
        .expect("leave room"));
    assert!(!store
        .is_member("r-general", &bob.id)
        .await
        .expect("is member"));
    assert_eq!(
        store.rooms_of(&bob.id).await.expect("rooms of").len(),
        4,
        "bob is still in the rooms he created"
    );
    // Leaving does not touch anyone else's membership.
    assert!(store
        .is_member("r-general", &ada.id)
        .await
        .expect("is member"));
}

async fn a_missing_room_is_not_found(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;

    assert!(matches!(
        store.join_room("r-nope", &ada.id, NOW).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .post_message("r-nope", "m1", &ada.id, "hello?", "c1", NOW)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(!store
        .leave_room("r-nope", &ada.id)
        .await
        .expect("leave room"));
    assert!(!store.is_member("r-nope", &ada.id).await.expect("is member"));
    assert_eq!(
        store
            .messages_after("r-nope", 0, 10)
            .await
            .expect("messages after"),
        vec![]
    );
    assert_eq!(
        StoreError::NotFound.to_string(),
        "no such room",
        "the message the server may show"
    );
}

async fn sequential_posts_are_numbered_from_1_with_their_authors_name(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    let bob = harness::user(&store, "bob").await;
    store
        .create_room("r1", "general", &ada.id, NOW)
        .await
        .expect("create room");

    let first = post(&store, "r1", &ada.id, "c1", "hello").await;
    assert_eq!(
        first,
        Posted::New(MessageRecord {
            room_id: "r1".to_owned(),
            seq: 1,
            id: format!("m-r1-{}-c1", ada.id),
            author_id: ada.id.clone(),
            author: "ada".to_owned(),
            body: "hello".to_owned(),
            client_id: "c1".to_owned(),
            created_at: NOW,
        })
    );

    let mut posted = vec![first.into_message()];
    for (i, author) in [&bob, &ada, &bob, &ada].into_iter().enumerate() {
        let m = post_new(&store, "r1", &author.id, &format!("c{}", i + 2)).await;
        assert_eq!(m.author, author.username);
        posted.push(m);
    }
    assert_eq!(
        posted.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        store
            .messages_after("r1", 0, 100)
            .await
            .expect("messages after"),
        posted
    );
    assert_eq!(
        store.room("r1").await.expect("room").map(|r| r.last_seq),
        Some(5)
    );
}

async fn messages_after_pages_ascending(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    store
        .create_room("r1", "general", &ada.id, NOW)
        .await
        .expect("create room");
    for i in 1..=10 {
        post_new(&store, "r1", &ada.id, &format!("c{i}")).await;
    }

    let page = |after: i64, limit: i64| {
        let store = store.clone();
        async move {
            store
                .messages_after("r1", after, limit)
                .await
                .expect("messages after")
                .into_iter()
                .map(|m| m.seq)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(0, 3).await, [1, 2, 3]);
    assert_eq!(page(3, 3).await, [4, 5, 6]);
    assert_eq!(page(6, 3).await, [7, 8, 9]);
    assert_eq!(page(9, 3).await, [10]);
    assert_eq!(page(10, 3).await, Vec::<i64>::new());
    assert_eq!(page(0, 0).await, Vec::<i64>::new());
    // A negative limit returns nothing on both backends (SQLite alone would read it as
    // "no limit", PostgreSQL alone would refuse it).
    assert_eq!(page(0, -1).await, Vec::<i64>::new());
    assert_eq!(page(-5, 2).await, [1, 2]);
}

async fn seqs_are_per_room(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    for room in ["r1", "r2"] {
        store
            .create_room(room, room, &ada.id, NOW)
            .await
            .expect("create room");
    }
    for i in 0..3 {
        post_new(&store, "r1", &ada.id, &format!("c{i}")).await;
        // The same client id in another room is another message.
        post_new(&store, "r2", &ada.id, &format!("c{i}")).await;
    }
    post_new(&store, "r2", &ada.id, "c-last").await;

    assert_eq!(seqs(&store, "r1").await, [1, 2, 3]);
    assert_eq!(seqs(&store, "r2").await, [1, 2, 3, 4]);
    let r1 = store
        .messages_after("r1", 0, 10)
        .await
        .expect("messages after");
    assert!(r1.iter().all(|m| m.room_id == "r1"), "{r1:?}");
}

async fn concurrent_posters_get_every_seq_exactly_once(db: TestDb) {
    let (posters, per_poster) = (8, 25);
    let store = db.connect().await;
    let owner = harness::user(&store, "owner").await;
    store
        .create_room("r1", "busy", &owner.id, NOW)
        .await
        .expect("create room");
    // A quiet room next door, to show posters of one room leave another's seqs alone.
    store
        .create_room("r2", "quiet", &owner.id, NOW)
        .await
        .expect("create room");
    post_new(&store, "r2", &owner.id, "c0").await;

    let barrier = Arc::new(Barrier::new(posters));
    let mut tasks = Vec::new();
    for p in 0..posters {
        let author = harness::user(&store, &format!("poster{p}")).await;
        // A store of its own, so a pool of its own: as separate replicas would post.
        let store = db.connect().await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut mine = Vec::new();
            for i in 0..per_poster {
                mine.push(
                    post_new(&store, "r1", &author.id, &format!("c{i}"))
                        .await
                        .seq,
                );
            }
            store.close().await;
            mine
        }));
    }
    let mut handed_out = Vec::new();
    for task in tasks {
        let mine = task.await.expect("the task panicked");
        // One poster's messages are numbered in the order it posted them.
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
        handed_out.extend(mine);
    }
    handed_out.sort_unstable();

    let total = (posters * per_poster) as i64;
    let expected: Vec<i64> = (1..=total).collect();
    assert_eq!(
        handed_out, expected,
        "a seq was skipped or handed out twice"
    );
    let stored = store
        .messages_after("r1", 0, 10_000)
        .await
        .expect("messages after");
    assert_eq!(
        stored.iter().map(|m| m.seq).collect::<Vec<_>>(),
        expected,
        "the stored seqs have a gap or a duplicate"
    );
    let keys: HashSet<_> = stored
        .iter()
        .map(|m| (m.author_id.as_str(), m.client_id.as_str()))
        .collect();
    assert_eq!(keys.len(), stored.len(), "a post was stored twice");
    assert_eq!(
        store.room("r1").await.expect("room").map(|r| r.last_seq),
        Some(total)
    );
    assert_eq!(seqs(&store, "r2").await, [1]);
}

async fn a_retried_post_returns_the_first_and_stores_no_copy(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    let bob = harness::user(&store, "bob").await;
    store
        .create_room("r1", "general", &ada.id, NOW)
        .await
        .expect("create room");

    let first = post_new(&store, "r1", &ada.id, "c1").await;
    // A retry carries a fresh message id and a later time; what counts is the client id.
    // The body is deliberately different: the stored message is the answer, unchanged.
    let retry = store
        .post_message("r1", "m-retry", &ada.id, "edited?", "c1", NOW + 60)
        .await
        .expect("posting a message");
    assert_eq!(retry, Posted::Existing(first.clone()));
    assert_eq!(retry.message(), &first);

    // The key is per author: bob's "c1" is his own message.
    let bobs = post_new(&store, "r1", &bob.id, "c1").await;
    assert_eq!(bobs.seq, 2);
    assert_eq!(seqs(&store, "r1").await, [1, 2]);
    assert_eq!(post_new(&store, "r1", &ada.id, "c2").await.seq, 3);
}

async fn racing_identical_posts_store_one_message_and_leave_no_gap(db: TestDb) {
    let rounds = 20;
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    store
        .create_room("r1", "general", &ada.id, NOW)
        .await
        .expect("create room");
    // Separate stores, so separate pools, so the two posts really run at once.
    let (left, right) = (db.connect().await, db.connect().await);

    for round in 1..=rounds {
        let client_id = format!("c{round}");
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [(&left, "a"), (&right, "b")]
            .into_iter()
            .map(|(store, side)| {
                let (store, barrier) = (store.clone(), barrier.clone());
                let (author, client_id) = (ada.id.clone(), client_id.clone());
                let id = format!("m{round}{side}");
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .post_message("r1", &id, &author, "hello", &client_id, NOW)
                        .await
                        .expect("posting a message")
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for racer in racers {
            outcomes.push(racer.await.expect("the task panicked"));
        }
        let (new, existing): (Vec<_>, Vec<_>) =
            outcomes.iter().partition(|p| matches!(p, Posted::New(_)));
        assert_eq!(
            (new.len(), existing.len()),
            (1, 1),
            "round {round}: {outcomes:?}"
        );
        assert_eq!(new[0].message(), existing[0].message(), "round {round}");
        assert_eq!(new[0].message().seq, round, "round {round}");
    }

    // The loser of each race handed its seq back: the next post follows on directly.
    assert_eq!(
        post_new(&store, "r1", &ada.id, "after").await.seq,
        rounds + 1
    );
    assert_eq!(
        seqs(&store, "r1").await,
        (1..=rounds + 1).collect::<Vec<_>>()
    );
}

async fn a_failed_post_takes_its_seq_back(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    store
        .create_room("r1", "general", &ada.id, NOW)
        .await
        .expect("create room");
    assert_eq!(post_new(&store, "r1", &ada.id, "c1").await.seq, 1);

    // A message id already taken (by another client id) and an author with no account
    // both fail after the seq was raised; the rollback must lower it again.
    let taken = format!("m-r1-{}-c1", ada.id);
    let err = store
        .post_message("r1", &taken, &ada.id, "again", "c2", NOW)
        .await
        .expect_err("a taken message id was accepted");
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    let err = store
        .post_message("r1", "m-ghost", "u-nobody", "boo", "c3", NOW)
        .await
        .expect_err("an author without an account was accepted");
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");

    assert_eq!(
        store.room("r1").await.expect("room").map(|r| r.last_seq),
        Some(1)
    );
    assert_eq!(post_new(&store, "r1", &ada.id, "c2").await.seq, 2);
    assert_eq!(seqs(&store, "r1").await, [1, 2]);
}

/// PostgreSQL refuses a NUL in text (SQLite stores it): that is the request's fault,
/// which callers tell from the database being down.
async fn a_nul_the_database_refuses_is_bad_input(db: TestDb) {
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    for refused in [
        store.is_member("r-\u{0}", &ada.id).await.err(),
        store
            .post_message("r-\u{0}", "m1", &ada.id, "a\u{0}b", "c1", NOW)
            .await
            .err(),
    ]
    .into_iter()
    .flatten()
    {
        if matches!(refused, StoreError::NotFound) {
            continue;
        }
        assert!(refused.is_bad_input(), "{refused}");
        assert!(!refused.is_unavailable(), "{refused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set HERD_TEST_POSTGRES"]
async fn postgres_a_batch_whose_connection_the_server_ends_is_tried_once_more() {
    // herd lab --chaos postgres-kill: sends in flight when every connection was ended
    // (pg_terminate_backend, as a restart would) got 503. The batch is tried once more
    // on a fresh connection, which its client ids make safe.
    harness::run(harness::Kind::Postgres, |db: TestDb| async move {
        use sqlx::{Connection as _, Executor as _};
        let store = db.connect().await;
        let ada = harness::user(&store, "ada").await;
        store
            .create_room("r-kill", "kill", &ada.id, NOW)
            .await
            .expect("room");
        // Another connection holds the room's row, so the post waits inside its
        // transaction, where the server then ends its connection.
        let mut holder = db.postgres_connection().await;
        holder.execute("BEGIN").await.expect("begin");
        holder
            .execute("SELECT 1 FROM rooms WHERE id = 'r-kill' FOR UPDATE")
            .await
            .expect("lock the room");
        let posting = {
            let store = store.clone();
            let ada = ada.id.clone();
            tokio::spawn(async move {
                store
                    .post_message("r-kill", "m-kill-1", &ada, "hello", "c-kill-1", NOW)
                    .await
            })
        };
        let mut admin = db.postgres_connection().await;
        let waiting = lock_waiter(&mut admin).await;
        admin
            .execute(sqlx::query("SELECT pg_terminate_backend($1)").bind(waiting))
            .await
            .expect("terminate");
        holder.execute("COMMIT").await.expect("commit");
        let posted = posting.await.expect("the post's task");
        match posted {
            Ok(Posted::New(m)) => assert_eq!(m.seq, 1),
            other => panic!("the post was not saved: {other:?}"),
        }
        assert_eq!(seqs(&store, "r-kill").await, [1]);
        let _ = admin.close().await;
        let _ = holder.close().await;
    })
    .await;
}

/// A message for a batch: `id` its message id, posted at `NOW + at`.
fn message(id: &str, author: &str, client_id: &str, body: &str, at: i64) -> NewMessage {
    NewMessage {
        id: id.to_owned(),
        author_id: author.to_owned(),
        body: body.to_owned(),
        client_id: client_id.to_owned(),
        created_at: NOW + at,
    }
}

/// `message` as stored in room `r1` with `seq`, by `author` (whose username it is).
fn stored(m: &NewMessage, seq: i64, author: &str) -> MessageRecord {
    MessageRecord {
        room_id: "r1".to_owned(),
        seq,
        id: m.id.clone(),
        author_id: m.author_id.clone(),
        author: author.to_owned(),
        body: m.body.clone(),
        client_id: m.client_id.clone(),
        created_at: m.created_at,
    }
}

/// What a run of [`batches_with_everything_a_batch_meets`] saw: each batch's answers,
/// then the room's history and its last seq.
type BatchRun = (Vec<Vec<Batched>>, Vec<MessageRecord>, Option<i64>);

/// Batches to room `r1` with a post repeated inside the batch, an author who is not a
/// member, one with no account at all, a client id posted earlier and one the same author
/// posted in another room, each answered in the batch's order exactly as expected; new
/// messages numbered without gaps, repeats and refusals taking no seq.
async fn batches_with_everything_a_batch_meets(db: TestDb) -> BatchRun {
    let new = |m| Batched::Posted(Posted::New(m));
    let existing = |m| Batched::Posted(Posted::Existing(m));
    let store = db.connect().await;
    let ada = harness::user(&store, "ada").await;
    let bob = harness::user(&store, "bob").await;
    let eve = harness::user(&store, "eve").await;
    for room in ["r1", "r2"] {
        store
            .create_room(room, room, &ada.id, NOW)
            .await
            .expect("create room");
    }
    store
        .join_room("r1", &bob.id, NOW)
        .await
        .expect("join room");
    let mut answers = Vec::new();

    let old = message("m-old", &ada.id, "c-old", "old", 0);
    let first = store
        .post_messages("r1", std::slice::from_ref(&old))
        .await
        .expect("post messages");
    assert_eq!(first, [new(stored(&old, 1, "ada"))]);
    answers.push(first);
    let elsewhere = message("m-r2", &ada.id, "c1", "in r2", 0);
    store
        .post_messages("r2", &[elsewhere])
        .await
        .expect("post messages");

    let batch = [
        message("m-1", &ada.id, "c1", "one", 1),
        message("m-2", &eve.id, "c1", "intruder", 2),
        // A retry carries a fresh message id, a later time and maybe another body; the
        // message stored first is the answer.
        message("m-3", &ada.id, "c-old", "old, resent", 3),
        // The key is per author: bob's "c1" is his own message.
        message("m-4", &bob.id, "c1", "bob's own", 4),
        message("m-5", &ada.id, "c1", "one, resent in the same batch", 5),
        message("m-6", "u-nobody", "c9", "boo", 6),
        message("m-7", &ada.id, "c2", "two", 7),
    ];
    let answered = store
        .post_messages("r1", &batch)
        .await
        .expect("post messages");
    assert_eq!(
        answered,
        [
            new(stored(&batch[0], 2, "ada")),
            Batched::NotAMember,
            existing(stored(&old, 1, "ada")),
            new(stored(&batch[3], 3, "bob")),
            existing(stored(&batch[0], 2, "ada")),
            Batched::NotAMember,
            new(stored(&batch[6], 4, "ada")),
        ]
    );
    answers.push(answered);

    // Nothing new: no seq taken, last_seq untouched.
    let repeats = [
        message("m-8", &ada.id, "c2", "two, resent", 8),
        message("m-9", &eve.id, "c3", "still not in", 9),
    ];
    let answered = store
        .post_messages("r1", &repeats)
        .await
        .expect("post messages");
    assert_eq!(
        answered,
        [existing(stored(&batch[6], 4, "ada")), Batched::NotAMember]
    );
    answers.push(answered);
    let next = message("m-10", &bob.id, "c2", "after", 10);
    let answered = store
        .post_messages("r1", std::slice::from_ref(&next))
        .await
        .expect("post messages");
    assert_eq!(answered, [new(stored(&next, 5, "bob"))]);
    answers.push(answered);

    assert!(matches!(
        store
            .post_messages("r-nope", &[message("m-11", &ada.id, "c11", "?", 11)])
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.post_messages("r1", &[]).await.expect("post messages"),
        []
    );

    let history = store
        .messages_after("r1", 0, 100)
        .await
        .expect("messages after");
    assert_eq!(
        history,
        [
            stored(&old, 1, "ada"),
            stored(&batch[0], 2, "ada"),
            stored(&batch[3], 3, "bob"),
            stored(&batch[6], 4, "ada"),
            stored(&next, 5, "bob"),
        ]
    );
    let last_seq = store.room("r1").await.expect("room").map(|r| r.last_seq);
    assert_eq!(last_seq, Some(5));
    (answers, history, last_seq)
}

async fn a_batch_is_answered_in_its_order_and_numbered_without_gaps(db: TestDb) {
    batches_with_everything_a_batch_meets(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set HERD_TEST_POSTGRES"]
async fn postgres_answers_batches_exactly_as_sqlite_does() {
    // PostgreSQL commits a batch in one call of herd_post_messages, SQLite statement by
    // statement in Rust: two texts of one algorithm, which must not drift apart.
    let runs = Arc::new(std::sync::Mutex::new(Vec::new()));
    for kind in [harness::Kind::Sqlite, harness::Kind::Postgres] {
        let runs = runs.clone();
        harness::run(kind, |db| async move {
            let run = batches_with_everything_a_batch_meets(db).await;
            runs.lock().expect("the runs' lock").push(run);
        })
        .await;
    }
    let runs = runs.lock().expect("the runs' lock");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0], runs[1], "SQLite's answers, then PostgreSQL's");
}

async fn concurrent_batches_to_one_room_get_every_seq_exactly_once(db: TestDb) {
    let (posters, batches, per_batch) = (2, 20, 5);
    let store = db.connect().await;
    let owner = harness::user(&store, "owner").await;
    // Both posters also send, in every batch, the same client id of this author: as a
    // connection's retry would, racing its first try on another replica.
    let shared = harness::user(&store, "shared").await;
    store
        .create_room("r1", "busy", &owner.id, NOW)
        .await
        .expect("create room");
    store
        .join_room("r1", &shared.id, NOW)
        .await
        .expect("join room");

    let barrier = Arc::new(Barrier::new(posters));
    let mut tasks = Vec::new();
    for p in 0..posters {
        let author = harness::user(&store, &format!("poster{p}")).await;
        store
            .join_room("r1", &author.id, NOW)
            .await
            .expect("join room");
        // A store of its own, so a pool of its own: as separate replicas would post.
        let store = db.connect().await;
        let barrier = barrier.clone();
        let shared = shared.id.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut answers = Vec::new();
            for b in 0..batches {
                let mut batch: Vec<NewMessage> = (0..per_batch)
                    .map(|i| {
                        let client_id = format!("c{b}-{i}");
                        message(
                            &format!("m{p}-{client_id}"),
                            &author.id,
                            &client_id,
                            "hi",
                            0,
                        )
                    })
                    .collect();
                let client_id = format!("s{b}");
                batch.push(message(
                    &format!("m{p}-{client_id}"),
                    &shared,
                    &client_id,
                    "hi",
                    0,
                ));
                let answered = store
                    .post_messages("r1", &batch)
                    .await
                    .expect("post messages");
                // A batch holds the room while it commits: its new messages follow on.
                let new: Vec<i64> = answered
                    .iter()
                    .filter_map(|a| match a {
                        Batched::Posted(Posted::New(m)) => Some(m.seq),
                        _ => None,
                    })
                    .collect();
                assert!(new.windows(2).all(|w| w[1] == w[0] + 1), "{answered:?}");
                answers.extend(answered);
            }
            store.close().await;
            answers
        }));
    }
    let mut handed_out = Vec::new();
    let mut shared_posts = Vec::new();
    for task in tasks {
        let mut mine = Vec::new();
        for answer in task.await.expect("the task panicked") {
            match answer {
                Batched::Posted(posted) if posted.message().author_id == shared.id => {
                    shared_posts.push(posted);
                }
                Batched::Posted(Posted::New(m)) => mine.push(m.seq),
                other => panic!("expected a new message, got {other:?}"),
            }
        }
        // One poster's messages are numbered in the order it posted them.
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
        handed_out.extend(mine);
    }
    // Each shared client id was stored once, and both posters were answered with it.
    for b in 0..batches {
        let client_id = format!("s{b}");
        let answers: Vec<_> = shared_posts
            .iter()
            .filter(|p| p.message().client_id == client_id)
            .collect();
        let new: Vec<_> = answers
            .iter()
            .filter(|p| matches!(p, Posted::New(_)))
            .collect();
        assert_eq!((answers.len(), new.len()), (2, 1), "{answers:?}");
        assert_eq!(answers[0].message(), answers[1].message());
        handed_out.push(new[0].message().seq);
    }
    handed_out.sort_unstable();

    let total = (posters * batches * per_batch + batches) as i64;
    let expected: Vec<i64> = (1..=total).collect();
    assert_eq!(
        handed_out, expected,
        "a seq was skipped or handed out twice"
    );
    assert_eq!(seqs(&store, "r1").await, expected, "the stored seqs");
    assert_eq!(
        store.room("r1").await.expect("room").map(|r| r.last_seq),
        Some(total)
    );
}

/// The pid of the one other backend of this database waiting for a lock, once there is
/// one.
async fn lock_waiter(admin: &mut sqlx::PgConnection) -> i32 {
    use sqlx::{Executor as _, Row as _};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let row = admin
            .fetch_optional(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
            )
            .await
            .expect("pg_stat_activity");
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(std::time::Instant::now() < deadline, "nothing waited");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set HERD_TEST_POSTGRES"]
async fn postgres_a_batch_of_posts_whose_connection_the_server_ends_is_tried_once_more() {
    // As `postgres_a_batch_whose_connection_the_server_ends_is_tried_once_more`, for
    // `post_messages`: the batch waits for the room's row, and the server ends its
    // connection there.
    harness::run(harness::Kind::Postgres, |db: TestDb| async move {
        use sqlx::{Connection as _, Executor as _};
        let store = db.connect().await;
        let ada = harness::user(&store, "ada").await;
        store
            .create_room("r1", "kill", &ada.id, NOW)
            .await
            .expect("room");
        let mut holder = db.postgres_connection().await;
        holder.execute("BEGIN").await.expect("begin");
        holder
            .execute("SELECT 1 FROM rooms WHERE id = 'r1' FOR UPDATE")
            .await
            .expect("lock the room");
        let batch = [
            message("m-1", &ada.id, "c1", "one", 1),
            message("m-2", &ada.id, "c2", "two", 2),
        ];
        let posting = {
            let (store, batch) = (store.clone(), batch.clone());
            tokio::spawn(async move { store.post_messages("r1", &batch).await })
        };
        let mut admin = db.postgres_connection().await;
        let waiting = lock_waiter(&mut admin).await;
        admin
            .execute(sqlx::query("SELECT pg_terminate_backend($1)").bind(waiting))
            .await
            .expect("terminate");
        holder.execute("COMMIT").await.expect("commit");
        let posted = posting.await.expect("the post's task");
        assert_eq!(
            posted.expect("the batch was not saved"),
            [
                Batched::Posted(Posted::New(stored(&batch[0], 1, "ada"))),
                Batched::Posted(Posted::New(stored(&batch[1], 2, "ada"))),
            ]
        );
        assert_eq!(seqs(&store, "r1").await, [1, 2]);
        let _ = admin.close().await;
        let _ = holder.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set HERD_TEST_POSTGRES"]
async fn postgres_a_batch_that_waited_for_the_room_commits_whatever_the_servers_isolation() {
    // herd_post_messages runs in autocommit, whose implicit transaction takes the
    // connection's default isolation. Under REPEATABLE READ a batch that waited for
    // another poster's lock on the room would fail with a serialisation error when that
    // poster commits; the store's connections ask for READ COMMITTED, for which the
    // function is written, whatever the server's default.
    harness::run(harness::Kind::Postgres, |db: TestDb| async move {
        use sqlx::{Connection as _, Executor as _};
        db.exec(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation \
             = %L', current_database(), 'repeatable read'); END $$",
        )
        .await;
        let store = db.connect().await;
        let ada = harness::user(&store, "ada").await;
        store
            .create_room("r1", "general", &ada.id, NOW)
            .await
            .expect("room");
        // Another poster holds the room's row, as a batch's first statement does.
        let mut holder = db.postgres_connection().await;
        holder.execute("BEGIN").await.expect("begin");
        holder
            .execute("UPDATE rooms SET last_seq = last_seq WHERE id = 'r1'")
            .await
            .expect("lock the room");
        let batch = [message("m-1", &ada.id, "c1", "one", 1)];
        let posting = {
            let (store, batch) = (store.clone(), batch.clone());
            tokio::spawn(async move { store.post_messages("r1", &batch).await })
        };
        let mut admin = db.postgres_connection().await;
        lock_waiter(&mut admin).await;
        holder.execute("COMMIT").await.expect("commit");
        let posted = posting.await.expect("the post's task");
        assert_eq!(
            posted.expect("the batch failed"),
            [Batched::Posted(Posted::New(stored(&batch[0], 1, "ada")))]
        );
        let _ = admin.close().await;
        let _ = holder.close().await;
    })
    .await;
}
