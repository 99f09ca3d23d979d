//! The decisions: one pure function per way a run can change, each command family in a file
//! of its own: `workflow_task` (a worker's completion or failure, which routes each command to
//! its family), `activities`, `timers`, `signals` (and cancellation requests), `markers`,
//! `publish` and `close` (the commands that end a run, and terminating it). Shared here: task
//! tokens, starting a run, and the checks every family uses. Each decision that can leave a
//! task due takes a `Dispatch` and ends by leasing its tasks to whom it names
//! (`dispatch::hand_out`), so what it returns is final.

mod activities;
pub(crate) mod children;
mod close;
pub(super) mod markers;
mod pause;
mod publish;
mod search;
mod signals;
mod timers;
mod updates;
mod workflow_task;

pub use activities::{complete_activity, fail_activity, retry_activities_now, unpark};
pub use children::{ChildKey, MAX_PENDING_CHILDREN, child_closed, child_started};
pub use close::terminate;
pub use pause::{pause, resume};
pub use signals::{request_cancel, signal};
pub use timers::fire_timer;
pub use updates::{MAX_UPDATES_IN_FLIGHT, UpdateRequest, accept_unvalidated, accept_update};
pub use workflow_task::{complete_workflow_task, fail_workflow_task, flush_for_claim};

use super::dispatch::hand_out;
use super::*;
use crate::error::EngineError;
use crate::ids::{
    ActivityId, ActivityType, Namespace, RunId, SignalName, TaskQueue, WorkflowId, WorkflowType,
};
use prost::Message;
use std::collections::HashMap;

/// Default start-to-close timeout of an activity that names none.
pub const DEFAULT_ACTIVITY_TIMEOUT_MS: i64 = 10 * 60 * 1000;
/// Default time a worker may hold a workflow task.
pub const DEFAULT_WORKFLOW_TASK_TIMEOUT_MS: i64 = 10_000;
/// Range of the time a worker may hold a workflow task, when a start names one: a crashed
/// worker's lease must not wedge a run for longer than this.
pub const WORKFLOW_TASK_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<i64> = 1_000..=600_000;

/// Checks a workflow task timeout a start or continue-as-new names (0: the default); the
/// error reads after the field's name.
pub fn check_task_timeout(ms: i64) -> Result<(), String> {
    if ms == 0 || WORKFLOW_TASK_TIMEOUT_RANGE_MS.contains(&ms) {
        Ok(())
    } else {
        Err(format!(
            "is {ms} ms; it must be between 1s and 10m (or unset for 10s)"
        ))
    }
}
/// Longest wait between attempts of a failing workflow task.
const MAX_WFT_BACKOFF_MS: i64 = 60_000;

/// Kinds of task a token can name.
pub const TOKEN_KIND_WORKFLOW: i32 = 1;
/// An activity task token.
pub const TOKEN_KIND_ACTIVITY: i32 = 2;
/// A query token: names the query (its `lease_id`) a worker answers; leases nothing.
pub const TOKEN_KIND_QUERY: i32 = 3;

/// What a token of `kind` names, for errors.
pub fn token_kind_name(kind: i32) -> &'static str {
    match kind {
        TOKEN_KIND_WORKFLOW => "a workflow task",
        TOKEN_KIND_ACTIVITY => "an activity task",
        TOKEN_KIND_QUERY => "a query",
        _ => "nothing the engine hands out",
    }
}

/// What a worker hands back to complete a task. Opaque to clients; a forged or stale one names
/// no current lease and is rejected.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskToken {
    #[prost(string, tag = "1")]
    pub namespace: String,
    #[prost(string, tag = "2")]
    pub run_id: String,
    #[prost(int32, tag = "3")]
    pub kind: i32,
    #[prost(int64, tag = "4")]
    pub scheduled_event_id: i64,
    #[prost(int32, tag = "5")]
    pub attempt: i32,
    #[prost(string, tag = "6")]
    pub lease_id: String,
    /// Workflow tasks: the history length the worker was given.
    #[prost(int64, tag = "7")]
    pub history_len: i64,
}

impl TaskToken {
    /// The token of `run`'s workflow task `wft`, leased as `lease_id`, for a worker given the
    /// run's history as it stands.
    pub fn for_workflow_task(run: &Run, wft: &WorkflowTask, lease_id: &str) -> Self {
        Self {
            namespace: run.namespace.to_string(),
            run_id: run.run_id.to_text(),
            kind: TOKEN_KIND_WORKFLOW,
            scheduled_event_id: wft.scheduled_event_id,
            attempt: wft.attempt,
            lease_id: lease_id.to_owned(),
            history_len: run.next_event_id - 1,
        }
    }

