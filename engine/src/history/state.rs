//! The checkpoint (mutable state) of one run: derived from its history, written in the same
//! transaction as the events that change it.

use crate::clock::Millis;
use crate::ids::{Namespace, RunId, TaskQueue, WorkflowId, WorkflowType};
use martix_proto::v1 as pb;

/// The part of the checkpoint kept as one encoded blob. The fields the store must query
/// (status, workflow task, times) are columns of `Run` instead.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunState {
    /// Activities scheduled and not yet resolved, by scheduled event id.
    #[prost(message, repeated, tag = "1")]
    pub activities: Vec<PendingActivity>,
    /// Timers started and neither fired nor cancelled.
    #[prost(message, repeated, tag = "2")]
    pub timers: Vec<PendingTimer>,
    /// Events that arrived while a workflow task was in flight; appended after it completes.
    #[prost(message, repeated, tag = "3")]
    pub buffered: Vec<pb::HistoryEvent>,
    /// A cancellation was asked for.
    #[prost(bool, tag = "4")]
    pub cancel_requested: bool,
    /// How long a worker may hold a workflow task.
    #[prost(int64, tag = "5")]
    pub workflow_task_timeout_ms: i64,
    /// Why the last workflow task attempt failed, while it keeps failing.
    #[prost(message, optional, tag = "6")]
    pub wft_last_failure: Option<pb::Failure>,
    /// The first run of a continue-as-new chain.
    #[prost(string, tag = "7")]
    pub first_run_id: String,
    /// The queue of the worker that keeps this run cached, if any.
    #[prost(string, tag = "8")]
    pub sticky_queue: String,
    /// The first event that worker has not seen.
    #[prost(int64, tag = "9")]
    pub sticky_from: i64,
    /// When the whole workflow (all runs of a continue-as-new chain) times out; 0: never.
    #[prost(int64, tag = "10")]
    pub execution_deadline: Millis,
    /// W3C trace context of the start: the trace every task of the run joins.
    #[prost(string, tag = "11")]
    pub traceparent: String,
    /// Business events the workflow has published, over its whole continue-as-new chain and
    /// resets: the last event's sequence number.
    #[prost(int64, tag = "12")]
    pub events_published: i64,
    /// Bytes of the run's history (its events as encoded), counted as they are appended; a
    /// checkpoint written before this was counted starts from 0 at its next change.
    #[prost(int64, tag = "13")]
    pub history_bytes: i64,
    /// Why the workflow waits for an operator (it recorded an `attention` marker); empty when
    /// it does not.
    #[prost(string, tag = "14")]
    pub attention: String,
    /// When it started waiting.
    #[prost(int64, tag = "15")]
    pub attention_since: Millis,
    /// The run whose effects this run's activities continue (their idempotency keys name it):
    /// set by a reset to the run reset (or what that one continued); empty: this run.
    #[prost(string, tag = "16")]
    pub effects_run_id: String,
    /// When an operator paused the run; 0: not paused. While paused, its workflow task and
    /// its activity tasks nobody holds are parked (`super::PARKED_UNTIL`).
    #[prost(int64, tag = "17")]
    pub paused_at: Millis,
    /// Who paused it.
    #[prost(string, tag = "18")]
    pub paused_by: String,
    /// Why.
    #[prost(string, tag = "19")]
    pub paused_reason: String,
    /// Children started and not yet closed, by their initiated event.
    #[prost(message, repeated, tag = "20")]
    pub children: Vec<PendingChild>,
    /// The run that started this workflow as its child (carried along continue-as-new): told
    /// when the workflow's last run closes.
    #[prost(message, optional, tag = "21")]
    pub parent: Option<pb::ParentExecution>,
    /// Updates accepted whose handler has not completed, in the order they were accepted.
    #[prost(message, repeated, tag = "22")]
    pub updates: Vec<PendingUpdate>,
    /// The search attributes the workflow set (carried along continue-as-new and reset).
    #[prost(map = "string, message", tag = "23")]
    pub search_attributes: std::collections::HashMap<String, pb::SearchAttributeValue>,
}

