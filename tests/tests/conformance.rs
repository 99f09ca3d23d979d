//! The store conformance suite, on both backends.

mod postgres {
    martix_engine::store_conformance!(martix_tests::postgres_store);
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
    use martix_engine::store::{PostgresStore, Store};
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
