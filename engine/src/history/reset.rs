//! Reset: a new run of the same workflow from a workflow-task boundary of an old one. The
//! new run's history is the old one's up to that task, then the task failed with cause
//! `RESET` (so the worker's replay discards what the task did), then a new workflow task. The
//! checkpoint is rebuilt from the copied events: the activities and timers they left pending
//! get fresh task and timer rows. The old run is terminated in the same transaction.

use super::*;
use crate::error::EngineError;
use crate::ids::{RunId, TaskQueue};

/// The WorkflowTaskCompleted event to reset to: `0` the last, `-1` the first, else that id.
pub fn reset_point(history: &[pb::HistoryEvent], requested: i64) -> Result<i64, EngineError> {
    let completed: Vec<i64> = history
        .iter()
        .filter(|e| matches!(e.attributes, Some(Attributes::WorkflowTaskCompleted(_))))
        .map(|e| e.event_id)
        .collect();
    let point = match requested {
        0 => completed.last().copied(),
        -1 => completed.first().copied(),
        id => completed.iter().copied().find(|c| *c == id),
    };
    point.ok_or_else(|| {
        EngineError::invalid(
            "workflow_task_finish_event_id",
            if completed.is_empty() {
                "the run has no completed workflow task to reset to".to_owned()
            } else {
                format!("must be a WorkflowTaskCompleted event id, one of {completed:?}")
            },
        )
    })
}

