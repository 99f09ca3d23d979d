//! Conformance cases of the outbox: rows travel with their change, the relay's cursors move
//! apart and never back, projections fold in the cursor's transaction, rebuilds set it back,
//! and shard leases are shared apart.

use super::{T0, namespace, start, unique};
use crate::clock::Millis;
use crate::history::{self, Dispatch, Run};
use crate::store::events::{Consumer, StoredEvent};
use crate::store::projection::{Projection, ProjectionError, ProjectionTx};
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// The relay's view of every shard past `consumer`'s cursors, once `ready` holds of it (for up
/// to ten seconds): on PostgreSQL a row is read only once every transaction older than its own
/// has ended, and the server's other transactions (other tests) hold that back for moments.
pub async fn relay_view(
    store: &dyn Store,
    consumer: Consumer,
    ready: impl Fn(&[StoredEvent]) -> bool,
) -> Vec<StoredEvent> {
    let all: Vec<i32> = (0..crate::store::events::SHARDS).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let view = match consumer {
            Consumer::Projected => store.unprojected_events(&all, 100_000).await,
            Consumer::Sent => store.unsent_events(&all, 100_000).await,
        }
        .unwrap();
        if ready(&view) || std::time::Instant::now() > deadline {
            return view;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn outbox_event(
    run: &Run,
    seq: i64,
    event_type: &str,
    at: Millis,
    body: &str,
) -> history::OutboxEvent {
    history::OutboxEvent {
        event_id: format!("{}/{}", run.run_id.to_text(), 100 + seq),
        namespace: run.namespace.to_string(),
        subject: run.workflow_id.to_string(),
        workflow_type: run.workflow_type.to_string(),
        run_id: run.run_id,
        sequence: seq,
        event_type: event_type.into(),
        occurred_at: at,
        body: body.into(),
    }
}

/// Outbox rows are written with the run change that publishes them, or not at all; a signal
/// request id is recorded once; the relay's two cursors move apart and never back; the host
/// hands a projection the events it takes in the cursor's transaction; a rebuild sets the
/// cursor back; sent and folded rows are purged.
pub async fn outbox_rows_travel_with_their_change(store: &dyn Store) {
    let ns = namespace(store).await;
    let c = start(&ns, "w-1", &unique("q"), T0);
    store.commit(&c).await.unwrap();
    let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
    let mut change = history::signal(&run, "go", None, "t", T0 + 1, Dispatch::nobody(T0 + 1))
        .unwrap()
        .commit;
    change.request_id = Some("req-1".into());
    change.outbox = vec![
        outbox_event(&run, 1, "thing.made", T0 + 1, r#"{"owner":"c-1"}"#),
        outbox_event(&run, 2, "thing.priced", T0 + 1, r#"{"cents":1080}"#),
        outbox_event(&run, 3, "thing.paid", T0 + 1, r#"{"cents":1080}"#),
    ];
    // A stale twin of the change: refused, and none of its rows is written.
    let mut stale = history::signal(&run, "late", None, "t", T0 + 2, Dispatch::nobody(T0 + 2))
        .unwrap()
        .commit;
    stale.outbox = vec![outbox_event(&run, 9, "thing.failed", T0 + 2, "{}")];
    store
        .commit(&change)
        .await
        .expect("the change and its events");
    assert!(matches!(
        store.commit(&stale).await,
        Err(StoreError::Conflict { .. })
    ));
    let rows = store.list_outbox(Some(&ns), 0, 100).await.unwrap();
    let seqs: Vec<(i64, &str)> = rows
        .iter()
        .map(|e| (e.sequence, e.event_type.as_str()))
        .collect();
    assert_eq!(
        seqs,
        [(1, "thing.made"), (2, "thing.priced"), (3, "thing.paid")]
    );
    assert!(
        rows.windows(2)
            .all(|w| (w[0].xact, w[0].position) < (w[1].xact, w[1].position))
    );
    let shard = crate::store::events::shard_of(&ns, "w-1");
    assert!(
        rows.iter()
            .all(|e| !e.sent && e.subject == "w-1" && e.shard == shard)
    );

    // The same request id again: refused as a duplicate, nothing written.
    let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
    let mut again = history::signal(&run, "go", None, "t", T0 + 3, Dispatch::nobody(T0 + 3))
        .unwrap()
        .commit;
    again.request_id = Some("req-1".into());
    assert!(matches!(
        store.commit(&again).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(store.load_run(run.run_id).await.unwrap().unwrap(), run);

    // The relay's view: each shard's events past its projection cursor, ours in order.
    let ours = |events: &[StoredEvent]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.namespace == ns)
            .map(|e| e.event_id.clone())
            .collect()
    };
    let ids: Vec<String> = rows.iter().map(|e| e.event_id.clone()).collect();
    let pending = relay_view(store, Consumer::Projected, |e| ours(e) == ids).await;
    assert_eq!(ours(&pending), ids);
    // A batch that is not the next past the cursor (the first event skipped) is refused and
    // folds nothing.
    let tally = Arc::new(Tally::default());
    let projections: Vec<Arc<dyn Projection>> = vec![tally.clone()];
    let first = pending.iter().position(|e| e.namespace == ns).unwrap();
    let mut skipping = pending.clone();
    skipping.remove(first);
    assert!(matches!(
        store.project(&skipping, &projections).await,
        Err(StoreError::CursorMoved)
    ));
    assert!(tally.folded(&ns).is_empty());
    // Folded: each event the projection takes, in order, once per call.
    store.project(&pending, &projections).await.unwrap();
    assert_eq!(tally.folded(&ns), ids);
    // The cursor is past them, and a batch folded again behind it does not move it back.
    store.project(&pending[..1], &projections).await.unwrap();
    let all: Vec<i32> = (0..crate::store::events::SHARDS).collect();
    let left = store.unprojected_events(&all, 100_000).await.unwrap();
    assert!(ours(&left).is_empty(), "{left:?}");
    assert_eq!(store.outbox_status(T0 + 5).await.unwrap().unprojected, 0);
    // While a broker is configured, folded rows wait to be sent before they go.
    store.purge_events(T0 + 8, 1_000_000, true).await.unwrap();
    assert_eq!(
        ours(&store.list_outbox(Some(&ns), 0, 100).await.unwrap()),
        ids
    );

    // A rebuild clears the projection, folds what it is given and sets the cursors back: a
    // batch read before it is refused, not folded past what the rebuild wiped; read again from
    // the start, everything is offered once more.
    let rebuilt = Arc::new(Tally::default());
    let projections: Vec<Arc<dyn Projection>> = vec![rebuilt.clone()];
    store
        .rebuild_projections(&projections, &pending[first..first + 1])
        .await
        .unwrap();
    assert_eq!(rebuilt.cleared.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(rebuilt.folded(&ns), ids[..1]);
    assert!(matches!(
        store.project(&pending[first + 1..], &projections).await,
        Err(StoreError::CursorMoved)
    ));
    let again = relay_view(store, Consumer::Projected, |e| ours(e) == ids).await;
    store.project(&again, &projections).await.unwrap();
    assert_eq!(
        rebuilt.folded(&ns).len(),
        4,
        "the first again, then the three"
    );

    // The broker's cursor is its own: folding sent nothing.
    let unsent = relay_view(store, Consumer::Sent, |e| ours(e) == ids).await;
    assert_eq!(ours(&unsent), ids);
    assert!(store.outbox_status(T0 + 5).await.unwrap().unsent >= 3);
    store.mark_sent(&unsent).await.unwrap();
    assert!(
        store
            .list_outbox(Some(&ns), 0, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.sent)
    );
    assert_eq!(store.outbox_status(T0 + 7).await.unwrap().unsent, 0);

    // Sent and folded rows go after the retention.
    assert!(store.purge_events(T0 + 8, 1_000_000, true).await.unwrap() >= 3);
    assert!(
        store
            .list_outbox(Some(&ns), 0, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // Without a broker nothing is ever sent: folded rows go after the retention all the same.
    let run = store.load_run(c.run.run_id).await.unwrap().unwrap();
    let mut later = history::signal(&run, "more", None, "t", T0 + 9, Dispatch::nobody(T0 + 9))
        .unwrap()
        .commit;
    later.outbox = vec![outbox_event(&run, 4, "thing.shipped", T0 + 9, "{}")];
    store.commit(&later).await.unwrap();
    let id = vec![later.outbox[0].event_id.clone()];
    let pending = relay_view(store, Consumer::Projected, |e| ours(e) == id).await;
    store.project(&pending, &projections).await.unwrap();
    store.purge_events(T0 + 10, 1_000_000, true).await.unwrap();
    assert_eq!(
        ours(&store.list_outbox(Some(&ns), 0, 100).await.unwrap()),
        id,
        "unsent: kept while a broker is configured"
    );
    store.purge_events(T0 + 10, 1_000_000, false).await.unwrap();
    assert!(
        store
            .list_outbox(Some(&ns), 0, 100)
            .await
            .unwrap()
            .is_empty(),
        "folded, no broker: purged"
    );
}

/// A projection that notes what it is given (the kit checks the host, not a read model).
#[derive(Default)]
struct Tally {
    folded: std::sync::Mutex<Vec<(String, String)>>,
    cleared: std::sync::atomic::AtomicUsize,
}

impl Tally {
    /// The ids folded of namespace `ns`, in order.
    fn folded(&self, ns: &str) -> Vec<String> {
        let folded = self.folded.lock().unwrap();
        folded
            .iter()
            .filter(|(n, _)| n == ns)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl Projection for Tally {
    fn name(&self) -> &'static str {
        "tally"
    }

    fn takes(&self, event: &StoredEvent) -> bool {
        event.event_type.starts_with("thing.")
    }

    async fn fold(
        &self,
        _tx: &mut ProjectionTx<'_>,
        batch: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut folded = self.folded.lock().unwrap();
        folded.extend(
            batch
                .iter()
                .map(|e| (e.namespace.clone(), e.event_id.clone())),
        );
        Ok(())
    }

    async fn clear(&self, _tx: &mut ProjectionTx<'_>) -> Result<(), ProjectionError> {
        self.cleared
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// Shard leases: live nodes share the shards evenly, never one shard at a time by two, and a
/// newcomer gets its share from a node that held them all.
pub async fn outbox_shards_are_leased_apart(store: &dyn Store) {
    let (a, b) = (unique("owner"), unique("owner"));
    // An hour ahead: every lease of a live relay (other tests' engines) has run out by then.
    let now = crate::clock::Clock::now(&crate::clock::SystemClock) + 3_600_000;
    let all = store.lease_shards(&a, now, 10_000).await.unwrap();
    assert_eq!(all.len(), 16, "alone, a node takes every shard");
    let none = store.lease_shards(&b, now, 10_000).await.unwrap();
    assert!(none.is_empty(), "nothing is free yet: {none:?}");
    // The first node sees the second and gives back half; the second takes them.
    let kept = store.lease_shards(&a, now + 1, 10_000).await.unwrap();
    assert_eq!(kept.len(), 8, "{kept:?}");
    let taken = store.lease_shards(&b, now + 2, 10_000).await.unwrap();
    assert!(!taken.is_empty() && taken.len() <= 8, "{taken:?}");
    assert!(
        taken.iter().all(|s| !kept.contains(s)),
        "{kept:?} / {taken:?}"
    );
    store.release_shards(&a).await.unwrap();
    store.release_shards(&b).await.unwrap();
    let status = store.outbox_status(now + 3).await.unwrap();
    assert!(status.leases.iter().all(|l| l.owner != a && l.owner != b));
}
