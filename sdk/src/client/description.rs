//! What the client's reads answer, as SDK types: a run's status, its summary in a listing,
//! its description (what it waits for, who polls its queue), and how it ended.
//!
//! Each converts from the engine's answer here and nowhere else. Tools that print the wire
//! form (the CLI's `--output json`) get the answer as it came with `into_proto`, the
//! low-level escape hatch to [`crate::proto`].

use crate::error::{ClientError, Failure};
use crate::payload::from_payload;
use martix_proto::v1 as pb;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkflowStatus {
    /// Open: its workflow runs or waits.
    Running,
    /// Ended with a result.
    Completed,
    /// Ended with a failure.
    Failed,
    /// Ended accepting a cancellation request.
    Canceled,
    /// Stopped by an operator without running more workflow code.
    Terminated,
    /// Ended, continued by a new run of the same workflow id.
    ContinuedAsNew,
    /// Ended by its execution or run timeout.
    TimedOut,
    /// Ended with a result after undoing its effects (a saga that compensated).
    Compensated,
    /// A status this SDK does not know (a newer engine), by its number.
    Unknown(i32),
}

impl WorkflowStatus {
    /// The status as the CLI prints it: `running`, `continued_as_new`, ...
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Terminated => "terminated",
            Self::ContinuedAsNew => "continued_as_new",
            Self::TimedOut => "timed_out",
            Self::Compensated => "compensated",
            Self::Unknown(_) => "unknown",
        }
    }

    /// Whether the run ended with a result (completed or compensated).
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Completed | Self::Compensated)
    }
}

impl fmt::Display for WorkflowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(n) => write!(f, "{n}"),
            known => f.write_str(known.as_str()),
        }
    }
}

impl From<i32> for WorkflowStatus {
    fn from(n: i32) -> Self {
        use pb::WorkflowStatus as P;
        match P::try_from(n) {
            Ok(P::Running) => Self::Running,
            Ok(P::Completed) => Self::Completed,
            Ok(P::Failed) => Self::Failed,
            Ok(P::Canceled) => Self::Canceled,
            Ok(P::Terminated) => Self::Terminated,
            Ok(P::ContinuedAsNew) => Self::ContinuedAsNew,
            Ok(P::TimedOut) => Self::TimedOut,
            Ok(P::Compensated) => Self::Compensated,
            Ok(P::Unspecified) | Err(_) => Self::Unknown(n),
        }
    }
}

impl From<WorkflowStatus> for i32 {
    fn from(s: WorkflowStatus) -> i32 {
        use pb::WorkflowStatus as P;
        match s {
            WorkflowStatus::Running => P::Running as i32,
            WorkflowStatus::Completed => P::Completed as i32,
            WorkflowStatus::Failed => P::Failed as i32,
            WorkflowStatus::Canceled => P::Canceled as i32,
            WorkflowStatus::Terminated => P::Terminated as i32,
            WorkflowStatus::ContinuedAsNew => P::ContinuedAsNew as i32,
            WorkflowStatus::TimedOut => P::TimedOut as i32,
            WorkflowStatus::Compensated => P::Compensated as i32,
            WorkflowStatus::Unknown(n) => n,
        }
    }
}

/// A protobuf timestamp as a system time (before 1970 too).
pub(super) fn time(ts: Option<pbjson_types::Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    let nanos = Duration::from_nanos(ts.nanos.clamp(0, 999_999_999) as u64);
    Some(match u64::try_from(ts.seconds) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s) + nanos,
        Err(_) => UNIX_EPOCH - Duration::from_secs(ts.seconds.unsigned_abs()) + nanos,
    })
}

/// One run, as a listing shows it ([`Client::list_workflows`](crate::Client::list_workflows))
/// and as its description begins.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct WorkflowSummary {
    /// The business key (`order-1042`).
    pub workflow_id: String,
    /// The run.
    pub run_id: String,
    /// The registered workflow type.
    pub workflow_type: String,
    /// The queue its workflow tasks go to.
    pub task_queue: String,
    /// Where it is in its life.
    pub status: WorkflowStatus,
    /// When it started.
    pub start_time: Option<SystemTime>,
    /// When it closed; `None` while it runs.
    pub close_time: Option<SystemTime>,
    /// Events in its history.
    pub history_length: i64,
    /// The values it was started with to show (see `StartOptions::memo`), as JSON; a value
    /// that is not JSON reads as `null`.
    pub memo: BTreeMap<String, serde_json::Value>,
    /// The search attributes it set (`WorkflowContext::upsert_search_attributes`).
    pub search_attributes: BTreeMap<String, crate::SearchAttribute>,
    /// Why it waits for an operator (`WorkflowContext::needs_attention`), and since when.
    pub attention: Option<Attention>,
    /// Who paused it, why and since when ([`WorkflowHandle::pause`](crate::WorkflowHandle::pause));
    /// `None` while it is not paused.
    pub paused: Option<Pause>,
    raw: pb::WorkflowExecutionInfo,
}