/// An update accepted (`WorkflowUpdateAccepted`) whose handler has not completed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PendingUpdate {
    #[prost(string, tag = "1")]
    pub update_id: String,
    #[prost(int64, tag = "2")]
    pub accepted_event_id: i64,
}

impl RunState {
    /// Whether an operator has the run paused.
    pub fn is_paused(&self) -> bool {
        self.paused_at != 0
    }

    /// Takes over `from`'s pause (or its absence): the next run of a workflow an operator
    /// paused (continue-as-new, reset) is paused as well.
    pub fn carry_pause(&mut self, from: &RunState) {
        self.paused_at = from.paused_at;
        self.paused_by.clone_from(&from.paused_by);
        self.paused_reason.clone_from(&from.paused_reason);
    }

    /// Bytes of the events buffered for the next workflow task.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.iter().map(prost::Message::encoded_len).sum()
    }
}

/// An activity between its scheduling and its final outcome.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PendingActivity {
    #[prost(int64, tag = "1")]
    pub scheduled_event_id: i64,
    #[prost(string, tag = "2")]
    pub activity_id: String,
    #[prost(string, tag = "3")]
    pub activity_type: String,
    #[prost(string, tag = "4")]
    pub task_queue: String,
    /// The current attempt, from 1.
    #[prost(int32, tag = "5")]
    pub attempt: i32,
    #[prost(int64, tag = "6")]
    pub scheduled_time: Millis,
    /// When the next attempt becomes available; 0 while an attempt is available or running.
    #[prost(int64, tag = "7")]
    pub next_attempt_time: Millis,
    #[prost(message, optional, tag = "8")]
    pub last_failure: Option<pb::Failure>,
    #[prost(message, optional, tag = "9")]
    pub retry_policy: Option<pb::RetryPolicy>,
    /// 0: no schedule-to-close limit.
    #[prost(int64, tag = "10")]
    pub schedule_to_close_ms: i64,
    #[prost(int64, tag = "11")]
    pub start_to_close_ms: i64,
    /// A schedule-to-start timer row exists for the first attempt.
    #[prost(bool, tag = "12")]
    pub schedule_to_start_timer: bool,
    /// The circuit breaker that refused its last attempt: its task is parked behind it (see
    /// `TaskOp::Park`); empty when not parked.
    #[prost(string, tag = "13")]
    pub parked_behind: String,
    /// When it was parked.
    #[prost(int64, tag = "14")]
    pub parked_since: Millis,
}

/// A child workflow the run started (`StartChildWorkflowExecutionInitiated`) and whose
/// workflow has not closed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PendingChild {
    #[prost(int64, tag = "1")]
    pub initiated_event_id: i64,
    #[prost(string, tag = "2")]
    pub workflow_id: String,
    #[prost(string, tag = "3")]
    pub workflow_type: String,
    /// The child's first run; empty until the engine started it.
    #[prost(string, tag = "4")]
    pub run_id: String,
    #[prost(enumeration = "pb::ParentClosePolicy", tag = "5")]
    pub parent_close_policy: i32,
    /// The workflow asked it to cancel (before it started: as soon as it starts).
    #[prost(bool, tag = "6")]
    pub cancel_requested: bool,
}

/// A timer started by the workflow.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PendingTimer {
    #[prost(string, tag = "1")]
    pub timer_id: String,
    #[prost(int64, tag = "2")]
    pub started_event_id: i64,
    #[prost(int64, tag = "3")]
    pub fire_at: Millis,
}

/// A claim on a task: who may complete it, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub until: Millis,
}

impl Lease {
    /// A fresh lease lasting `ms` from `now`.
    pub fn new(now: Millis, ms: i64) -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            until: now + ms,
        }
    }
}

/// The run's one outstanding workflow task, if any (columns of the execution row, so that
/// workers can claim it by queue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowTask {
    pub queue: TaskQueue,
    pub attempt: i32,
    /// The WorkflowTaskScheduled event; 0 for a retried attempt, whose events are written only
    /// when it completes.
    pub scheduled_event_id: i64,
    pub visible_at: Millis,
    pub lease: Option<Lease>,
}

impl WorkflowTask {
    /// A worker holds it and its lease has not run out.
    pub fn in_flight(&self, now: Millis) -> bool {
        self.lease.as_ref().is_some_and(|l| l.until > now)
    }
}

