//! Child workflows: the command that starts one and the one that asks it to cancel, and what
//! the parent records when the engine started the child (or could not) and when the child's
//! workflow closed.
//!
//! Every change stays one run's. The command records `StartChildWorkflowExecutionInitiated`
//! and a timer row due now (`child_start_key`); the engine, when it fires, starts the child in
//! a transaction of its own and then records the outcome here (`child_started`), the fired row
//! its guard. A child tells its parent that its workflow closed, and a parent its children
//! that it closed (their close policy) or asks one to cancel, by a timer row on the other run
//! written with its own change (`Transition::tell`); the engine acts on it when it fires.

use super::*;
use crate::ids::WorkflowId;

/// Most children a run may have pending (started or starting, not closed) at once.
pub const MAX_PENDING_CHILDREN: usize = 1_000;

/// `StartChildWorkflow`: the initiated event, the pending child, the row that starts it.
pub(super) fn start(
    t: &mut Transition,
    c: &pb::StartChildWorkflowExecutionCommand,
    completed: i64,
) -> Result<(), String> {
    let workflow_id = parse_id(WorkflowId::parse, &c.workflow_id)?;
    let workflow_type = parse_id(WorkflowType::parse, &c.workflow_type)?;
    let task_queue = queue_or(t.run(), &c.task_queue)?;
    if workflow_id == t.run().workflow_id {
        return Err(format!(
            "workflow_id '{workflow_id}' is this workflow's own: a child needs an id of its own"
        ));
    }
    let children = &t.run().state.children;
    if children.iter().any(|x| x.workflow_id == *workflow_id) {
        return Err(format!(
            "workflow_id '{workflow_id}' is already used by a pending child"
        ));
    }
    if children.len() >= MAX_PENDING_CHILDREN {
        return Err(format!(
            "the run has {MAX_PENDING_CHILDREN} children pending, the most it may have"
        ));
    }
    check_task_timeout(duration_to_ms(c.workflow_task_timeout.as_ref()))
        .map_err(|e| format!("workflow_task_timeout {e}"))?;
    let policy = match pb::ParentClosePolicy::try_from(c.parent_close_policy) {
        Ok(pb::ParentClosePolicy::Unspecified) => pb::ParentClosePolicy::Terminate,
        Ok(p) => p,
        Err(_) => {
            return Err(format!(
                "parent_close_policy {} is not a policy",
                c.parent_close_policy
            ));
        }
    };
    let id = t.append(Attributes::StartChildWorkflowExecutionInitiated(
        pb::StartChildWorkflowExecutionInitiatedAttributes {
            workflow_id: workflow_id.to_string(),
            workflow_type: workflow_type.to_string(),
            task_queue: task_queue.to_string(),
            input: c.input.clone(),
            workflow_execution_timeout: c.workflow_execution_timeout,
            workflow_run_timeout: c.workflow_run_timeout,
            workflow_task_timeout: c.workflow_task_timeout,
            parent_close_policy: policy as i32,
            workflow_task_completed_event_id: completed,
        },
    ));
    t.run_mut().state.children.push(PendingChild {
        initiated_event_id: id,
        workflow_id: workflow_id.to_string(),
        workflow_type: workflow_type.to_string(),
        run_id: String::new(),
        parent_close_policy: policy as i32,
        cancel_requested: false,
    });
    let now = t.now();
    t.push_timer(TimerOp::Insert {
        key: child_start_key(id),
        fire_at: now,
    });
    Ok(())
}

/// `RequestCancelChildWorkflow`: the child is asked to cancel, now if it runs, else as soon
/// as it starts. A child that closed meanwhile (its close may be buffered while the task that
/// asks ran) has nothing to cancel: the request is recorded and goes nowhere.
pub(super) fn request_cancel(
    t: &mut Transition,
    c: &pb::RequestCancelChildWorkflowCommand,
    completed: i64,
) -> Result<(), String> {
    check_id("workflow_id", &c.workflow_id)?;
    let child = t
        .run_mut()
        .state
        .children
        .iter_mut()
        .find(|x| x.workflow_id == c.workflow_id);
    let (initiated, run_id) = match child {
        Some(child) => {
            child.cancel_requested = true;
            (child.initiated_event_id, child.run_id.clone())
        }
        None => (0, String::new()),
    };
    t.append(Attributes::ChildWorkflowExecutionCancelRequested(
        pb::ChildWorkflowExecutionCancelRequestedAttributes {
            initiated_event_id: initiated,
            workflow_id: c.workflow_id.clone(),
            workflow_task_completed_event_id: completed,
        },
    ));
    if let Ok(run_id) = RunId::parse("run_id", &run_id) {
        t.tell(run_id, PARENT_CANCELS_KEY.to_owned());
    }
    Ok(())
}