/// An operator's pause of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pause {
    /// Who paused it (the caller's identity).
    pub by: String,
    /// Why.
    pub reason: String,
    /// Since when.
    pub since: Option<SystemTime>,
}

/// Why a run waits for an operator, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attention {
    /// The reason the workflow gave.
    pub reason: String,
    /// When it said so.
    pub since: Option<SystemTime>,
}

impl WorkflowSummary {
    /// The engine's answer as it came (edits to the fields are not in it): the low-level
    /// escape hatch, for tools that print the wire form.
    pub fn into_proto(self) -> pb::WorkflowExecutionInfo {
        self.raw
    }
}

impl From<pb::WorkflowExecutionInfo> for WorkflowSummary {
    fn from(i: pb::WorkflowExecutionInfo) -> Self {
        let raw = i.clone();
        let execution = i.execution.unwrap_or_default();
        Self {
            workflow_id: execution.workflow_id,
            run_id: execution.run_id,
            workflow_type: i.workflow_type,
            task_queue: i.task_queue,
            status: i.status.into(),
            start_time: time(i.start_time),
            close_time: time(i.close_time),
            history_length: i.history_length,
            memo: i
                .memo
                .into_iter()
                .map(|(k, v)| (k, from_payload(Some(&v)).unwrap_or_default()))
                .collect(),
            search_attributes: i
                .search_attributes
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), crate::SearchAttribute::from_proto(v)?)))
                .collect(),
            attention: (!i.attention.is_empty()).then(|| Attention {
                reason: i.attention,
                since: time(i.attention_since),
            }),
            paused: i.paused_since.map(|since| Pause {
                by: i.paused_by,
                reason: i.paused_reason,
                since: time(Some(since)),
            }),
            raw,
        }
    }
}

/// Where a pending activity is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PendingActivityState {
    /// Waiting for a worker to take it.
    Scheduled,
    /// An attempt runs.
    Started,
    /// The workflow asked to cancel it; the attempt has not said it stopped.
    CancelRequested,
    /// An attempt failed; waiting for the next one.
    BackingOff,
    /// A worker's circuit breaker refused the attempt: it waits behind the breaker, at the
    /// same attempt ([`PendingActivity::parked_behind`]).
    Parked,
    /// A state this SDK does not know (a newer engine).
    Unknown,
}

impl PendingActivityState {
    /// The state as the CLI prints it: `scheduled`, `backing_off`, ...
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Started => "started",
            Self::CancelRequested => "cancel_requested",
            Self::BackingOff => "backing_off",
            Self::Parked => "parked",
            Self::Unknown => "",
        }
    }
}

impl From<i32> for PendingActivityState {
    fn from(n: i32) -> Self {
        use pb::PendingActivityState as P;
        match P::try_from(n) {
            Ok(P::Scheduled) => Self::Scheduled,
            Ok(P::Started) => Self::Started,
            Ok(P::CancelRequested) => Self::CancelRequested,
            Ok(P::BackingOff) => Self::BackingOff,
            Ok(P::Parked) => Self::Parked,
            Ok(P::Unspecified) | Err(_) => Self::Unknown,
        }
    }
}

/// An activity of a run that has not ended.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PendingActivity {
    /// Its id in the run.
    pub activity_id: String,
    /// Its registered type.
    pub activity_type: String,
    /// Where it is.
    pub state: PendingActivityState,
    /// The attempt running or next, from 1.
    pub attempt: i32,
    /// Why the last attempt failed, if one did.
    pub last_failure: Option<Failure>,
    /// When the next attempt starts, while backing off.
    pub next_attempt_time: Option<SystemTime>,
    /// When the workflow scheduled it.
    pub scheduled_time: Option<SystemTime>,
    /// The id of its `ActivityTaskScheduled` event.
    pub scheduled_event_id: i64,
    /// The queue its attempts go to.
    pub task_queue: String,
    /// The circuit breaker it is parked behind (state `Parked`), and since when.
    pub parked_behind: Option<(String, Option<SystemTime>)>,
}

impl From<pb::PendingActivityInfo> for PendingActivity {
    fn from(a: pb::PendingActivityInfo) -> Self {
        Self {
            activity_id: a.activity_id,
            activity_type: a.activity_type,
            state: a.state.into(),
            attempt: a.attempt,
            last_failure: a.last_failure.map(Failure::from),
            next_attempt_time: time(a.next_attempt_time),
            scheduled_time: time(a.scheduled_time),
            scheduled_event_id: a.scheduled_event_id,
            task_queue: a.task_queue,
            parked_behind: (!a.parked_behind.is_empty())
                .then(|| (a.parked_behind, time(a.parked_since))),
        }
    }
}

