//! Timers: the durable timer rows a run's changes write, read back when they come due.
//!
//! A timer is written and deleted by `RunStore::commit` (the change that starts, cancels or
//! fires it); this trait only finds the due ones and drops rows that no longer matter. Firing
//! one is a change of its run like any other.

use crate::clock::Millis;
use crate::ids::RunId;
use crate::store::StoreError;

/// A timer row that has come due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueTimer {
    pub run_id: RunId,
    pub key: String,
    pub fire_at: Millis,
}

/// The due timers. Every method is atomic.
#[async_trait::async_trait]
pub trait TimerStore: Send + Sync {
    /// Timers due at `now`, oldest first.
    async fn due_timers(&self, now: Millis, limit: usize) -> Result<Vec<DueTimer>, StoreError>;

    /// Deletes a timer row that no longer matters.
    async fn delete_timer(&self, run_id: RunId, key: &str) -> Result<(), StoreError>;
}