    /// Decodes a token from the wire; garbage is an `InvalidArgument`.
    pub fn decode_from(raw: &[u8]) -> Result<(Self, RunId), EngineError> {
        if raw.is_empty() {
            return Err(EngineError::invalid("task_token", "must not be empty"));
        }
        let token = Self::decode(raw)
            .map_err(|_| EngineError::invalid("task_token", "is not a Martix task token"))?;
        let run_id = RunId::parse("task_token", &token.run_id)?;
        if token.lease_id.is_empty() {
            return Err(EngineError::invalid("task_token", "names no lease"));
        }
        // Leases the engine hands out are hex; a breaker's hold on a parked task (`breaker:`)
        // or a lease with control characters is no worker's.
        if breaker_of_lease(&token.lease_id).is_some()
            || token.lease_id.len() > 64
            || token.lease_id.chars().any(char::is_control)
        {
            return Err(EngineError::invalid(
                "task_token",
                "names a lease the engine never handed out",
            ));
        }
        Ok((token, run_id))
    }
}

/// A validated request to start a run.
#[derive(Clone, Debug)]
pub struct StartParams {
    pub namespace: Namespace,
    pub workflow_id: WorkflowId,
    pub workflow_type: WorkflowType,
    pub task_queue: TaskQueue,
    pub input: Option<pb::Payload>,
    pub execution_timeout_ms: i64,
    pub run_timeout_ms: i64,
    pub task_timeout_ms: i64,
    pub identity: String,
    pub memo: HashMap<String, pb::Payload>,
    pub continued_from: Option<RunId>,
    pub first_run_id: Option<String>,
    /// Carried along a continue-as-new chain: when the whole workflow times out.
    pub execution_deadline: Option<Millis>,
    /// W3C trace context of the start (empty: none).
    pub traceparent: String,
    /// Signal-with-start: a signal recorded right after the start, in the same transaction.
    pub initial_signal: Option<(SignalName, Option<pb::Payload>)>,
    /// Update-with-start: an update recorded right after the start (and its signal), in the
    /// same transaction, for the workflow to validate.
    pub initial_update: Option<UpdateRequest>,
    /// Carried along a continue-as-new chain: events published so far.
    pub events_published: i64,
    /// The run that started this workflow as its child (carried along a continue-as-new
    /// chain).
    pub parent: Option<pb::ParentExecution>,
    /// Search attributes the run starts with (carried along a continue-as-new chain).
    pub search_attributes: HashMap<String, pb::SearchAttributeValue>,
}

impl StartParams {
    /// A start of `workflow_type` on `task_queue` with nothing else set (no input, timeouts,
    /// memo or signal; a run of its own chain).
    pub fn new(
        namespace: Namespace,
        workflow_id: WorkflowId,
        workflow_type: WorkflowType,
        task_queue: TaskQueue,
    ) -> Self {
        Self {
            namespace,
            workflow_id,
            workflow_type,
            task_queue,
            input: None,
            execution_timeout_ms: 0,
            run_timeout_ms: 0,
            task_timeout_ms: 0,
            identity: String::new(),
            memo: HashMap::new(),
            continued_from: None,
            first_run_id: None,
            execution_deadline: None,
            traceparent: String::new(),
            initial_signal: None,
            initial_update: None,
            events_published: 0,
            parent: None,
            search_attributes: HashMap::new(),
        }
    }
}

/// A new run: its first events, its first workflow task.
pub fn new_run(p: &StartParams, run_id: RunId, now: Millis, d: Dispatch<'_>) -> Decided {
    hand_out(first_change(p, run_id, now), d)
}

