//! Group commit: one task writes every run change of a store, and what queued up while a
//! transaction ran goes into the next one together, so changes to different runs share a
//! commit (and its fsync) while each stays all or nothing.
//!
//! This module holds what both backends share: the writer task (`spawn_committer`), the rules
//! of a batch written in groups (`Groups`), and the rows and notices a change becomes. How a
//! group is sent is each backend's (`postgres/batch.rs`: one function call, one round trip;
//! `sqlite/batch.rs`: its statements in one transaction).

use super::Backend;
use crate::history::{RunCommit, TaskOp};
use crate::store::{StoreError, classify};
use martix_proto::v1 as pb;
use prost::Message as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Most run changes one group-commit transaction carries.
pub(crate) const MAX_BATCH: usize = 64;

/// Events of one change per `history_events` row, at most (a reset copying a long history
/// writes several rows).
pub(crate) const EVENTS_PER_ROW: usize = 256;

/// One run's change, and where its outcome goes.
pub(crate) struct Pending {
    pub(crate) commit: Arc<RunCommit>,
    pub(crate) done: oneshot::Sender<Result<(), StoreError>>,
}

/// Changes a store's writer queue holds: past this a change is refused as `Overloaded` (the
/// caller retries after a moment) instead of the queue growing without bound.
pub(crate) const COMMIT_QUEUE: usize = 8_192;

/// Group commit: one task writes every change of this store. What queued up while a
/// transaction ran goes into the next one together (up to `MAX_BATCH`), so changes to
/// different runs share a commit (and its fsync), each still all or nothing
/// (`Backend::write_batch`). Nothing waits to fill a batch.
pub(crate) fn spawn_committer<DB: Backend>(
    pool: sqlx::Pool<DB>,
    notify_as: Option<String>,
    writes: Arc<AtomicU64>,
    writers: usize,
    hold_connection: bool,
) -> mpsc::Sender<Pending> {
    let (tx, rx) = mpsc::channel::<Pending>(COMMIT_QUEUE);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    for _ in 0..writers.max(1) {
        let (pool, notify_as, writes, rx) =
            (pool.clone(), notify_as.clone(), writes.clone(), rx.clone());
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            // With `hold_connection` a writer keeps its connection from batch to batch: sqlx
            // pings a connection (a round trip) each time one goes back to the pool and again
            // before it hands it out. A held connection that died (the database restarted)
            // fails its batch as `Unavailable`, which callers retry, and is closed. SQLite's
            // one write connection is shared with claims and the relay, so its writer takes it
            // per batch.
            let mut held: Option<sqlx::pool::PoolConnection<DB>> = None;
            loop {
                // Take what is queued (waiting for at least one), then let the next writer take
                // what queues up meanwhile.
                let n = rx.lock().await.recv_many(&mut batch, MAX_BATCH).await;
                if n == 0 {
                    return;
                }
                let mut conn = match held.take() {
                    Some(conn) => conn,
                    None => match pool.acquire().await {
                        Ok(conn) => conn,
                        Err(e) => {
                            let why = classify(e).to_string();
                            for p in batch.drain(..) {
                                let _ = p.done.send(Err(StoreError::Unavailable(why.clone())));
                            }
                            continue;
                        }
                    },
                };
                writes.fetch_add(1, Ordering::Relaxed);
                // One lock order for every batch: no deadlocks between them.
                batch.sort_by_key(|p: &Pending| p.commit.run.run_id);
                let commits: Vec<&RunCommit> = batch.iter().map(|p| &*p.commit).collect();
                let groups = DB::write_batch(&mut conn, &commits, notify_as.as_deref()).await;
                if groups.broken && hold_connection {
                    // Maybe a lost connection: never reuse it. (SQLite's is never closed: an
                    // in-memory database lives only in its connection.)
                    conn.close_on_drop();
                } else if hold_connection {
                    held = Some(conn);
                }
                for (p, outcome) in batch.drain(..).zip(groups.outcomes()) {
                    let _ = p.done.send(outcome);
                }
            }
        });
    }
    tx
}

/// A `history_events` row: events `first..=last` of a run, length-delimited in `data`.
pub(crate) struct HistoryRow {
    pub(crate) run_id: String,
    pub(crate) first: i64,
    pub(crate) last: i64,
    pub(crate) data: Vec<u8>,
}

/// A change's events as `history_events` rows, up to `EVENTS_PER_ROW` events each.
pub(crate) fn history_rows(
    run_id: &str,
    events: &[pb::HistoryEvent],
) -> impl Iterator<Item = HistoryRow> {
    events.chunks(EVENTS_PER_ROW).map(move |chunk| {
        let mut data = Vec::new();
        for e in chunk {
            e.encode_length_delimited(&mut data)
                .expect("a Vec grows as needed");
        }
        HistoryRow {
            run_id: run_id.to_owned(),
            first: chunk[0].event_id,
            last: chunk[chunk.len() - 1].event_id,
            data,
        }
    })
}

