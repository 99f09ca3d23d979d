//! History and state machine: pure functions from a run's checkpoint and a request to the
//! changes of one transaction (`RunCommit`). No I/O here; the store writes what these return,
//! all or nothing, and time comes in as an argument. So does who is there to take the tasks a
//! change creates (`Dispatch`: the reporting worker's sticky queue and free slots, the pollers
//! waiting on the node): a decision leases them in its change and says who gets which
//! (`Decided`), and the engine writes it and hands them out as it says, changing nothing.
//!
//! Rules kept here:
//! - event ids are dense from 1; history is only appended to;
//! - at most one workflow task per run is outstanding; events that arrive while one is in
//!   flight are buffered in the checkpoint and appended after it completes;
//! - only the final outcome of an activity reaches history (retries live in the checkpoint).

mod decide;
mod dispatch;
mod reset;
mod retry;
pub(crate) mod state;

pub use decide::*;
pub use dispatch::{
    Decided, Dispatch, EagerSlots, LeasedTask, PollerId, Pollers, Sticky, ToPoller, ToReporter,
};
pub use reset::{reset, reset_point};
pub use retry::retry_delay;
pub use state::*;

use crate::clock::{Millis, to_timestamp};
use crate::error::EngineError;
use crate::ids::{RunId, TaskQueue};
use martix_proto::v1 as pb;
use pb::history_event::Attributes;

/// Changes to timers of a run.
#[derive(Clone, Debug, PartialEq)]
pub enum TimerOp {
    Insert { key: String, fire_at: Millis },
    Delete { key: String },
}

/// Changes to activity task rows of a run.
// Most ops a change holds insert a task: boxing them would cost an allocation per task for the
// little memory the other, smaller variants would save.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum TaskOp {
    Insert(ActivityTask),
    /// The attempt failed and is retried later: the row is reset, held by no one.
    /// Requires the row to be held by `lease_id`.
    Retry {
        scheduled_event_id: i64,
        attempt: i32,
        visible_at: Millis,
        lease_id: String,
    },
    /// An operator asked for the waiting attempt now: the row becomes available at once
    /// (only if no worker holds it), with `attempt`.
    RetryNow {
        scheduled_event_id: i64,
        attempt: i32,
        visible_at: Millis,
    },
    /// The row's next attempt becomes available at `visible_at` if no worker holds it; a row
    /// a worker holds, or none, is left as it is (pausing parks, resuming releases).
    Hold {
        scheduled_event_id: i64,
        visible_at: Millis,
    },
    /// A circuit breaker of the holder's worker refused the attempt: the row is parked behind
    /// `breaker` (held by no worker, at the same attempt, until `Unpark`). Requires the row to
    /// be held by `lease_id`.
    Park {
        scheduled_event_id: i64,
        lease_id: String,
        breaker: String,
    },
    /// The breaker a row is parked behind lets calls through: the row becomes available at
    /// `visible_at`. A row not parked behind `breaker` is left as it is.
    Unpark {
        scheduled_event_id: i64,
        breaker: String,
        visible_at: Millis,
    },
    /// The activity is resolved. With `lease_id`, requires the row to be held by it.
    Delete {
        scheduled_event_id: i64,
        lease_id: Option<String>,
    },
}

/// When a parked task becomes available: never, until something releases it (9999-12-31, a
/// time every timestamp type holds). A paused run's tasks are parked; so are tasks behind a
/// circuit breaker, whose rows are also held until then by the breaker (`breaker_lease`).
pub const PARKED_UNTIL: Millis = 253_402_300_799_000;

/// The lease id of a task row parked behind circuit breaker `breaker`.
pub fn breaker_lease(breaker: &str) -> String {
    format!("{BREAKER_LEASE_PREFIX}{breaker}")
}

/// The breaker a task row's lease id says it is parked behind, if it is one.
pub fn breaker_of_lease(lease_id: &str) -> Option<&str> {
    lease_id.strip_prefix(BREAKER_LEASE_PREFIX)
}

const BREAKER_LEASE_PREFIX: &str = "breaker:";

/// Checks a circuit breaker's name as a request gives it in `field`: 1 to 255 bytes without
/// control characters.
pub fn check_breaker_name(field: &'static str, name: &str) -> Result<(), EngineError> {
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(EngineError::invalid(
            field,
            "must be 1 to 255 bytes without control characters",
        ));
    }
    Ok(())
}

