//! Schedules: a workflow started at each time of a cron expression (in a time zone) or of an
//! interval. The times are pure functions of the spec (`spec`); what a schedule did, and what
//! it waits for, is its state, kept with it (`ScheduleState`). The engine looks at a schedule
//! when its next time comes (`Engine::fire_due_schedules`, from the timer loop) and acts on
//! every time that came: it starts the run whose workflow id is the schedule's id and the
//! time, with the reject-duplicate id policy, then writes the state if the schedule is still
//! at the version it read. A node that crashed in between, or two nodes acting on one time,
//! start that run once: the second start finds it.

pub mod spec;

pub use spec::Spec;

use crate::clock::Millis;
use martix_proto::v1 as pb;

/// A time older than this (unless the schedule says otherwise) is missed, not acted on.
pub const DEFAULT_CATCHUP_MS: Millis = 3_600_000;
/// The shortest catch-up window a schedule may have.
pub const MIN_CATCHUP_MS: Millis = 10_000;
/// Actions a schedule keeps for describe.
pub const RECENT_ACTIONS: usize = 10;
/// The most times one backfill acts on.
pub const MAX_BACKFILL: usize = 1_000;
/// The most times one look at a schedule goes through; past that (a schedule down for long on
/// a short interval) the rest are skipped as missed without being counted one by one.
pub const MAX_STEPS_PER_LOOK: usize = 10_000;

/// What a schedule did and waits for, stored with it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScheduleState {
    /// The latest time acted on (or missed, skipped); the next is the spec's first after it.
    #[prost(int64, tag = "1")]
    pub last_time: Millis,
    #[prost(message, repeated, tag = "2")]
    pub recent: Vec<pb::ScheduleActionRecord>,
    #[prost(int64, tag = "3")]
    pub started: i64,
    #[prost(int64, tag = "4")]
    pub skipped: i64,
    #[prost(int64, tag = "5")]
    pub missed: i64,
    /// The last run it started.
    #[prost(string, tag = "6")]
    pub running_workflow_id: String,
    #[prost(string, tag = "7")]
    pub running_run_id: String,
    /// A time waiting for that run to close (BUFFER_ONE); 0: none.
    #[prost(int64, tag = "8")]
    pub buffered_time: Millis,
    #[prost(int64, tag = "9")]
    pub created: Millis,
}

impl ScheduleState {
    /// Keeps `record` among the recent actions (the oldest goes past [`RECENT_ACTIONS`]).
    pub fn record(&mut self, record: pb::ScheduleActionRecord) {
        self.recent.push(record);
        if self.recent.len() > RECENT_ACTIONS {
            let extra = self.recent.len() - RECENT_ACTIONS;
            self.recent.drain(..extra);
        }
    }
}

/// The workflow id of a schedule's run for time `t`: `<schedule id>-<t in RFC 3339, UTC>`
/// (milliseconds only when `t` has some).
pub fn workflow_id(schedule_id: &str, t: Millis) -> String {
    let when = chrono::DateTime::from_timestamp_millis(t).unwrap_or_default();
    let format = if t % 1000 == 0 {
        chrono::SecondsFormat::Secs
    } else {
        chrono::SecondsFormat::Millis
    };
    format!("{schedule_id}-{}", when.to_rfc3339_opts(format, true))
}

/// How `overlap` reads (unspecified: skip).
pub fn overlap(raw: i32) -> pb::ScheduleOverlap {
    match pb::ScheduleOverlap::try_from(raw) {
        Ok(pb::ScheduleOverlap::Unspecified) | Err(_) => pb::ScheduleOverlap::Skip,
        Ok(o) => o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_id_names_its_schedule_and_time() {
        assert_eq!(
            workflow_id("nightly", 1_796_522_400_000),
            "nightly-2026-12-06T02:00:00Z"
        );
        assert_eq!(
            workflow_id("now", 1_796_522_400_123),
            "now-2026-12-06T02:00:00.123Z"
        );
    }

    #[test]
    fn recent_actions_keep_the_last_ten() {
        let mut s = ScheduleState::default();
        for i in 0..15 {
            s.record(pb::ScheduleActionRecord {
                outcome: format!("{i}"),
                ..Default::default()
            });
        }
        assert_eq!(s.recent.len(), RECENT_ACTIONS);
        assert_eq!(s.recent[0].outcome, "5");
        assert_eq!(s.recent[9].outcome, "14");
    }
}