/// The checkpoint of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub namespace: Namespace,
    pub workflow_id: WorkflowId,
    pub run_id: RunId,
    pub workflow_type: WorkflowType,
    pub task_queue: TaskQueue,
    pub status: pb::WorkflowStatus,
    pub start_time: Millis,
    pub close_time: Option<Millis>,
    /// The id the next appended event gets; history length + 1.
    pub next_event_id: i64,
    /// Bumped by every write; a write names the version it read.
    pub version: i64,
    pub wft: Option<WorkflowTask>,
    pub state: RunState,
}

impl Run {
    /// Whether the run is still open.
    pub fn is_open(&self) -> bool {
        self.status == pb::WorkflowStatus::Running
    }

    /// The pending activity scheduled by event `id`.
    pub fn activity(&self, id: i64) -> Option<&PendingActivity> {
        self.state
            .activities
            .iter()
            .find(|a| a.scheduled_event_id == id)
    }
}

/// An activity as scheduled, with its run: what the worker of each attempt is told about it
/// besides what the task row keeps per attempt (attempt, lease, last heartbeat). The task row
/// keeps it encoded, so that a poll needs no read of the run; the engine builds the worker's
/// `PollActivityTaskResponse` from it when it hands the task out. Its fields and tags are those
/// of that response, whose encoding rows held before, so that every stored row reads the same.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScheduledActivity {
    #[prost(message, optional, tag = "2")]
    pub workflow_execution: Option<pb::WorkflowExecution>,
    #[prost(string, tag = "3")]
    pub workflow_type: String,
    #[prost(string, tag = "4")]
    pub activity_id: String,
    #[prost(string, tag = "5")]
    pub activity_type: String,
    #[prost(message, optional, tag = "6")]
    pub input: Option<pb::Payload>,
    #[prost(message, optional, tag = "8")]
    pub scheduled_time: Option<pbjson_types::Timestamp>,
    #[prost(message, optional, tag = "9")]
    pub start_to_close_timeout: Option<pbjson_types::Duration>,
    #[prost(message, optional, tag = "10")]
    pub heartbeat_timeout: Option<pbjson_types::Duration>,
    #[prost(string, tag = "12")]
    pub namespace: String,
    /// W3C trace context of the run (empty: none).
    #[prost(string, tag = "13")]
    pub traceparent: String,
    /// The run whose effects the activity's idempotency key names (empty: its own run).
    #[prost(string, tag = "15")]
    pub idempotency_run_id: String,
}

/// An activity task row: what a polling worker needs, without reading the run.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivityTask {
    pub namespace: Namespace,
    pub task_queue: TaskQueue,
    pub run_id: RunId,
    pub scheduled_event_id: i64,
    pub attempt: i32,
    pub visible_at: Millis,
    pub lease: Option<Lease>,
    /// Lease length for each attempt: the start-to-close timeout.
    pub lease_ms: i64,
    /// The activity as scheduled: what its worker is told about it.
    pub activity: ScheduledActivity,
    /// Details of the last heartbeat of an earlier attempt, handed to the next one.
    pub heartbeat_details: Option<Vec<u8>>,
    /// The longest gap between heartbeats; 0: none required.
    pub heartbeat_ms: i64,
    /// When the current attempt was handed out.
    pub started_at: Option<Millis>,
}