/// Everything one transaction writes for one run (and, on continue-as-new, the next run).
#[derive(Clone, Debug, PartialEq)]
pub struct RunCommit {
    /// The checkpoint after the change (its `version` is the one read).
    pub run: Run,
    /// `None`: a new run, inserted; `Some(v)`: the row must still be at version `v`.
    pub expected_version: Option<i64>,
    pub events: Vec<pb::HistoryEvent>,
    pub tasks: Vec<TaskOp>,
    pub timers: Vec<TimerOp>,
    /// The run closed: drop every task row and timer it still has.
    pub closed: bool,
    /// A timer row that must exist and is deleted (it fired): guards against firing twice.
    pub fired_timer: Option<String>,
    /// A run created in the same transaction (continue-as-new).
    pub new_run: Option<Box<RunCommit>>,
    /// Timer rows for other runs, written with this change (a child's close for its parent,
    /// a parent's close policy for its children): what one run tells another, durably and
    /// without touching that run's checkpoint. A row already there stays as it is.
    pub foreign_timers: Vec<ForeignTimer>,
    /// Search attributes of the run set by this change (a value replaces the stored one of
    /// its name), indexed for `ListWorkflows`' query.
    pub search_attributes: Vec<(String, pb::SearchAttributeValue)>,
    /// Business events to write to the outbox (published by this change's workflow task).
    pub outbox: Vec<OutboxEvent>,
    /// A request id recorded with the change (a signal's, scoped to its workflow id, see
    /// `engine::requests::Signal::key`): a change whose id was recorded before fails with
    /// `StoreError::Duplicate` and writes nothing.
    pub request_id: Option<String>,
    /// What the request said (`engine::requests::Signal::fingerprint`), recorded with its id
    /// so that the id reused for another signal is told apart from a retry.
    pub request_fingerprint: i64,
    /// When the change was decided.
    pub at: Millis,
    /// A new run (`expected_version: None`) whose workflow id must never have been used:
    /// a start that did not read the id's latest run. If any run of the id exists the store
    /// writes nothing and answers `StoreError::IdUsed`.
    pub fresh_id: bool,
}

impl RunCommit {
    /// This change followed by `next`, decided on the run this one leaves, as one
    /// transaction: the version check stays this one's, the rows of both are written.
    pub fn then(mut self, next: RunCommit) -> RunCommit {
        debug_assert!(self.new_run.is_none() && !self.closed && self.request_id.is_none());
        self.run = next.run;
        self.events.extend(next.events);
        self.tasks.extend(next.tasks);
        self.timers.extend(next.timers);
        self.closed = next.closed;
        self.fired_timer = self.fired_timer.or(next.fired_timer);
        self.new_run = next.new_run;
        self.foreign_timers.extend(next.foreign_timers);
        self.search_attributes.extend(next.search_attributes);
        self.outbox.extend(next.outbox);
        self.at = next.at;
        self
    }
}

/// A timer row a change writes for another run (see `RunCommit::foreign_timers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignTimer {
    pub run_id: RunId,
    pub key: String,
    pub fire_at: Millis,
}

/// A business event as the outbox holds it until it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Stable: `<run id>/<history event id>`.
    pub event_id: String,
    pub namespace: String,
    /// The workflow id that published it (the business key).
    pub subject: String,
    pub workflow_type: String,
    pub run_id: RunId,
    /// Per subject, from 1, without gaps.
    pub sequence: i64,
    pub event_type: String,
    pub occurred_at: Millis,
    /// A JSON object.
    pub body: String,
}

/// Builds one `RunCommit` from a checkpoint: appends events, keeps the checkpoint in step.
pub(crate) struct Transition {
    run: Run,
    now: Millis,
    expected_version: Option<i64>,
    events: Vec<pb::HistoryEvent>,
    tasks: Vec<TaskOp>,
    timers: Vec<TimerOp>,
    closed: bool,
    fired_timer: Option<String>,
    new_run: Option<Box<RunCommit>>,
    foreign_timers: Vec<ForeignTimer>,
    search_attributes: Vec<(String, pb::SearchAttributeValue)>,
    outbox: Vec<OutboxEvent>,
}

impl Transition {
    pub(crate) fn new(run: &Run, now: Millis) -> Self {
        Self {
            expected_version: Some(run.version),
            run: run.clone(),
            now,
            events: Vec::new(),
            tasks: Vec::new(),
            timers: Vec::new(),
            closed: false,
            fired_timer: None,
            new_run: None,
            foreign_timers: Vec::new(),
            search_attributes: Vec::new(),
            outbox: Vec::new(),
        }
    }

