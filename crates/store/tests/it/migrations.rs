//! The schema: applied in order, once, by however many runners at a time.

use herd_store::{StoreError, MIGRATIONS};

use crate::harness::TestDb;

backend_tests!(
    migrating_a_new_database_applies_every_migration_once,
    a_newer_schema_is_refused,
    concurrent_runs_apply_each_migration_once,
    a_database_left_at_version_1_gains_the_events_table,
);

async fn migrating_a_new_database_applies_every_migration_once(db: TestDb) {
    let store = db.open().await;
    assert_eq!(
        store
            .pending_migrations()
            .await
            .expect("pending migrations"),
        MIGRATIONS.len()
    );
    // Looking changes nothing.
    assert_eq!(
        store
            .pending_migrations()
            .await
            .expect("pending migrations"),
        MIGRATIONS.len()
    );

    assert_eq!(store.migrate().await.expect("migrate"), MIGRATIONS.len());
    assert_eq!(
        store
            .pending_migrations()
            .await
            .expect("pending migrations"),
        0
    );
    assert_eq!(store.migrate().await.expect("migrate"), 0);

    let again = db.connect().await;
    assert_eq!(
        again
            .pending_migrations()
            .await
            .expect("pending migrations"),
        0
    );
}

async fn a_newer_schema_is_refused(db: TestDb) {
    let store = db.connect().await;
    db.exec("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)")
        .await;

    let known = MIGRATIONS.last().expect("a migration").version;
    for result in [store.migrate().await, store.pending_migrations().await] {
        match result {
            Err(StoreError::SchemaTooNew {
                found: 999,
                known: k,
            }) => assert_eq!(k, known),
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }
}

async fn concurrent_runs_apply_each_migration_once(db: TestDb) {
    // Separate stores, so separate pools: as separate replicas starting at once would.
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(db.open().await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(stores.len()));
    let runs: Vec<_> = stores
        .iter()
        .map(|store| {
            let store = store.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store.migrate().await
            })
        })
        .collect();
    let mut applied = 0;
    for run in runs {
        applied += run
            .await
            .expect("the task panicked")
            .expect("a concurrent migration run failed");
    }
    assert_eq!(applied, MIGRATIONS.len());
    assert_eq!(
        stores[0]
            .pending_migrations()
            .await
            .expect("pending migrations"),
        0
    );
}

// Regression: 0002_events.sql shipped without being listed, so no database had an events
// table. One that an older herd left at version 1 must gain it.
async fn a_database_left_at_version_1_gains_the_events_table(db: TestDb) {
    db.exec(&format!(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL);\n\
         {}\n\
         INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0);",
        db.migration_sql(&MIGRATIONS[0])
    ))
    .await;

    let store = db.open().await;
    assert_eq!(
        store
            .pending_migrations()
            .await
            .expect("pending migrations"),
        MIGRATIONS.len() - 1
    );
    assert_eq!(
        store.migrate().await.expect("migrate"),
        MIGRATIONS.len() - 1
    );
    let id = store
        .append_event("t", b"x", 0)
        .await
        .expect("append event");
    assert_eq!(store.last_event_id().await.expect("last event id"), id);
}
