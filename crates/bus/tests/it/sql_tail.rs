//! What only the SQL tail does: keep its event log short, and fail like the store fails.

use herd_bus::{Bus, BusError, DEFAULT_POLL_INTERVAL};
use herd_store::Store;

use crate::harness::{eventually, message};

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("bus.db").display());
    (Store::connect(&url).await.expect("opening the store"), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_deletes_events_past_their_retention() {
    let (store, _dir) = store().await;
    // Appended at the epoch, long past any retention; the store takes the time it is given.
    store
        .append_event("t", b"ancient", 0)
        .await
        .expect("appending an event");
    let bus = Bus::sql_tail(store.clone(), DEFAULT_POLL_INTERVAL)
        .await
        .expect("starting the SQL tail");
    bus.publish("t", b"recent").await.expect("publishing");

    eventually("pruned", || async {
        let events = store.events_since(0, 10).await.expect("reading the log");
        events.iter().all(|e| e.payload != b"ancient")
    })
    .await;
    let left = store.events_since(0, 10).await.expect("reading the log");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].payload, b"recent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_gone_makes_publish_unavailable_and_the_bus_unhealthy() {
    let (store, _dir) = store().await;
    let bus = Bus::sql_tail(store.clone(), DEFAULT_POLL_INTERVAL)
        .await
        .expect("starting the SQL tail");
    let mut subscription = bus.subscribe("t").await;
    bus.publish("t", b"up").await.expect("publishing");
    assert_eq!(message(&mut subscription).await, b"up");

    store.close().await;
    let err = bus
        .publish("t", b"down")
        .await
        .expect_err("publishing on a closed store");
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    assert!(!bus.healthy().await);
}
