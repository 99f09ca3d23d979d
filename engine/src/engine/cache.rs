//! The run cache: the checkpoints of open runs as this node last wrote or claimed them, with
//! the history events written since the first one the run's worker has not seen. Most changes
//! of a run go through the node that made the one before, so they need no read, and a workflow
//! task's history goes to the worker without being read back. The cache is advice only: a
//! cached checkpoint is trusted through a write, which the store refuses if another node moved
//! the run on (see `commit`). It stays bounded, in runs and in events and bytes per run, and
//! keeps no closed run. `load` is the read for when it has nothing.

use super::Engine;
use crate::error::EngineError;
use crate::history::{Run, RunCommit};
use crate::ids::RunId;
use martix_proto::v1 as pb;
use prost::Message;

/// A checkpoint this node wrote, with the history events it wrote since the first one its
/// worker has not seen (what the next workflow task sends).
pub(super) struct CachedRun {
    run: Run,
    tail: Vec<pb::HistoryEvent>,
    /// Encoded size of `tail`.
    tail_bytes: usize,
}

/// Longest history tail a cached run keeps, in events and in bytes (a longer one is read
/// from the store).
const TAIL_MAX: usize = 256;

const TAIL_MAX_BYTES: usize = 64 * 1024;

/// Most checkpoints a node keeps (beyond, an arbitrary one makes room).
const RUN_CACHE_MAX: usize = 20_000;

/// Makes room in the run cache for `run_id` (beyond `RUN_CACHE_MAX`, an arbitrary run goes).
fn make_room(runs: &mut std::collections::HashMap<RunId, CachedRun>, run_id: RunId) {
    if runs.len() >= RUN_CACHE_MAX
        && !runs.contains_key(&run_id)
        && let Some(victim) = runs.keys().next().copied()
    {
        runs.remove(&victim);
    }
}

impl Engine {
    pub(super) fn cached(&self, run_id: RunId) -> Option<Run> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&run_id)
            .map(|c| c.run.clone())
    }

    /// The events `from..next` of a run, if this node wrote them all and still has them.
    pub(super) fn cached_events(
        &self,
        run_id: RunId,
        from: i64,
        next: i64,
    ) -> Option<Vec<pb::HistoryEvent>> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let tail = &runs.get(&run_id)?.tail;
        let start = tail.iter().position(|e| e.event_id == from)?;
        let events = &tail[start..];
        (events.last()?.event_id == next - 1).then(|| events.to_vec())
    }

    /// Remembers a run as a commit wrote it (at its new version); closed runs are dropped.
    pub(super) fn remember(&self, c: &RunCommit) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        for c in std::iter::once(c).chain(c.new_run.as_deref()) {
            // Closed runs, and checkpoints holding large payloads (buffered signals), are not
            // kept: the cache stays small whatever the workflows carry.
            if !c.run.is_open() || c.run.state.encoded_len() > TAIL_MAX_BYTES {
                runs.remove(&c.run.run_id);
                continue;
            }
            make_room(&mut runs, c.run.run_id);
            let mut written = c.run.clone();
            written.version = c.expected_version.map_or(1, |v| v + 1);
            // The tail goes on if this commit's events follow it (no other node wrote between).
            let (mut tail, mut tail_bytes) = match runs.remove(&written.run_id) {
                Some(prev)
                    if prev.tail.last().map(|e| e.event_id + 1)
                        == c.events.first().map(|e| e.event_id) =>
                {
                    (prev.tail, prev.tail_bytes)
                }
                _ => (Vec::new(), 0),
            };
            tail_bytes += c.events.iter().map(Message::encoded_len).sum::<usize>();
            tail.extend(c.events.iter().cloned());
            let keep_from = written.state.sticky_from.max(1);
            let seen = tail.partition_point(|e| e.event_id < keep_from);
            tail_bytes -= tail[..seen].iter().map(Message::encoded_len).sum::<usize>();
            tail.drain(..seen);
            if tail.len() > TAIL_MAX || tail_bytes > TAIL_MAX_BYTES {
                tail.clear();
                tail_bytes = 0;
            }
            runs.insert(
                written.run_id,
                CachedRun {
                    run: written,
                    tail,
                    tail_bytes,
                },
            );
        }
    }

    /// Remembers a run as a claim wrote it (the store's copy at its new version), so that
    /// the task's completion is decided without reading it again. Its history tail is not
    /// known here.
    pub(super) fn remember_claimed(&self, run: &Run) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if !run.is_open() || run.state.encoded_len() > TAIL_MAX_BYTES {
            runs.remove(&run.run_id);
            return;
        }
        // The tail this node wrote still holds if the claim changed nothing but the lease.
        let (tail, tail_bytes) = match runs.remove(&run.run_id) {
            Some(prev) if prev.tail.last().map(|e| e.event_id + 1) == Some(run.next_event_id) => {
                (prev.tail, prev.tail_bytes)
            }
            _ => (Vec::new(), 0),
        };
        make_room(&mut runs, run.run_id);
        runs.insert(
            run.run_id,
            CachedRun {
                run: run.clone(),
                tail,
                tail_bytes,
            },
        );
    }

    pub(super) fn forget(&self, run_id: RunId) {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run_id);
    }

    pub(super) async fn load(&self, run_id: RunId) -> Result<Run, EngineError> {
        self.store
            .load_run(run_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("run {run_id} does not exist")))
    }
}
