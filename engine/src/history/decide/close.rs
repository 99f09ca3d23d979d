//! Closing a run: the commands that end it (complete, fail, cancel, continue as new) and
//! terminating it from outside. A closed run keeps its history and drops everything pending
//! (`Transition::close`); continue-as-new starts the next run of the chain in the same change.

use super::*;

/// `CompleteWorkflow`: the run completes (or, when the saga compensated, ends compensated).
pub(super) fn complete(
    t: &mut Transition,
    c: &pb::CompleteWorkflowExecutionCommand,
    completed: i64,
) -> Result<(), String> {
    t.close(
        if c.compensated {
            pb::WorkflowStatus::Compensated
        } else {
            pb::WorkflowStatus::Completed
        },
        Attributes::WorkflowExecutionCompleted(pb::WorkflowExecutionCompletedAttributes {
            result: c.result.clone(),
            workflow_task_completed_event_id: completed,
            compensated: c.compensated,
        }),
    );
    Ok(())
}

/// `FailWorkflow`: the run fails with the workflow's failure.
pub(super) fn fail(
    t: &mut Transition,
    c: &pb::FailWorkflowExecutionCommand,
    completed: i64,
) -> Result<(), String> {
    t.close(
        pb::WorkflowStatus::Failed,
        Attributes::WorkflowExecutionFailed(pb::WorkflowExecutionFailedAttributes {
            failure: c.failure.clone(),
            workflow_task_completed_event_id: completed,
        }),
    );
    Ok(())
}

/// `CancelWorkflow`: the run ends cancelled.
pub(super) fn cancel(
    t: &mut Transition,
    c: &pb::CancelWorkflowExecutionCommand,
    completed: i64,
) -> Result<(), String> {
    t.close(
        pb::WorkflowStatus::Canceled,
        Attributes::WorkflowExecutionCanceled(pb::WorkflowExecutionCanceledAttributes {
            details: c.details.clone(),
            workflow_task_completed_event_id: completed,
        }),
    );
    Ok(())
}

/// `ContinueAsNew`: the run closes and the next run of the chain starts, in one change.
pub(super) fn continue_as_new(
    t: &mut Transition,
    c: &pb::ContinueAsNewWorkflowExecutionCommand,
    completed: i64,
) -> Result<(), String> {
    let now = t.now();
    let run = t.run().clone();
    let workflow_type = if c.workflow_type.is_empty() {
        run.workflow_type.clone()
    } else {
        parse_id(WorkflowType::parse, &c.workflow_type)?
    };
    let task_queue = queue_or(&run, &c.task_queue)?;
    let task_timeout_ms = duration_to_ms(c.workflow_task_timeout.as_ref());
    check_task_timeout(task_timeout_ms).map_err(|e| format!("workflow_task_timeout {e}"))?;
    let new_id = RunId::new();
    t.close(
        pb::WorkflowStatus::ContinuedAsNew,
        Attributes::WorkflowExecutionContinuedAsNew(
            pb::WorkflowExecutionContinuedAsNewAttributes {
                new_run_id: new_id.to_text(),
                workflow_type: workflow_type.to_string(),
                task_queue: task_queue.to_string(),
                input: c.input.clone(),
                workflow_task_completed_event_id: completed,
            },
        ),
    );
    let params = StartParams {
        input: c.input.clone(),
        run_timeout_ms: duration_to_ms(c.workflow_run_timeout.as_ref()),
        task_timeout_ms,
        continued_from: Some(run.run_id),
        first_run_id: Some(run.state.first_run_id.clone()),
        execution_deadline: (run.state.execution_deadline > 0)
            .then_some(run.state.execution_deadline),
        traceparent: run.state.traceparent.clone(),
        events_published: run.state.events_published,
        parent: run.state.parent.clone(),
        search_attributes: run.state.search_attributes.clone(),
        ..StartParams::new(
            run.namespace.clone(),
            run.workflow_id.clone(),
            workflow_type,
            task_queue,
        )
    };
    let mut next = first_change(&params, new_id, now);
    if run.state.is_paused() {
        // The operator paused the workflow, not one run of it: the next run waits as well.
        next.run.state.carry_pause(&run.state);
        if let Some(wft) = next.run.wft.as_mut() {
            wft.visible_at = PARKED_UNTIL;
        }
    }
    t.set_new_run(next);
    Ok(())
}

/// Stops the run now. Buffered events are kept in history before the end.
pub fn terminate(
    run: &Run,
    reason: &str,
    identity: &str,
    now: Millis,
) -> Result<RunCommit, EngineError> {
    require_open(run)?;
    let mut t = Transition::new(run, now);
    t.flush_buffered();
    t.close(
        pb::WorkflowStatus::Terminated,
        Attributes::WorkflowExecutionTerminated(pb::WorkflowExecutionTerminatedAttributes {
            reason: reason.to_owned(),
            identity: identity.to_owned(),
        }),
    );
    Ok(t.finish())
}
