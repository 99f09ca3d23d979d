//! Schedules: each a row holding its spec, its state and when it must be looked at next. A
//! write names the version it read (two nodes acting on one time write once).

use crate::clock::Millis;
use crate::store::StoreError;

/// A schedule as stored: its spec and state encoded (`pb::Schedule`,
/// `schedules::ScheduleState`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRow {
    pub namespace: String,
    pub schedule_id: String,
    pub spec: Vec<u8>,
    pub state: Vec<u8>,
    pub next_fire_at: Millis,
    pub version: i64,
}

/// The schedules. Every method is atomic.
#[async_trait::async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Inserts a schedule (at version 1); `false` if its id is taken in its namespace.
    async fn create_schedule(&self, row: &ScheduleRow) -> Result<bool, StoreError>;

    /// One schedule.
    async fn load_schedule(
        &self,
        namespace: &str,
        schedule_id: &str,
    ) -> Result<Option<ScheduleRow>, StoreError>;

    /// Writes `row` (its spec, state and next time) if the stored one is still at
    /// `row.version`, and moves it to the next version; `false` if it moved on or is gone.
    async fn save_schedule(&self, row: &ScheduleRow) -> Result<bool, StoreError>;

    /// Deletes a schedule; `false` if there was none.
    async fn delete_schedule(&self, namespace: &str, schedule_id: &str)
    -> Result<bool, StoreError>;

    /// Up to `limit` schedules of `namespace` by id, after `after`.
    async fn list_schedules(
        &self,
        namespace: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<ScheduleRow>, StoreError>;

    /// Up to `limit` schedules due at `now` (next_fire_at <= now), earliest first: namespace
    /// and id.
    async fn due_schedules(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// When the earliest schedule is due, if any is.
    async fn next_schedule_at(&self) -> Result<Option<Millis>, StoreError>;
}
