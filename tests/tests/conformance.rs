//! The store conformance suite, on both backends.

mod postgres {
    martix_engine::store_conformance!(martix_tests::conformance_postgres_store);
}

mod sqlite {
    martix_engine::store_conformance!(martix_tests::sqlite_store);
}

/// A run's history rows written before rows held a change's events (one event each, not
/// delimited, no `last_event_id`) read back in order with the rows written after, from any
/// event on.
#[tokio::test]
async fn history_rows_of_both_layouts_read_together() {
    use martix_engine::ids::RunId;
    use martix_engine::store::{PostgresStore, RunStore};
    use martix_proto::v1 as pb;
    use prost::Message;

    let url = martix_tests::fresh_postgres_url().await;
    let store = PostgresStore::connect(&url).await.unwrap();
    let run = RunId::new();
    let event = |id: i64| pb::HistoryEvent {
        event_id: id,
        ..Default::default()
    };
    for id in 1..=3 {
        sqlx::query("INSERT INTO history_events (run_id, event_id, data) VALUES ($1, $2, $3)")
            .bind(run.to_text())
            .bind(id)
            .bind(event(id).encode_to_vec())
            .execute(store.pool())
            .await
            .unwrap();
    }
    let mut data = Vec::new();
    for id in 4..=6 {
        event(id).encode_length_delimited(&mut data).unwrap();
    }
    sqlx::query(
        "INSERT INTO history_events (run_id, event_id, last_event_id, data) VALUES ($1, 4, 6, $2)",
    )
    .bind(run.to_text())
    .bind(data)
    .execute(store.pool())
    .await
    .unwrap();
    let ids = |events: Vec<pb::HistoryEvent>| events.iter().map(|e| e.event_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.history(run, 1, 100).await.unwrap()),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(ids(store.history(run, 3, 2).await.unwrap()), [3, 4]);
    assert_eq!(ids(store.history(run, 5, 100).await.unwrap()), [5, 6]);
    assert_eq!(
        ids(store.history(run, 7, 100).await.unwrap()),
        Vec::<i64>::new()
    );
    assert_eq!(
        store.last_event(run).await.unwrap().map(|e| e.event_id),
        Some(6)
    );
    drop(store);
    martix_tests::drop_postgres_database(&url).await;
}

/// The relay never reads past a transaction still running (PostgreSQL): an outbox row whose
/// transaction began first but commits last holds back the rows committed after it, then
/// comes first. Positions alone would have let the relay read the later row, move its cursor
/// past the earlier row's lower position, and never fold or send that row.
#[tokio::test]
async fn the_relay_waits_for_a_transaction_still_writing_the_outbox() {
    use martix_engine::store::PostgresStore;
    use martix_engine::store::conformance::relay_view;
    use martix_engine::store::events::{Consumer, EventStore, SHARDS};

    let url = martix_tests::fresh_postgres_url().await;
    let store = PostgresStore::connect(&url).await.unwrap();
    let insert = |id: &'static str| {
        sqlx::query(
            "INSERT INTO outbox (event_id, shard, namespace, subject, workflow_type, run_id, \
             sequence, event_type, occurred_at, body) \
             VALUES ($1, 0, 'default', 'o-1', 'order', 'r', 1, 'order.placed', 1, '{}')",
        )
        .bind(id)
    };
    let all: Vec<i32> = (0..SHARDS).collect();
    let ids = |events: Vec<martix_engine::store::events::StoredEvent>| {
        events.into_iter().map(|e| e.event_id).collect::<Vec<_>>()
    };

    let mut slow = store.pool().begin().await.unwrap();
    insert("first").execute(&mut *slow).await.unwrap();
    insert("second").execute(store.pool()).await.unwrap();
    for pending in [
        store.unprojected_events(&all, 100).await.unwrap(),
        store.unsent_events(&all, 100).await.unwrap(),
    ] {
        assert!(
            pending.is_empty(),
            "read past a running transaction: {pending:?}"
        );
    }
    let status = store.outbox_status(1).await.unwrap();
    assert_eq!(
        (status.unprojected, status.unsent),
        (1, 1),
        "counted, though"
    );

    slow.commit().await.unwrap();
    // Transactions of other databases on the server (other tests) hold the horizon too, each
    // for a moment.
    let pending = relay_view(&store, Consumer::Projected, |p| p.len() == 2).await;
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(pending[0].position < pending[1].position && pending[0].xact < pending[1].xact);
    assert_eq!(ids(pending.clone()), ["first", "second"]);
    store.project(&pending, &[]).await.unwrap();
    assert!(
        store
            .unprojected_events(&all, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(store.unsent_events(&all, 100).await.unwrap()),
        ["first", "second"]
    );
    drop(store);
    martix_tests::drop_postgres_database(&url).await;
}