/// The change that creates a run (a start's, or continue-as-new's next run).
fn first_change(p: &StartParams, run_id: RunId, now: Millis) -> RunCommit {
    let task_timeout = if p.task_timeout_ms > 0 {
        p.task_timeout_ms
    } else {
        DEFAULT_WORKFLOW_TASK_TIMEOUT_MS
    };
    let first_run_id = p.first_run_id.clone().unwrap_or_else(|| run_id.to_text());
    let run = Run {
        namespace: p.namespace.clone(),
        workflow_id: p.workflow_id.clone(),
        run_id,
        workflow_type: p.workflow_type.clone(),
        task_queue: p.task_queue.clone(),
        status: pb::WorkflowStatus::Running,
        start_time: now,
        close_time: None,
        next_event_id: 1,
        version: 0,
        wft: None,
        state: RunState {
            workflow_task_timeout_ms: task_timeout,
            first_run_id: first_run_id.clone(),
            traceparent: p.traceparent.clone(),
            events_published: p.events_published,
            parent: p.parent.clone(),
            ..Default::default()
        },
    };
    let mut t = Transition::for_new_run(run, now);
    let opt = |ms: i64| (ms > 0).then(|| ms_to_duration(ms));
    t.append(Attributes::WorkflowExecutionStarted(
        pb::WorkflowExecutionStartedAttributes {
            workflow_type: p.workflow_type.to_string(),
            task_queue: p.task_queue.to_string(),
            input: p.input.clone(),
            workflow_execution_timeout: opt(p.execution_timeout_ms),
            workflow_run_timeout: opt(p.run_timeout_ms),
            workflow_task_timeout: Some(ms_to_duration(task_timeout)),
            identity: p.identity.clone(),
            continued_from_run_id: p.continued_from.map(RunId::to_text).unwrap_or_default(),
            first_run_id,
            memo: p.memo.clone(),
            traceparent: p.traceparent.clone(),
            parent: p.parent.clone(),
        },
    ));
    if let Some((name, input)) = &p.initial_signal {
        t.append(Attributes::WorkflowExecutionSignaled(
            pb::WorkflowExecutionSignaledAttributes {
                signal_name: name.to_string(),
                input: input.clone(),
                identity: p.identity.clone(),
            },
        ));
    }
    t.schedule_workflow_task();
    t.set_search_attributes(p.search_attributes.clone());
    if let Some(u) = &p.initial_update {
        updates::record(&mut t, u, true);
    }
    if p.run_timeout_ms > 0 {
        t.push_timer(TimerOp::Insert {
            key: RUN_TIMEOUT_KEY.into(),
            fire_at: now + p.run_timeout_ms,
        });
    }
    let deadline = p
        .execution_deadline
        .unwrap_or(if p.execution_timeout_ms > 0 {
            now + p.execution_timeout_ms
        } else {
            0
        });
    if deadline > 0 {
        t.run_mut().state.execution_deadline = deadline;
        t.push_timer(TimerOp::Insert {
            key: EXECUTION_TIMEOUT_KEY.into(),
            fire_at: deadline,
        });
    }
    t.finish()
}

/// The outcome of a workflow task completion.
#[derive(Debug)]
pub enum WftOutcome {
    /// The commands were applied.
    Applied(Decided),
    /// The commands were refused; `decided` records that (and schedules what comes next), and
    /// `error` is the answer to the worker.
    Rejected {
        decided: Decided,
        error: EngineError,
    },
}

/// A task token speaks for its run only in the namespace it names: a token edited to name
/// another namespace (where its bearer may be authorized) finds nothing.
pub(crate) fn same_namespace(run: &Run, token: &TaskToken) -> Result<(), EngineError> {
    if run.namespace == token.namespace {
        Ok(())
    } else {
        Err(EngineError::NotFound(
            "the task is no longer current".into(),
        ))
    }
}

/// A command's own name (a timer id, a marker's name): 1 to 255 bytes.
fn check_id(field: &str, id: &str) -> Result<(), String> {
    match id.len() {
        0 => Err(format!("{field} must not be empty")),
        1..=255 => Ok(()),
        n => Err(format!("{field} is {n} bytes, at most 255")),
    }
}

/// A command's name or id, by the same rules as the requests' (`ids`): a command cannot
/// schedule onto a task queue that no worker may poll.
fn parse_id<T>(
    parse: fn(&str) -> Result<T, crate::ids::InvalidId>,
    raw: &str,
) -> Result<T, String> {
    parse(raw).map_err(|e| e.to_string())
}

/// A command's optional task queue: the run's own when empty.
fn queue_or(run: &Run, raw: &str) -> Result<TaskQueue, String> {
    if raw.is_empty() {
        Ok(run.task_queue.clone())
    } else {
        parse_id(TaskQueue::parse, raw)
    }
}

fn require_open(run: &Run) -> Result<(), EngineError> {
    if run.is_open() {
        Ok(())
    } else {
        Err(EngineError::FailedPrecondition(format!(
            "workflow {} run {} is already closed",
            run.workflow_id, run.run_id
        )))
    }
}

#[cfg(test)]
mod activity_tests;
#[cfg(test)]
mod change_tests;
#[cfg(test)]
mod children_tests;
#[cfg(test)]
mod dispatch_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod update_tests;
