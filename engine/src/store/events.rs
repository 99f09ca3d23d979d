//! Events: the outbox the relay sends from, the shards relays lease, and the cursors of the
//! projection host, which folds batches into the read models that domains register
//! (`events::projection`), in the transaction that moves its cursor.
//!
//! Outbox rows are written by `RunStore::commit`, with the change that publishes them; from
//! there each shard has two cursors, the broker's (sent) and the read models' (projected),
//! which move forward only, over rows in `(xact, position)` order.

pub use super::event::StoredEvent;
use super::projection::{Pools, Projection};
use crate::clock::Millis;
use crate::store::StoreError;
use std::sync::Arc;

/// Outbox shards: a subject's events all fall in one, and one node at a time sends a shard.
pub const SHARDS: i32 = 16;

/// 32-bit FNV-1a: small and stable across versions and nodes.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes.into_iter().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The shard of a subject: FNV-1a of `namespace \0 subject`.
pub fn shard_of(namespace: &str, subject: &str) -> i32 {
    let h = fnv1a(namespace.bytes().chain([0]).chain(subject.bytes()));
    (h % SHARDS as u32) as i32
}

/// The outbox at a glance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Rows in the outbox, about (at most this many; sent rows stay until the retention
    /// purges them).
    pub total: i64,
    pub unsent: i64,
    pub oldest_unsent_at: Option<Millis>,
    pub unprojected: i64,
    pub oldest_unprojected_at: Option<Millis>,
    /// Shards with a live lease.
    pub leases: Vec<ShardLease>,
}

/// A relay's lease of an outbox shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardLease {
    pub shard: i32,
    /// The relay holding it.
    pub owner: String,
    pub until: Millis,
}

/// The outbox, its shards and the projection cursors. Every method is atomic.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync {
    /// Renews this owner's shard leases and takes or gives back shards so live owners share
    /// them evenly; returns the shards held until `now + lease_ms`.
    async fn lease_shards(
        &self,
        owner: &str,
        now: Millis,
        lease_ms: i64,
    ) -> Result<Vec<i32>, StoreError>;

    /// Gives back every shard of `owner` (it stops).
    async fn release_shards(&self, owner: &str) -> Result<(), StoreError>;

    /// The oldest unsent events of `shards`, in outbox order.
    async fn unsent_events(
        &self,
        shards: &[i32],
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Moves the sent cursors of their shards past `events` (the broker confirmed them):
    /// events from `unsent_events`, a prefix of its answer. A cursor never moves back.
    async fn mark_sent(&self, events: &[StoredEvent]) -> Result<(), StoreError>;

    /// The oldest events of `shards` not yet folded into the read model, in outbox order.
    async fn unprojected_events(
        &self,
        shards: &[i32],
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Folds outbox events into `projections` (each the events it takes) and moves the
    /// projection cursors of their shards past them, in one transaction: events from
    /// `unprojected_events`, a prefix of its answer. `CursorMoved`, and nothing folded, if they
    /// are not the next rows past the cursors any more.
    async fn project(
        &self,
        events: &[StoredEvent],
        projections: &[Arc<dyn Projection>],
    ) -> Result<(), StoreError>;

    /// Rebuilds `projections` from `events` (in `rebuild_order`), in one transaction: each is
    /// cleared and folds the events it takes, and the projection cursors go back to the start,
    /// so the relay folds again what the rebuild did not hold (events committed after the
    /// histories were read; the projections skip those they hold).
    async fn rebuild_projections(
        &self,
        projections: &[Arc<dyn Projection>],
        events: &[StoredEvent],
    ) -> Result<(), StoreError>;

    /// The store's connection pools, for a domain's own tables.
    fn pools(&self) -> Pools;

    /// Moves the projection cursors past `events` without folding them: events the read
    /// model cannot take (`CursorMoved` as for `project`).
    async fn set_aside(&self, events: &[StoredEvent]) -> Result<(), StoreError>;

    /// Counts and ages of the outbox.
    async fn outbox_status(&self, now: Millis) -> Result<OutboxStatus, StoreError>;

    /// Outbox rows after `after_position`, in order (of one namespace, or all).
    async fn list_outbox(
        &self,
        namespace: Option<&str>,
        after_position: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Deletes rows projected, and sent if `sent_required` (a broker is configured: without
    /// one nothing is ever sent), that occurred before `before` (looking at each shard's
    /// oldest `limit` rows), and signal request ids older than it; returns how many outbox rows
    /// went.
    async fn purge_events(
        &self,
        before: Millis,
        limit: usize,
        sent_required: bool,
    ) -> Result<u64, StoreError>;
}

/// The relay's two readers of the outbox, each with a cursor per shard in `outbox_shards`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumer {
    /// The broker (`sent_xact`, `sent_position`).
    Sent,
    /// The read model (`projected_xact`, `projected_position`).
    Projected,
}

impl Consumer {
    /// The prefix of the cursor's columns.
    pub(crate) fn cursor(self) -> &'static str {
        match self {
            Consumer::Sent => "sent",
            Consumer::Projected => "projected",
        }
    }

    /// Moves the cursor of shard `$3` to `($1, $2)` unless it is there or past it already.
    pub(crate) fn advance_sql(self) -> &'static str {
        match self {
            Consumer::Sent => {
                "UPDATE outbox_shards SET sent_xact = $1, sent_position = $2 \
                 WHERE shard = $3 AND (sent_xact, sent_position) < ($1, $2)"
            }
            Consumer::Projected => {
                "UPDATE outbox_shards SET projected_xact = $1, projected_position = $2 \
                 WHERE shard = $3 AND (projected_xact, projected_position) < ($1, $2)"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            let s = shard_of("default", &format!("w-{i}"));
            assert!((0..SHARDS).contains(&s));
            seen.insert(s);
        }
        assert_eq!(
            seen.len(),
            SHARDS as usize,
            "200 subjects reach every shard"
        );
        // A fixed value: a change of the hash would move subjects between shards mid-flight.
        assert_eq!(shard_of("default", "w-1"), 13);
        assert_eq!(
            fnv1a(*b"a"),
            0xe40c_292c,
            "the published FNV-1a test vector"
        );
    }
}