/// A durable timer that has not fired.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingTimer {
    /// Its id in the run.
    pub timer_id: String,
    /// When it fires.
    pub fire_time: Option<SystemTime>,
    /// The id of its `TimerStarted` event.
    pub started_event_id: i64,
}

/// A child workflow the run started whose workflow has not closed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingChild {
    /// The child's workflow id.
    pub workflow_id: String,
    /// Its type.
    pub workflow_type: String,
    /// Its first run; `None` until the engine started it.
    pub run_id: Option<String>,
    /// What happens to it if this run closes first.
    pub parent_close_policy: crate::ParentClosePolicy,
    /// The run asked it to cancel.
    pub cancel_requested: bool,
}

/// The run that started a workflow as its child.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParentRun {
    /// The parent's workflow id.
    pub workflow_id: String,
    /// The parent's run that started it.
    pub run_id: String,
}

/// The workflow task a run waits on, if any.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PendingWorkflowTask {
    /// Its attempt, from 1: above 1, the previous attempts failed.
    pub attempt: i32,
    /// When it was scheduled.
    pub scheduled_time: Option<SystemTime>,
    /// Whether a worker holds it.
    pub started: bool,
    /// Why the last attempt failed, if one did.
    pub last_failure: Option<Failure>,
}

/// A circuit breaker a worker of the run's namespace reports open.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenBreaker {
    /// The worker's identity.
    pub worker: String,
    /// The downstream it guards.
    pub adapter: String,
    /// Open since.
    pub since: Option<SystemTime>,
}

/// A worker seen polling the run's task queue in the last minute.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Poller {
    /// The worker's identity.
    pub identity: String,
    /// `workflow` or `activity`.
    pub kind: String,
    /// When it last polled.
    pub last_seen: Option<SystemTime>,
}

/// A run as [`WorkflowHandle::describe`](crate::WorkflowHandle::describe) answers: its
/// summary, what it waits for, and who could serve it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct WorkflowDescription {
    /// The run's ids, type, queue, status, times and attention note.
    pub summary: WorkflowSummary,
    /// Its activities in flight or waiting for their next attempt.
    pub pending_activities: Vec<PendingActivity>,
    /// Its timers that have not fired.
    pub pending_timers: Vec<PendingTimer>,
    /// The workflow task it waits on, if any.
    pub pending_workflow_task: Option<PendingWorkflowTask>,
    /// Whether cancellation was asked for.
    pub cancel_requested: bool,
    /// Its child workflows that have not closed.
    pub pending_children: Vec<PendingChild>,
    /// The run that started it as its child, if one did.
    pub parent: Option<ParentRun>,
    /// Circuit breakers that workers of its namespace report open now.
    pub open_breakers: Vec<OpenBreaker>,
    /// Workers seen polling its task queue in the last minute; none: nobody polls it (a
    /// misspelled queue, or its workers are down).
    pub pollers: Vec<Poller>,
    raw: pb::DescribeWorkflowResponse,
}

impl WorkflowDescription {
    /// The engine's answer as it came (edits to the fields are not in it): the low-level
    /// escape hatch, for tools that print the wire form.
    pub fn into_proto(self) -> pb::DescribeWorkflowResponse {
        self.raw
    }
}