/// Builds the commit that terminates `run` and starts its reset copy.
pub fn reset(
    run: &Run,
    history: &[pb::HistoryEvent],
    point: i64,
    reason: &str,
    identity: &str,
    now: Millis,
    d: Dispatch<'_>,
) -> Result<(Decided, RunId), EngineError> {
    let completed = history
        .iter()
        .find(|e| e.event_id == point)
        .and_then(|e| match &e.attributes {
            Some(Attributes::WorkflowTaskCompleted(c)) => Some(c.clone()),
            _ => None,
        })
        .ok_or_else(|| {
            EngineError::invalid(
                "workflow_task_finish_event_id",
                "is not a WorkflowTaskCompleted event",
            )
        })?;
    let cut = completed.started_event_id; // events before the task's start are kept
    if let Some(u) = run.state.updates.first() {
        return Err(EngineError::FailedPrecondition(format!(
            "workflow {} has {} update(s) whose handler has not completed (first: '{}'); a \
             reset cannot take them over: wait for them, then reset",
            run.workflow_id,
            run.state.updates.len(),
            u.update_id
        )));
    }
    if !run.state.children.is_empty() {
        return Err(EngineError::FailedPrecondition(format!(
            "workflow {} has {} child workflow(s) running; a reset cannot take them over: wait \
             for them to close, or terminate them, then reset",
            run.workflow_id,
            run.state.children.len()
        )));
    }
    let prefix: Vec<pb::HistoryEvent> = history
        .iter()
        .filter(|e| e.event_id < cut)
        .cloned()
        .collect();
    let new_id = RunId::new();

    // The new run acts for the old one: its activities' idempotency keys name the run whose
    // effects they continue, so a step after the reset point finds what the old run did (a
    // reservation still held, a charge) instead of doing it again; an effect the old run undid
    // is refused by the adapter as a key reused, never answered as done.
    let effects_run_id = if run.state.effects_run_id.is_empty() {
        run.run_id.to_text()
    } else {
        run.state.effects_run_id.clone()
    };
    // The new run: the copied prefix, checkpoint rebuilt from it.
    let mut state = RunState {
        effects_run_id: effects_run_id.clone(),
        workflow_task_timeout_ms: run.state.workflow_task_timeout_ms,
        first_run_id: run.state.first_run_id.clone(),
        execution_deadline: run.state.execution_deadline,
        traceparent: run.state.traceparent.clone(),
        events_published: run.state.events_published,
        // A child reset stays its parent's child: the new run tells the parent when it ends.
        parent: run.state.parent.clone(),
        history_bytes: prefix
            .iter()
            .map(|e| prost::Message::encoded_len(e) as i64)
            .sum(),
        ..Default::default()
    };
    // A paused workflow stays paused through a reset, as through continue-as-new: the new
    // run's tasks are parked (`Transition::finish`) until an operator resumes it.
    state.carry_pause(&run.state);
    let mut scheduled: Vec<(i64, pb::ActivityTaskScheduledAttributes, Millis)> = Vec::new();
    let mut children_open: Vec<(i64, String)> = Vec::new();
    let mut updates_open: Vec<String> = Vec::new();
    for e in &prefix {
        let at = e
            .event_time
            .as_ref()
            .map_or(now, crate::clock::from_timestamp);
        match &e.attributes {
            Some(Attributes::ActivityTaskScheduled(a)) => {
                scheduled.push((e.event_id, a.clone(), at))
            }
            Some(
                Attributes::ActivityTaskCompleted(pb::ActivityTaskCompletedAttributes {
                    scheduled_event_id,
                    ..
                })
                | Attributes::ActivityTaskFailed(pb::ActivityTaskFailedAttributes {
                    scheduled_event_id,
                    ..
                })
                | Attributes::ActivityTaskTimedOut(pb::ActivityTaskTimedOutAttributes {
                    scheduled_event_id,
                    ..
                })
                | Attributes::ActivityTaskCanceled(pb::ActivityTaskCanceledAttributes {
                    scheduled_event_id,
                    ..
                }),
            ) => scheduled.retain(|(id, _, _)| id != scheduled_event_id),
            Some(Attributes::TimerStarted(t)) => state.timers.push(PendingTimer {
                timer_id: t.timer_id.clone(),
                started_event_id: e.event_id,
                fire_at: at + duration_to_ms(t.start_to_fire_timeout.as_ref()),
            }),
            Some(Attributes::TimerFired(t)) => state.timers.retain(|x| x.timer_id != t.timer_id),
            Some(Attributes::TimerCanceled(t)) => state.timers.retain(|x| x.timer_id != t.timer_id),
            Some(Attributes::WorkflowExecutionCancelRequested(_)) => state.cancel_requested = true,
            Some(Attributes::StartChildWorkflowExecutionInitiated(c)) => {
                children_open.push((e.event_id, c.workflow_id.clone()))
            }
            Some(Attributes::StartChildWorkflowExecutionFailed(c)) => {
                children_open.retain(|(id, _)| *id != c.initiated_event_id)
            }
            Some(Attributes::ChildWorkflowExecutionClosed(c)) => {
                children_open.retain(|(id, _)| *id != c.initiated_event_id)
            }
            Some(Attributes::WorkflowUpdateAccepted(u)) => updates_open.push(u.update_id.clone()),
            Some(Attributes::WorkflowUpdateCompleted(u)) => {
                updates_open.retain(|id| *id != u.update_id)
            }
            Some(Attributes::MarkerRecorded(m))
                if m.marker_name == decide::markers::ATTENTION_MARKER =>
            {
                state.attention = decide::markers::attention_reason(&m.details);
                state.attention_since = if state.attention.is_empty() { 0 } else { at };
            }
            _ => {}
        }
    }
    if let Some(update) = updates_open.first() {
        return Err(EngineError::FailedPrecondition(format!(
            "update '{update}' was accepted before event {point} and completed after it; a \
             reset cannot run its handler again: pick a point after it completed, or before it \
             was accepted"
        )));
    }
    if let Some((_, child)) = children_open.first() {
        return Err(EngineError::FailedPrecondition(format!(
            "child workflow '{child}' was started before event {point} and closed after it; a \
             reset cannot run it again: pick a point after it closed, or before it started"
        )));
    }
    let mut next = Run {
        namespace: run.namespace.clone(),
        workflow_id: run.workflow_id.clone(),
        run_id: new_id,
        workflow_type: run.workflow_type.clone(),
        task_queue: run.task_queue.clone(),
        status: pb::WorkflowStatus::Running,
        start_time: now,
        close_time: None,
        next_event_id: cut,
        version: 0,
        wft: None,
        state,
    };
    let mut tasks = Vec::new();
    for (id, a, at) in &scheduled {
        let st2c = duration_to_ms(a.start_to_close_timeout.as_ref()).max(1);
        next.state.activities.push(PendingActivity {
            scheduled_event_id: *id,
            activity_id: a.activity_id.clone(),
            activity_type: a.activity_type.clone(),
            task_queue: a.task_queue.clone(),
            attempt: 1,
            scheduled_time: *at,
            retry_policy: a.retry_policy.clone(),
            start_to_close_ms: st2c,
            // A first attempt due now, no failure yet, no schedule-to-close or -to-start
            // timeout: the reset copy writes user timers only.
            ..Default::default()
        });
        let activity = ScheduledActivity {
            workflow_execution: Some(pb::WorkflowExecution {
                workflow_id: run.workflow_id.to_string(),
                run_id: new_id.to_text(),
            }),
            workflow_type: run.workflow_type.to_string(),
            activity_id: a.activity_id.clone(),
            activity_type: a.activity_type.clone(),
            input: a.input.clone(),
            scheduled_time: Some(crate::clock::to_timestamp(*at)),
            start_to_close_timeout: a.start_to_close_timeout,
            heartbeat_timeout: a.heartbeat_timeout,
            namespace: run.namespace.to_string(),
            traceparent: run.state.traceparent.clone(),
            idempotency_run_id: effects_run_id.clone(),
        };
        tasks.push(TaskOp::Insert(ActivityTask {
            namespace: run.namespace.clone(),
            // Checked when the activity was scheduled.
            task_queue: TaskQueue::parse(&a.task_queue).map_err(|e| {
                EngineError::Internal(format!("history of run {}: {e}", run.run_id))
            })?,
            run_id: new_id,
            scheduled_event_id: *id,
            attempt: 1,
            visible_at: now,
            lease: None,
            lease_ms: st2c,
            activity,
            heartbeat_details: None,
            heartbeat_ms: duration_to_ms(a.heartbeat_timeout.as_ref()),
            started_at: None,
        }));
    }
    let timers: Vec<TimerOp> = next
        .state
        .timers
        .iter()
        .map(|t| TimerOp::Insert {
            key: user_timer_key(&t.timer_id),
            fire_at: t.fire_at,
        })
        .collect();
    let mut t = Transition::for_new_run(next, now);
    // The workflow keeps what it is found by.
    t.set_search_attributes(run.state.search_attributes.clone());
    let scheduled_id = completed.scheduled_event_id;
    let started = t.append(Attributes::WorkflowTaskStarted(
        pb::WorkflowTaskStartedAttributes {
            scheduled_event_id: scheduled_id,
            identity: identity.to_owned(),
        },
    ));
    t.append(Attributes::WorkflowTaskFailed(
        pb::WorkflowTaskFailedAttributes {
            scheduled_event_id: scheduled_id,
            started_event_id: started,
            cause: pb::WorkflowTaskFailedCause::Reset as i32,
            failure: Some(pb::Failure {
                message: format!("reset from run {} at event {point}: {reason}", run.run_id),
                r#type: "Reset".into(),
                ..Default::default()
            }),
            identity: identity.to_owned(),
        },
    ));
    t.schedule_workflow_task();
    for op in tasks {
        t.push_task(op);
    }
    for op in timers {
        t.push_timer(op);
    }
    let mut new_commit = t.finish();
    // The copied prefix is written with the new run, before its own events.
    let mut events: Vec<pb::HistoryEvent> = prefix;
    events.append(&mut new_commit.events);
    new_commit.events = events;

    // The old run ends, naming the new one.
    let mut old = Transition::new(run, now);
    // The workflow goes on in the new run: the parent is not told of this run's end.
    old.run_mut().state.parent = None;
    old.flush_buffered();
    old.close(
        pb::WorkflowStatus::Terminated,
        Attributes::WorkflowExecutionTerminated(pb::WorkflowExecutionTerminatedAttributes {
            reason: format!("reset to run {new_id} at event {point}: {reason}"),
            identity: identity.to_owned(),
        }),
    );
    old.set_new_run(new_commit);
    Ok((dispatch::hand_out(old.finish(), d), new_id))
}