    pub(crate) fn for_new_run(run: Run, now: Millis) -> Self {
        let mut t = Self::new(&run, now);
        t.expected_version = None;
        t
    }

    pub(crate) fn run(&self) -> &Run {
        &self.run
    }

    pub(crate) fn run_mut(&mut self) -> &mut Run {
        &mut self.run
    }

    pub(crate) fn now(&self) -> Millis {
        self.now
    }

    /// Appends an event to history and returns its id.
    pub(crate) fn append(&mut self, attributes: Attributes) -> i64 {
        let event_id = self.run.next_event_id;
        self.run.next_event_id += 1;
        self.push_event(pb::HistoryEvent {
            event_id,
            event_time: Some(to_timestamp(self.now)),
            attributes: Some(attributes),
        });
        event_id
    }

    /// Adds an event to the change, counting its bytes into the run's history size.
    fn push_event(&mut self, event: pb::HistoryEvent) {
        self.run.state.history_bytes += prost::Message::encoded_len(&event) as i64;
        self.events.push(event);
    }

    /// Records events that come from outside the workflow (activity result, timer, signal):
    /// buffered while a workflow task is in flight, otherwise appended, with a workflow task
    /// scheduled after them to deliver them if none is outstanding.
    pub(crate) fn add_external(&mut self, events: impl IntoIterator<Item = Attributes>) {
        let in_flight = self.run.wft.as_ref().map(|w| w.in_flight(self.now));
        for attributes in events {
            if in_flight == Some(true) {
                self.run.state.buffered.push(pb::HistoryEvent {
                    event_id: 0,
                    event_time: Some(to_timestamp(self.now)),
                    attributes: Some(attributes),
                });
            } else {
                self.append(attributes);
            }
        }
        if in_flight.is_none() {
            self.schedule_workflow_task();
        }
    }

    /// Appends the buffered events; returns whether there were any.
    pub(crate) fn flush_buffered(&mut self) -> bool {
        let buffered = std::mem::take(&mut self.run.state.buffered);
        let any = !buffered.is_empty();
        for ev in buffered {
            let event_id = self.run.next_event_id;
            self.run.next_event_id += 1;
            if let Some(Attributes::WorkflowUpdateAccepted(a)) = &ev.attributes
                && let Some(u) = self
                    .run
                    .state
                    .updates
                    .iter_mut()
                    .find(|u| u.update_id == a.update_id)
            {
                u.accepted_event_id = event_id;
            }
            self.push_event(pb::HistoryEvent { event_id, ..ev });
        }
        any
    }

    /// Schedules the run's workflow task (first attempt) on the workflow's task queue.
    pub(crate) fn schedule_workflow_task(&mut self) {
        // The sticky queue was checked when a worker named it.
        let queue = TaskQueue::parse(&self.run.state.sticky_queue)
            .unwrap_or_else(|_| self.run.task_queue.clone());
        let timeout = self.run.state.workflow_task_timeout_ms;
        let id = self.append(Attributes::WorkflowTaskScheduled(
            pb::WorkflowTaskScheduledAttributes {
                task_queue: queue.to_string(),
                start_to_close_timeout: Some(ms_to_duration(timeout)),
                attempt: 1,
            },
        ));
        self.run.state.wft_last_failure = None;
        self.run.wft = Some(WorkflowTask {
            queue,
            attempt: 1,
            scheduled_event_id: id,
            visible_at: self.now,
            lease: None,
        });
    }

    pub(crate) fn push_task(&mut self, op: TaskOp) {
        self.tasks.push(op);
    }

    pub(crate) fn push_timer(&mut self, op: TimerOp) {
        self.timers.push(op);
    }

    /// A timer row for another run, due now: what that run must learn from this change.
    pub(crate) fn tell(&mut self, run_id: RunId, key: String) {
        self.foreign_timers.push(ForeignTimer {
            run_id,
            key,
            fire_at: self.now,
        });
    }

    /// Sets search attributes of the run (the checkpoint's, and the indexed rows).
    pub(crate) fn set_search_attributes(
        &mut self,
        attributes: impl IntoIterator<Item = (String, pb::SearchAttributeValue)>,
    ) {
        for (name, value) in attributes {
            self.run
                .state
                .search_attributes
                .insert(name.clone(), value.clone());
            self.search_attributes.push((name, value));
        }
    }