impl From<pb::DescribeWorkflowResponse> for WorkflowDescription {
    fn from(d: pb::DescribeWorkflowResponse) -> Self {
        let raw = d.clone();
        Self {
            summary: d.info.unwrap_or_default().into(),
            pending_activities: d.pending_activities.into_iter().map(Into::into).collect(),
            pending_timers: d
                .pending_timers
                .into_iter()
                .map(|t| PendingTimer {
                    timer_id: t.timer_id,
                    fire_time: time(t.fire_time),
                    started_event_id: t.started_event_id,
                })
                .collect(),
            pending_workflow_task: d.pending_workflow_task.map(|t| PendingWorkflowTask {
                attempt: t.attempt,
                scheduled_time: time(t.scheduled_time),
                started: t.started,
                last_failure: t.last_failure.map(Failure::from),
            }),
            cancel_requested: d.cancel_requested,
            pending_children: d
                .pending_children
                .into_iter()
                .map(|c| PendingChild {
                    workflow_id: c.workflow_id,
                    workflow_type: c.workflow_type,
                    run_id: Some(c.run_id).filter(|r| !r.is_empty()),
                    parent_close_policy: match pb::ParentClosePolicy::try_from(
                        c.parent_close_policy,
                    ) {
                        Ok(pb::ParentClosePolicy::Abandon) => crate::ParentClosePolicy::Abandon,
                        Ok(pb::ParentClosePolicy::RequestCancel) => {
                            crate::ParentClosePolicy::RequestCancel
                        }
                        _ => crate::ParentClosePolicy::Terminate,
                    },
                    cancel_requested: c.cancel_requested,
                })
                .collect(),
            parent: d
                .parent
                .and_then(|p| p.workflow_execution)
                .map(|e| ParentRun {
                    workflow_id: e.workflow_id,
                    run_id: e.run_id,
                }),
            open_breakers: d
                .open_breakers
                .into_iter()
                .map(|b| OpenBreaker {
                    worker: b.worker,
                    adapter: b.adapter,
                    since: time(b.since),
                })
                .collect(),
            pollers: d
                .pollers
                .into_iter()
                .map(|p| Poller {
                    identity: p.identity,
                    kind: p.kind,
                    last_seen: time(p.last_seen),
                })
                .collect(),
            raw,
        }
    }
}

/// How a run ended, or that it has not, as
/// [`WorkflowHandle::poll_result`](crate::WorkflowHandle::poll_result) answers.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RunOutcome {
    /// Where the run is; `Running` when the wait ended before it closed.
    pub status: WorkflowStatus,
    /// Whether it closed.
    pub closed: bool,
    /// The run asked about.
    pub run_id: String,
    /// The run it continued as, if it continued as new.
    pub new_run_id: Option<String>,
    /// Why it failed, was canceled, terminated or timed out.
    pub failure: Option<Failure>,
    raw: pb::GetWorkflowResultResponse,
}

impl RunOutcome {
    /// The result it completed (or compensated) with, decoded from JSON.
    pub fn result<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        Ok(from_payload(self.raw.result.as_ref())?)
    }

    /// The engine's answer as it came (edits to the fields are not in it): the low-level
    /// escape hatch, for tools that print the wire form.
    pub fn into_proto(self) -> pb::GetWorkflowResultResponse {
        self.raw
    }
}

impl From<pb::GetWorkflowResultResponse> for RunOutcome {
    fn from(r: pb::GetWorkflowResultResponse) -> Self {
        Self {
            status: r.status.into(),
            closed: r.closed,
            run_id: r.run_id.clone(),
            new_run_id: Some(r.new_run_id.clone()).filter(|id| !id.is_empty()),
            failure: r.failure.clone().map(Failure::from),
            raw: r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_unknown_ones_keep_their_number() {
        for s in [
            WorkflowStatus::Running,
            WorkflowStatus::ContinuedAsNew,
            WorkflowStatus::Compensated,
            WorkflowStatus::Unknown(42),
        ] {
            assert_eq!(WorkflowStatus::from(i32::from(s)), s);
        }
        assert_eq!(WorkflowStatus::from(0), WorkflowStatus::Unknown(0));
        assert_eq!(
            WorkflowStatus::ContinuedAsNew.to_string(),
            "continued_as_new"
        );
    }

    #[test]
    fn a_description_reads_the_answer_and_gives_it_back_as_it_came() {
        let answer = pb::DescribeWorkflowResponse {
            info: Some(pb::WorkflowExecutionInfo {
                execution: Some(pb::WorkflowExecution {
                    workflow_id: "o-1".into(),
                    run_id: "r1".into(),
                }),
                status: pb::WorkflowStatus::Running as i32,
                attention: "compensation failed".into(),
                attention_since: Some(pbjson_types::Timestamp {
                    seconds: -5,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            pending_activities: vec![pb::PendingActivityInfo {
                activity_type: "refund".into(),
                state: pb::PendingActivityState::BackingOff as i32,
                last_failure: Some(pb::Failure {
                    message: "down".into(),
                    r#type: "Unavailable".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let d = WorkflowDescription::from(answer.clone());
        assert_eq!(d.summary.workflow_id, "o-1");
        assert_eq!(d.summary.status, WorkflowStatus::Running);
        let attention = d.summary.attention.clone().unwrap();
        assert_eq!(attention.reason, "compensation failed");
        assert_eq!(attention.since, Some(UNIX_EPOCH - Duration::from_secs(5)));
        let a = &d.pending_activities[0];
        assert_eq!(a.state, PendingActivityState::BackingOff);
        assert_eq!(
            a.last_failure.as_ref().unwrap().to_string(),
            "down (Unavailable)"
        );
        assert!(d.pending_workflow_task.is_none());
        assert_eq!(d.into_proto(), answer);
    }
}