/// The notices a commit sends: one per queue that got a task no poller of this node took.
pub(crate) fn notices(commit: &RunCommit) -> Vec<String> {
    let mut out = Vec::new();
    for c in std::iter::once(commit).chain(commit.new_run.as_deref()) {
        let ns = &c.run.namespace;
        if let Some(w) = &c.run.wft
            && w.lease.is_none()
        {
            // The run id keeps notices of several runs in one group-commit transaction apart:
            // PostgreSQL folds identical payloads of one transaction into one.
            out.push(format!("{ns}\tW\t{}\t{}", w.queue, c.run.run_id));
        }
        for op in &c.tasks {
            if let TaskOp::Insert(t) = op
                && t.lease.is_none()
            {
                out.push(format!("{ns}\tA\t{}\t{}", t.task_queue, c.run.run_id));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether a run's new activity tasks may be written at the batch's end: not when a
/// later statement of the change touches them (an activity scheduled and cancelled
/// by one completion; a closing run's deletes).
pub(crate) fn inserts_can_wait(c: &RunCommit) -> bool {
    !c.closed
        && c.tasks.iter().all(|op| match op {
            TaskOp::Insert(_) => true,
            TaskOp::Retry {
                scheduled_event_id: id,
                ..
            }
            | TaskOp::RetryNow {
                scheduled_event_id: id,
                ..
            }
            | TaskOp::Hold {
                scheduled_event_id: id,
                ..
            }
            | TaskOp::Park {
                scheduled_event_id: id,
                ..
            }
            | TaskOp::Unpark {
                scheduled_event_id: id,
                ..
            }
            | TaskOp::Delete {
                scheduled_event_id: id,
                ..
            } => !c
                .tasks
                .iter()
                .any(|o| matches!(o, TaskOp::Insert(t) if t.scheduled_event_id == *id)),
        })
}

/// How writing a group of a batch failed.
pub(crate) enum Failed {
    /// Change `i` was refused or failed after it wrote (or broke the transaction): the
    /// group is rolled back and written again without it.
    Change(usize, StoreError),
    /// A statement the whole group shares failed: each change is written alone.
    Batch(StoreError),
    /// The group could not be written at all (no connection, a failed commit), or its
    /// outcome could not be read.
    All(StoreError),
}

/// The outcomes of a batch written in groups, one transaction each: first all its changes
/// together; a change refused or failing after it wrote is answered with that and the others
/// are written again without it (rare: a lease or a request id lost since the change was
/// decided, a broken row); if a statement the group shares fails, each change is written
/// alone, so a bad change fails by itself.
pub(crate) struct Groups {
    out: Vec<Option<Result<(), StoreError>>>,
    alone: bool,
    /// A group failed as a whole (`Failed::All`): the connection may be broken.
    pub(crate) broken: bool,
}

/// Writes one group of a batch (indices into it, in order) in one transaction, each backend
/// its way.
pub(crate) trait GroupWriter {
    fn write_group(
        &mut self,
        group: &[usize],
    ) -> impl std::future::Future<Output = Result<Vec<Result<(), StoreError>>, Failed>> + Send;
}

impl Groups {
    /// Writes a batch of `n` changes with `writer`, group after group, until each change is
    /// answered.
    pub(crate) async fn write(n: usize, writer: &mut impl GroupWriter) -> Groups {
        let mut groups = Groups::new(n);
        loop {
            let next = groups.next();
            if next.is_empty() {
                return groups;
            }
            for group in next {
                let written = writer.write_group(&group).await;
                groups.record(&group, written);
            }
        }
    }

    fn new(n: usize) -> Self {
        Self {
            out: (0..n).map(|_| None).collect(),
            alone: false,
            broken: false,
        }
    }

    /// The groups to write next (indices, in order); none once every change is answered.
    fn next(&self) -> Vec<Vec<usize>> {
        let live: Vec<usize> = (0..self.out.len())
            .filter(|&i| self.out[i].is_none())
            .collect();
        if live.is_empty() {
            Vec::new()
        } else if self.alone {
            live.iter().map(|&i| vec![i]).collect()
        } else {
            vec![live]
        }
    }

    /// What writing `group` came to.
    fn record(&mut self, group: &[usize], written: Result<Vec<Result<(), StoreError>>, Failed>) {
        match written {
            Ok(outcomes) => {
                for (&i, o) in group.iter().zip(outcomes) {
                    self.out[i] = Some(o);
                }
            }
            Err(Failed::Change(i, e)) => self.out[i] = Some(Err(e)),
            Err(Failed::Batch(e)) if group.len() == 1 => self.out[group[0]] = Some(Err(e)),
            Err(Failed::Batch(_)) => self.alone = true,
            Err(Failed::All(e)) => {
                // Only an unreachable database may have broken the connection; a result that
                // could not be decoded is answered as corrupt, not as worth retrying.
                let corrupt = matches!(e, StoreError::Corrupt(_));
                self.broken |= !corrupt;
                let why = e.to_string();
                for &i in group {
                    self.out[i] = Some(Err(if corrupt {
                        StoreError::Corrupt(why.clone())
                    } else {
                        StoreError::Unavailable(why.clone())
                    }));
                }
            }
        }
    }

    /// One outcome per change, in order.
    pub(crate) fn outcomes(self) -> Vec<Result<(), StoreError>> {
        self.out
            .into_iter()
            .map(|o| o.expect("every change answered"))
            .collect()
    }
}