    pub(crate) fn set_fired_timer(&mut self, key: String) {
        self.fired_timer = Some(key);
    }

    /// Records a business event the workflow published: its history event, and its outbox row.
    pub(crate) fn publish(&mut self, event_type: &str, body: pb::Payload, completed: i64) {
        let sequence = self.run.state.events_published + 1;
        self.run.state.events_published = sequence;
        let history_id = self.run.next_event_id;
        let event_id = format!("{}/{history_id}", self.run.run_id.to_text());
        let json = String::from_utf8_lossy(&body.data).into_owned();
        self.append(Attributes::EventPublished(pb::EventPublishedAttributes {
            event_type: event_type.to_owned(),
            body: Some(body),
            event_id: event_id.clone(),
            sequence,
            workflow_task_completed_event_id: completed,
        }));
        self.outbox.push(OutboxEvent {
            event_id,
            namespace: self.run.namespace.to_string(),
            subject: self.run.workflow_id.to_string(),
            workflow_type: self.run.workflow_type.to_string(),
            run_id: self.run.run_id,
            sequence,
            event_type: event_type.to_owned(),
            occurred_at: self.now,
            body: json,
        });
    }

    pub(crate) fn set_new_run(&mut self, next: RunCommit) {
        self.new_run = Some(Box::new(next));
    }

    /// Closes the run with `status`, appending its closing event. Pending work is dropped;
    /// children are dealt with by their close policy, and a parent is told when the workflow
    /// ends (not when it continues as new: its next run carries the parent on).
    pub(crate) fn close(&mut self, status: pb::WorkflowStatus, attributes: Attributes) {
        self.append(attributes);
        self.run.status = status;
        self.run.close_time = Some(self.now);
        self.run.wft = None;
        self.run.state.activities.clear();
        self.run.state.timers.clear();
        self.run.state.buffered.clear();
        // Their callers hear that the run closed without completing them.
        self.run.state.updates.clear();
        for child in std::mem::take(&mut self.run.state.children) {
            // A child not started yet never starts: its start timer goes with the run's.
            if let (Some(key), Ok(run_id)) = (
                decide::children::close_policy_key(&child),
                RunId::parse("run_id", &child.run_id),
            ) {
                self.tell(run_id, key);
            }
        }
        if status != pb::WorkflowStatus::ContinuedAsNew
            && let Some(parent) = self.run.state.parent.clone()
            && let Some(run_id) = parent
                .workflow_execution
                .as_ref()
                .and_then(|e| RunId::parse("run_id", &e.run_id).ok())
        {
            let key = child_closed_key(parent.initiated_event_id, self.run.run_id);
            self.tell(run_id, key);
        }
        self.closed = true;
    }

    pub(crate) fn finish(mut self) -> RunCommit {
        if self.run.state.is_paused() && !self.closed {
            self.park();
        }
        RunCommit {
            run: self.run,
            expected_version: self.expected_version,
            events: self.events,
            tasks: self.tasks,
            timers: self.timers,
            closed: self.closed,
            fired_timer: self.fired_timer,
            new_run: self.new_run,
            foreign_timers: self.foreign_timers,
            search_attributes: self.search_attributes,
            outbox: self.outbox,
            request_id: None,
            request_fingerprint: 0,
            at: self.now,
            fresh_id: false,
        }
    }
}

impl Transition {
    /// Parks what a paused run's change would make available: its workflow task (also one a
    /// worker holds: should its lease run out, no one claims it) and the activity attempts the
    /// change inserts, retries or runs now. The checkpoint keeps when each attempt is due.
    fn park(&mut self) {
        if let Some(wft) = self.run.wft.as_mut() {
            wft.visible_at = PARKED_UNTIL;
        }
        for op in &mut self.tasks {
            match op {
                TaskOp::Insert(ActivityTask { visible_at, .. })
                | TaskOp::Retry { visible_at, .. }
                | TaskOp::RetryNow { visible_at, .. }
                | TaskOp::Unpark { visible_at, .. } => *visible_at = PARKED_UNTIL,
                TaskOp::Hold { .. } | TaskOp::Park { .. } | TaskOp::Delete { .. } => {}
            }
        }
    }
}

