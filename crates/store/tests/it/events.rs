//! The event log the SQL-tail bus polls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::harness::{TestDb, NOW};

backend_tests!(
    appended_events_read_back_in_order_after_an_id,
    prune_events_deletes_older_events_and_ids_are_never_reused,
    a_tail_misses_no_event_appended_concurrently,
);

async fn appended_events_read_back_in_order_after_an_id(db: TestDb) {
    let store = db.connect().await;
    assert_eq!(store.last_event_id().await.expect("last event id"), 0);
    assert_eq!(
        store.events_since(0, 10).await.expect("events since"),
        vec![]
    );

    let sent: [(&str, &[u8]); 4] = [
        ("chat", b"hello"),
        ("revocation", b""),
        ("keys", &[0, 255, 128, 10]),
        ("chat", b"again"),
    ];
    let mut ids = Vec::new();
    for (i, (topic, payload)) in sent.iter().enumerate() {
        ids.push(
            store
                .append_event(topic, payload, NOW + i as i64)
                .await
                .expect("append event"),
        );
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(store.last_event_id().await.expect("last event id"), ids[3]);

    let all = store.events_since(0, 10).await.expect("events since");
    let read: Vec<_> = all
        .iter()
        .map(|e| (e.id, e.topic.as_str(), e.payload.as_slice(), e.created_at))
        .collect();
    let expected: Vec<_> = sent
        .iter()
        .enumerate()
        .map(|(i, (topic, payload))| (ids[i], *topic, *payload, NOW + i as i64))
        .collect();
    assert_eq!(read, expected);

    let page = store.events_since(ids[0], 2).await.expect("events since");
    assert_eq!(page, all[1..3]);
    assert_eq!(
        store.events_since(ids[3], 10).await.expect("events since"),
        vec![]
    );
}

async fn prune_events_deletes_older_events_and_ids_are_never_reused(db: TestDb) {
    let store = db.connect().await;
    let mut newest = 0;
    for at in [NOW, NOW + 10, NOW + 20] {
        newest = store
            .append_event("t", b"x", at)
            .await
            .expect("append event");
    }

    assert_eq!(store.prune_events(NOW + 10).await.expect("prune events"), 1);
    let left: Vec<_> = store.events_since(0, 10).await.expect("events since");
    assert_eq!(
        left.iter().map(|e| e.created_at).collect::<Vec<_>>(),
        [NOW + 10, NOW + 20]
    );

    // Even with the log emptied, a new event sorts after everything a reader has seen.
    assert_eq!(
        store.prune_events(NOW + 100).await.expect("prune events"),
        2
    );
    assert_eq!(
        store.events_since(0, 10).await.expect("events since"),
        vec![]
    );
    let next = store
        .append_event("t", b"y", NOW + 30)
        .await
        .expect("append event");
    assert!(next > newest, "{next} after {newest}");
}

// On PostgreSQL, ids are handed out at insert and commits can land out of that order; a
// reader that had moved past a later id would never see the earlier one.
async fn a_tail_misses_no_event_appended_concurrently(db: TestDb) {
    let store = db.connect().await;
    let (writers, per_writer) = (4, 50);

    let done = Arc::new(AtomicBool::new(false));
    let writing = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        for i in 0..per_writer {
                            let payload = format!("{w}/{i}");
                            store
                                .append_event("t", payload.as_bytes(), NOW)
                                .await
                                .expect("append event");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("the task panicked");
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let mut seen = Vec::new();
    let mut last = 0;
    loop {
        // Read the flag first: a read that starts after every writer finished is final.
        let finished = done.load(Ordering::SeqCst);
        let batch = store.events_since(last, 1000).await.expect("events since");
        if let Some(newest) = batch.last() {
            last = newest.id;
        }
        seen.extend(batch.into_iter().map(|e| e.id));
        if finished {
            break;
        }
        tokio::task::yield_now().await;
    }
    writing.await.expect("the task panicked");

    let all: Vec<_> = store
        .events_since(0, 1000)
        .await
        .expect("events since")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all.len(), writers * per_writer);
    assert_eq!(seen, all, "the tail skipped an event");
}