/// What a run's close does to a pending child, as the timer row key to write on the child's
/// run: `None` when the child runs on (abandoned).
pub(crate) fn close_policy_key(child: &PendingChild) -> Option<String> {
    match pb::ParentClosePolicy::try_from(child.parent_close_policy) {
        Ok(pb::ParentClosePolicy::Abandon) => None,
        Ok(pb::ParentClosePolicy::RequestCancel) => Some(PARENT_CANCELS_KEY.to_owned()),
        _ => Some(PARENT_TERMINATES_KEY.to_owned()),
    }
}

/// The engine started the child initiated by event `initiated` (`Ok`: its first run), or
/// found it could not (`Err`: why). `None` when there is nothing to record: the parent closed,
/// or the outcome was recorded before. `key` is the start row, deleted with the change.
pub fn child_started(
    run: &Run,
    initiated: i64,
    outcome: Result<RunId, pb::Failure>,
    key: &str,
    now: Millis,
    d: Dispatch<'_>,
) -> Option<Decided> {
    if !run.is_open() {
        return None;
    }
    let pos = run
        .state
        .children
        .iter()
        .position(|c| c.initiated_event_id == initiated && c.run_id.is_empty())?;
    let mut t = Transition::new(run, now);
    record_start(&mut t, pos, outcome);
    t.set_fired_timer(key.to_owned());
    Some(hand_out(t.finish(), d))
}

/// Records the start's outcome of the pending child at `pos`.
fn record_start(t: &mut Transition, pos: usize, outcome: Result<RunId, pb::Failure>) {
    let child = t.run().state.children[pos].clone();
    match outcome {
        Ok(run_id) => {
            t.run_mut().state.children[pos].run_id = run_id.to_text();
            t.add_external([Attributes::ChildWorkflowExecutionStarted(
                pb::ChildWorkflowExecutionStartedAttributes {
                    initiated_event_id: child.initiated_event_id,
                    workflow_execution: Some(pb::WorkflowExecution {
                        workflow_id: child.workflow_id.clone(),
                        run_id: run_id.to_text(),
                    }),
                    workflow_type: child.workflow_type.clone(),
                },
            )]);
            if child.cancel_requested {
                t.tell(run_id, PARENT_CANCELS_KEY.to_owned());
            }
        }
        Err(failure) => {
            t.run_mut().state.children.remove(pos);
            t.add_external([Attributes::StartChildWorkflowExecutionFailed(
                pb::StartChildWorkflowExecutionFailedAttributes {
                    initiated_event_id: child.initiated_event_id,
                    workflow_id: child.workflow_id,
                    workflow_type: child.workflow_type,
                    failure: Some(failure),
                },
            )]);
        }
    }
}

/// The workflow of the child initiated by event `initiated` closed (`closed` says how; its
/// first run is `first_run`). A child whose start was not recorded yet (it closed before the
/// engine got to record it) is recorded as started first, so history always shows a child
/// start before its close. `None` when there is nothing to record (the parent closed, or
/// this was recorded before). `key` is the row the child wrote, deleted with the change.
pub fn child_closed(
    run: &Run,
    initiated: i64,
    first_run: RunId,
    closed: pb::ChildWorkflowExecutionClosedAttributes,
    key: &str,
    now: Millis,
    d: Dispatch<'_>,
) -> Option<Decided> {
    if !run.is_open() {
        return None;
    }
    let mut pos = run
        .state
        .children
        .iter()
        .position(|c| c.initiated_event_id == initiated)?;
    let mut t = Transition::new(run, now);
    if t.run().state.children[pos].run_id.is_empty() {
        record_start(&mut t, pos, Ok(first_run));
        pos = t
            .run()
            .state
            .children
            .iter()
            .position(|c| c.initiated_event_id == initiated)?;
    }
    t.run_mut().state.children.remove(pos);
    t.add_external([Attributes::ChildWorkflowExecutionClosed(closed)]);
    t.set_fired_timer(key.to_owned());
    Some(hand_out(t.finish(), d))
}

/// What a child timer row's key names (see `child_start_key`, `child_closed_key`).
#[derive(Debug, PartialEq, Eq)]
pub enum ChildKey {
    /// Start the child initiated by this event.
    Start(i64),
    /// The workflow of the child initiated by this event closed; this run closed it.
    Closed(i64, RunId),
}

impl ChildKey {
    /// The key's meaning; `None` for a key that is not a child's.
    pub fn parse(key: &str) -> Option<Self> {
        let rest = key.strip_prefix("c:")?;
        let (initiated, what) = rest.split_once(':')?;
        let initiated = initiated.parse().ok()?;
        match what {
            "start" => Some(Self::Start(initiated)),
            _ => {
                let run = what.strip_prefix("closed:")?;
                Some(Self::Closed(initiated, RunId::parse("run_id", run).ok()?))
            }
        }
    }
}