/// Outbox rows as a database before migration 0013 kept them: (position, shard, sent, folded).
/// Shard 3: sent and folded, folded only, neither; shard 5: all finished.
const FLAGGED: [(i64, i32, bool, bool); 4] = [
    (1, 3, true, true),
    (2, 3, false, true),
    (3, 3, false, false),
    (4, 5, true, true),
];

/// Inserts `FLAGGED` into the outbox of `$pool`, a database migrated to 0012.
macro_rules! insert_flagged {
    ($pool:expr) => {
        for (position, shard, sent, projected) in FLAGGED {
            sqlx::query(
                "INSERT INTO outbox (position, event_id, shard, namespace, subject, \
                 workflow_type, run_id, sequence, event_type, occurred_at, body, sent_at, \
                 projected_at) VALUES ($1, $2, $3, 'default', 'o', 'order', 'r', $1, \
                 'order.placed', 1, '{}', $4, $5)",
            )
            .bind(position)
            .bind(format!("e-{position}"))
            .bind(shard)
            .bind(sent.then_some(10_i64))
            .bind(projected.then_some(10_i64))
            .execute($pool)
            .await
            .unwrap();
        }
    };
}

/// `migrations` without 0013 and what follows it.
fn before_0013(mut migrations: sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    let upto = migrations
        .migrations
        .iter()
        .position(|m| m.version == 13)
        .expect("migration 0013");
    migrations.migrations = migrations.migrations[..upto].to_vec().into();
    migrations
}

/// What a store upgraded over `FLAGGED` must read: the unsent and unfolded rows, and only they.
async fn flags_became_cursors(store: &dyn martix_engine::store::Store) {
    let all: Vec<i32> = (0..martix_engine::store::events::SHARDS).collect();
    let positions = |events: Vec<martix_engine::store::events::StoredEvent>| {
        events.iter().map(|e| e.position).collect::<Vec<_>>()
    };
    assert_eq!(
        positions(store.unsent_events(&all, 100).await.unwrap()),
        [2, 3]
    );
    assert_eq!(
        positions(store.unprojected_events(&all, 100).await.unwrap()),
        [3]
    );
    let listed = store.list_outbox(None, 0, 100).await.unwrap();
    let sent: Vec<(i64, bool)> = listed.iter().map(|e| (e.position, e.sent)).collect();
    assert_eq!(sent, [(1, true), (2, false), (3, false), (4, true)]);
}

/// Upgrading a database whose outbox rows carry the flags of before migration 0013: each
/// shard's cursors start below its oldest row not yet sent (folded), so nothing waiting is
/// skipped; rows finished before it are not read again.
#[tokio::test]
async fn the_outbox_flags_become_cursors_on_upgrade() {
    use martix_engine::store::PostgresStore;

    let url = martix_tests::fresh_postgres_url().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    before_0013(martix_engine::martix_migrate::embedded!("v15_postgres").migrator())
        .run(&pool)
        .await
        .unwrap();
    insert_flagged!(&pool);
    pool.close().await;
    let store = PostgresStore::connect(&url).await.unwrap();
    flags_became_cursors(&store).await;
    drop(store);
    martix_tests::drop_postgres_database(&url).await;
}

/// The same upgrade on SQLite (its migration 0013 drops the flag columns and their indexes).
#[tokio::test]
async fn the_outbox_flags_become_cursors_on_upgrade_on_sqlite() {
    use martix_engine::store::SqliteStore;
    use std::str::FromStr;

    let url = martix_tests::sqlite_url();
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .unwrap()
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    before_0013(martix_engine::martix_migrate::embedded!("v15_sqlite").migrator())
        .run(&pool)
        .await
        .unwrap();
    insert_flagged!(&pool);
    pool.close().await;
    let store = SqliteStore::connect(&url).await.unwrap();
    flags_became_cursors(&store).await;
}
