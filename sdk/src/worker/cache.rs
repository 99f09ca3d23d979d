//! The cache of live runs: the runs this worker keeps between workflow tasks (bounded, least
//! recently used evicted first), and keeping a cached copy what history holds: dropping it
//! when it no longer is, and applying the events a completion appended.

use super::Worker;
use crate::workflow::RunDriver;
use martix_proto::v1 as pb;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

type Cached = Arc<tokio::sync::Mutex<RunDriver>>;

/// A bounded cache of live runs, least recently used evicted first.
pub(super) struct RunCache {
    capacity: usize,
    runs: HashMap<String, Cached>,
    order: VecDeque<String>,
}

impl RunCache {
    /// An empty cache of up to `capacity` runs (0: none is kept).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            runs: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(super) fn get(&mut self, run_id: &str) -> Option<Cached> {
        let hit = self.runs.get(run_id).cloned();
        if hit.is_some() {
            self.order.retain(|r| r != run_id);
            self.order.push_back(run_id.to_owned());
        }
        hit
    }

    pub(super) fn insert(&mut self, run_id: &str, driver: Cached) {
        if self.capacity == 0 {
            return;
        }
        while self.runs.len() >= self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.runs.remove(&old);
        }
        self.runs.insert(run_id.to_owned(), driver);
        self.order.push_back(run_id.to_owned());
    }

    pub(super) fn contains(&self, run_id: &str) -> bool {
        self.runs.contains_key(run_id)
    }

    fn remove(&mut self, run_id: &str) {
        self.runs.remove(run_id);
        self.order.retain(|r| r != run_id);
    }
}

impl Worker {
    /// Drops a cached run (its copy is no longer what history holds, or the run is done).
    pub(super) fn evict(&self, run_id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
    }

    /// Applies events the engine returned (what a completion appended) to a cached run;
    /// whether the copy is still worth keeping.
    pub(super) fn catch_up(
        &self,
        d: &mut RunDriver,
        run_id: &str,
        events: &[pb::HistoryEvent],
    ) -> bool {
        if events.is_empty() {
            return true;
        }
        match d.apply_history(events) {
            Ok(()) => !d.finished,
            Err(e) => {
                tracing::warn!(run_id = %run_id, error = %e, "cached run disagrees with the events recorded; dropping it");
                false
            }
        }
    }
}