impl ActivityTask {
    /// How long a fresh lease lasts: the start-to-close timeout, or the heartbeat timeout if
    /// that is shorter (each heartbeat extends it).
    pub fn first_lease_ms(&self) -> i64 {
        if self.heartbeat_ms > 0 && self.heartbeat_ms < self.lease_ms {
            self.heartbeat_ms
        } else {
            self.lease_ms
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_workflow_task_is_in_flight_while_its_lease_runs() {
        let mut wft = WorkflowTask {
            queue: TaskQueue::parse("q").unwrap(),
            attempt: 1,
            scheduled_event_id: 2,
            visible_at: 0,
            lease: None,
        };
        assert!(!wft.in_flight(100));
        wft.lease = Some(Lease::new(100, 50));
        assert_eq!(wft.lease.as_ref().unwrap().until, 150);
        assert!(wft.in_flight(100));
        assert!(wft.in_flight(149));
        assert!(!wft.in_flight(150), "a lease ends when it runs out");
    }

    #[test]
    fn a_first_lease_is_the_shorter_of_the_timeout_and_the_heartbeat() {
        let task = |lease_ms, heartbeat_ms| ActivityTask {
            namespace: Namespace::parse("default").unwrap(),
            task_queue: TaskQueue::parse("q").unwrap(),
            run_id: RunId::new(),
            scheduled_event_id: 5,
            attempt: 1,
            visible_at: 0,
            lease: None,
            lease_ms,
            activity: ScheduledActivity::default(),
            heartbeat_details: None,
            heartbeat_ms,
            started_at: None,
        };
        assert_eq!(task(30_000, 0).first_lease_ms(), 30_000);
        assert_eq!(task(30_000, 5_000).first_lease_ms(), 5_000);
        assert_eq!(task(30_000, 30_000).first_lease_ms(), 30_000);
        assert_eq!(task(30_000, 60_000).first_lease_ms(), 30_000);
        assert_eq!(task(30_000, -1).first_lease_ms(), 30_000);
    }

    #[test]
    fn a_pause_is_carried_over_whole_and_so_is_its_absence() {
        let paused = RunState {
            paused_at: 5,
            paused_by: "ops".into(),
            paused_reason: "audit".into(),
            ..Default::default()
        };
        let mut next = RunState::default();
        next.carry_pause(&paused);
        assert!(next.is_paused());
        assert_eq!(
            (
                next.paused_at,
                next.paused_by.as_str(),
                next.paused_reason.as_str()
            ),
            (5, "ops", "audit")
        );
        next.carry_pause(&RunState::default());
        assert!(!next.is_paused());
        assert!(next.paused_by.is_empty() && next.paused_reason.is_empty());
    }

    #[test]
    fn buffered_bytes_are_the_buffered_events_encoded() {
        let mut s = RunState::default();
        assert_eq!(s.buffered_bytes(), 0);
        let event = pb::HistoryEvent {
            event_id: 0,
            event_time: None,
            attributes: Some(pb::history_event::Attributes::WorkflowExecutionSignaled(
                pb::WorkflowExecutionSignaledAttributes {
                    signal_name: "go".into(),
                    input: None,
                    identity: "ops".into(),
                },
            )),
        };
        s.buffered = vec![event.clone(), event.clone()];
        assert_eq!(s.buffered_bytes(), 2 * event.encoded_len());
        assert!(s.buffered_bytes() > 1);
    }

    /// Task rows written before `ScheduledActivity` held an encoded `PollActivityTaskResponse`
    /// without token, attempt and scheduled event: such a row reads the same, and a row
    /// written now is that encoding.
    #[test]
    fn a_scheduled_activity_is_stored_as_task_rows_always_were() {
        let response = pb::PollActivityTaskResponse {
            workflow_execution: Some(pb::WorkflowExecution {
                workflow_id: "w-1".into(),
                run_id: "r-1".into(),
            }),
            workflow_type: "thing".into(),
            activity_id: "a-1".into(),
            activity_type: "reserve".into(),
            input: Some(pb::Payload {
                encoding: "json/plain".into(),
                data: b"{}".to_vec(),
            }),
            scheduled_time: Some(crate::clock::to_timestamp(1_700_000_000_123)),
            start_to_close_timeout: Some(super::super::ms_to_duration(30_000)),
            heartbeat_timeout: Some(super::super::ms_to_duration(5_000)),
            namespace: "default".into(),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            task_token: Vec::new(),
            attempt: 0,
            heartbeat_details: None,
            scheduled_event_id: 0,
            idempotency_run_id: "r-0".into(),
        };
        let stored = response.encode_to_vec();
        let activity = ScheduledActivity::decode(&stored[..]).unwrap();
        assert_eq!(activity.activity_type, "reserve");
        assert_eq!(activity.traceparent, response.traceparent);
        assert_eq!(activity.encode_to_vec(), stored);
        assert_eq!(
            pb::PollActivityTaskResponse::decode(&activity.encode_to_vec()[..]).unwrap(),
            response
        );
    }
}