/// Milliseconds as a protobuf duration.
pub fn ms_to_duration(ms: i64) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// The longest duration taken from a caller: a hundred years (so `now + ms` cannot overflow).
const MAX_DURATION_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// A protobuf duration in milliseconds (0 for none; a caller's value saturates, clamped to
/// zero and a hundred years).
pub fn duration_to_ms(d: Option<&pbjson_types::Duration>) -> i64 {
    d.map_or(0, |d| {
        d.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(d.nanos) / 1_000_000)
            .clamp(0, MAX_DURATION_MS)
    })
}

/// The timer row key of a user timer.
pub fn user_timer_key(timer_id: &str) -> String {
    format!("t:{timer_id}")
}

/// The timer row key of an activity's schedule-to-close timeout.
pub fn schedule_to_close_key(scheduled_event_id: i64) -> String {
    format!("a:{scheduled_event_id}:s2c")
}

/// The timer row key of an activity's schedule-to-start timeout.
pub fn schedule_to_start_key(scheduled_event_id: i64) -> String {
    format!("a:{scheduled_event_id}:s2s")
}

/// The timer row key (on the parent) that starts the child initiated by event `initiated`.
pub fn child_start_key(initiated: i64) -> String {
    format!("c:{initiated}:start")
}

/// The timer row key (on the parent) by which child run `child` says its workflow closed.
pub fn child_closed_key(initiated: i64, child: RunId) -> String {
    format!("c:{initiated}:closed:{}", child.to_text())
}

/// The timer row key (on a child) by which its parent, closing, terminates it.
pub const PARENT_TERMINATES_KEY: &str = "p:terminate";
/// The timer row key (on a child) by which its parent asks it to cancel.
pub const PARENT_CANCELS_KEY: &str = "p:cancel";

/// The timer row key of a run's run timeout.
pub const RUN_TIMEOUT_KEY: &str = "wf:run";
/// The timer row key of a workflow's execution timeout.
pub const EXECUTION_TIMEOUT_KEY: &str = "wf:exec";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_durations_saturate_and_are_clamped() {
        let d = |seconds, nanos| Some(pbjson_types::Duration { seconds, nanos });
        assert_eq!(duration_to_ms(d(2, 500_000_000).as_ref()), 2_500);
        assert_eq!(duration_to_ms(None), 0);
        assert_eq!(
            duration_to_ms(d(i64::MAX, 999_999_999).as_ref()),
            MAX_DURATION_MS
        );
        assert_eq!(duration_to_ms(d(-5, 0).as_ref()), 0);
        // A timer a caller set as far as it could still fires at a representable time.
        let now = 1_764_000_000_000;
        assert!(now + duration_to_ms(d(i64::MAX, 0).as_ref()) > now);
    }

    #[test]
    fn durations_keep_their_milliseconds_and_the_longest_is_a_hundred_years() {
        assert_eq!(
            ms_to_duration(2_500),
            pbjson_types::Duration {
                seconds: 2,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            duration_to_ms(Some(&ms_to_duration(86_400_123))),
            86_400_123
        );
        assert_eq!(MAX_DURATION_MS, 3_153_600_000_000);
    }

    #[test]
    fn timer_rows_are_keyed_by_kind_and_name() {
        assert_eq!(user_timer_key("nap"), "t:nap");
        assert_eq!(schedule_to_close_key(7), "a:7:s2c");
        assert_eq!(schedule_to_start_key(7), "a:7:s2s");
    }

    #[test]
    fn a_breaker_lease_names_its_breaker_and_no_other_lease_does() {
        assert_eq!(breaker_lease("upstream"), "breaker:upstream");
        assert_eq!(
            breaker_of_lease(&breaker_lease("upstream")),
            Some("upstream")
        );
        assert_eq!(breaker_of_lease("worker-7:lease-1"), None);
        assert_eq!(breaker_of_lease(""), None);
    }

    #[test]
    fn a_breaker_name_is_1_to_255_bytes_without_control_characters() {
        assert!(check_breaker_name("breaker", "upstream").is_ok());
        assert!(check_breaker_name("breaker", &"b".repeat(255)).is_ok());
        assert!(check_breaker_name("breaker", &"b".repeat(256)).is_err());
        assert!(check_breaker_name("breaker", "").is_err());
        assert!(check_breaker_name("breaker", "pay\nment").is_err());
        assert!(check_breaker_name("breaker", "x").is_ok());
    }
}
