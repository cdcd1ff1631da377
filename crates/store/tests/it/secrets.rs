//! Store-wide secrets.

use std::sync::Arc;

use tokio::sync::Barrier;

use crate::harness::TestDb;

backend_tests!(concurrent_first_callers_all_get_one_value);

async fn concurrent_first_callers_all_get_one_value(db: TestDb) {
    let store = db.connect().await;
    let racers = 8;
    let barrier = Arc::new(Barrier::new(racers));
    let tasks: Vec<_> = (0..racers)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let candidate = vec![i as u8; 32];
                barrier.wait().await;
                store.secret("refresh", &candidate).await.expect("secret")
            })
        })
        .collect();
    let mut values = Vec::new();
    for task in tasks {
        values.push(task.await.expect("the task panicked"));
    }

    let kept = values[0].clone();
    assert!(values.iter().all(|v| *v == kept), "{values:?}");
    assert!(kept.len() == 32 && (kept[0] as usize) < racers && kept.iter().all(|b| *b == kept[0]));
    // Later callers get the kept value whatever they offer; another name is another secret.
    assert_eq!(
        store.secret("refresh", b"ignored").await.expect("secret"),
        kept
    );
    assert_eq!(store.secret("other", b"own").await.expect("secret"), b"own");
}
