//! Workflow tasks: a worker's completion (its commands applied in order, all or none), its
//! failure (retried with backoff, history never rewritten), and the buffered events a claim
//! delivers. A completion is refused when its commands would close the run while new events
//! wait ("unhandled events"), and fails the task when a command is invalid. Each command
//! family is decided in a file of its own; this file only routes a command to it.

use super::*;

fn current_wft<'a>(run: &'a Run, token: &TaskToken) -> Result<&'a WorkflowTask, EngineError> {
    same_namespace(run, token)?;
    if !run.is_open() {
        return Err(EngineError::NotFound(format!(
            "workflow run {} is closed",
            run.run_id
        )));
    }
    let wft = run
        .wft
        .as_ref()
        .filter(|w| w.lease.as_ref().is_some_and(|l| l.id == token.lease_id))
        .ok_or_else(|| {
            EngineError::NotFound(
                "workflow task is no longer current: it was completed, timed out or handed to another worker"
                    .into(),
            )
        })?;
    if token.history_len != run.next_event_id - 1 {
        return Err(EngineError::NotFound(
            "workflow task is no longer current: its lease ran out and new events arrived".into(),
        ));
    }
    Ok(wft)
}

fn is_closing(c: &pb::Command) -> bool {
    use pb::command::Attributes as C;
    matches!(
        c.attributes,
        Some(
            C::CompleteWorkflow(_)
                | C::FailWorkflow(_)
                | C::CancelWorkflow(_)
                | C::ContinueAsNew(_)
        )
    )
}

/// Writes WorkflowTaskScheduled for a retried attempt that has none yet; returns its id.
fn ensure_scheduled(t: &mut Transition, wft: &WorkflowTask) -> i64 {
    if wft.scheduled_event_id > 0 {
        return wft.scheduled_event_id;
    }
    let timeout = t.run().state.workflow_task_timeout_ms;
    t.append(Attributes::WorkflowTaskScheduled(
        pb::WorkflowTaskScheduledAttributes {
            task_queue: wft.queue.to_string(),
            start_to_close_timeout: Some(ms_to_duration(timeout)),
            attempt: wft.attempt,
        },
    ))
}

/// Applies the commands of a completed workflow task, all or none. The run's next workflow
/// task goes to `d.sticky`, the completing worker's sticky queue, if it has one.
pub fn complete_workflow_task(
    run: &Run,
    token: &TaskToken,
    commands: &[pb::Command],
    identity: &str,
    now: Millis,
    d: Dispatch<'_>,
) -> Result<WftOutcome, EngineError> {
    let wft = current_wft(run, token)?.clone();
    let mut t = Transition::new(run, now);
    // The next task goes to the worker that keeps the run cached, with only what it lacks.
    let sticky = d.sticky;
    t.run_mut().state.sticky_queue = sticky.map(|s| s.queue.to_owned()).unwrap_or_default();
    t.run_mut().state.sticky_from = if sticky.is_some() {
        token.history_len + 1
    } else {
        0
    };

    if commands.iter().any(is_closing) && !run.state.buffered.is_empty() {
        // The workflow would close without seeing these events: refuse, deliver them.
        let n = run.state.buffered.len();
        t.flush_buffered();
        t.run_mut().wft = Some(WorkflowTask {
            lease: None,
            visible_at: now,
            ..wft
        });
        return Ok(WftOutcome::Rejected {
            decided: hand_out(t.finish(), d),
            error: EngineError::FailedPrecondition(format!(
                "unhandled events: {n} new event(s) arrived while the workflow task ran; a new workflow task is scheduled"
            )),
        });
    }

    let scheduled = ensure_scheduled(&mut t, &wft);
    let started = t.append(Attributes::WorkflowTaskStarted(
        pb::WorkflowTaskStartedAttributes {
            scheduled_event_id: scheduled,
            identity: identity.to_owned(),
        },
    ));
    let completed = t.append(Attributes::WorkflowTaskCompleted(
        pb::WorkflowTaskCompletedAttributes {
            scheduled_event_id: scheduled,
            started_event_id: started,
            identity: identity.to_owned(),
        },
    ));
    t.run_mut().wft = None;
    t.run_mut().state.wft_last_failure = None;

    for (i, command) in commands.iter().enumerate() {
        let result = if t.run().is_open() {
            apply_command(&mut t, command, completed)
        } else {
            Err("it follows a command that closed the workflow".to_owned())
        };
        if let Err(why) = result {
            let message = format!("command {i} is invalid: {why}");
            let failure = pb::Failure {
                message: message.clone(),
                r#type: "BadCommand".into(),
                ..Default::default()
            };
            let commit = fail_wft(
                run,
                &wft,
                pb::WorkflowTaskFailedCause::BadCommand,
                failure,
                identity,
                now,
            );
            return Ok(WftOutcome::Rejected {
                decided: hand_out(commit, d),
                error: EngineError::invalid("commands", message),
            });
        }
    }
    if t.run().is_open() && t.flush_buffered() {
        t.schedule_workflow_task();
    }
    if sticky.is_some_and(|s| s.returns_history) {
        // The worker is answered with this change's events: it lacks none of them.
        t.run_mut().state.sticky_from = t.run().next_event_id;
    }
    Ok(WftOutcome::Applied(hand_out(t.finish(), d)))
}

/// Applies one command of a completion; `completed` is the WorkflowTaskCompleted event.
fn apply_command(t: &mut Transition, command: &pb::Command, completed: i64) -> Result<(), String> {
    use pb::command::Attributes as C;
    match command.attributes.as_ref() {
        None => Err("it has no attributes".into()),
        Some(C::ScheduleActivity(c)) => activities::schedule(t, c, completed),
        Some(C::RequestCancelActivity(c)) => activities::request_cancel(t, c, completed),
        Some(C::StartTimer(c)) => timers::start(t, c, completed),
        Some(C::CancelTimer(c)) => timers::cancel(t, c, completed),
        Some(C::RecordMarker(c)) => markers::record(t, c, completed),
        Some(C::PublishEvent(c)) => publish::publish(t, c, completed),
        Some(C::CompleteWorkflow(c)) => close::complete(t, c, completed),
        Some(C::FailWorkflow(c)) => close::fail(t, c, completed),
        Some(C::CancelWorkflow(c)) => close::cancel(t, c, completed),
        Some(C::ContinueAsNew(c)) => close::continue_as_new(t, c, completed),
        Some(C::StartChildWorkflow(c)) => children::start(t, c, completed),
        Some(C::RequestCancelChildWorkflow(c)) => children::request_cancel(t, c, completed),
        Some(C::CompleteUpdate(c)) => updates::complete(t, c, completed),
        Some(C::UpsertSearchAttributes(c)) => search::upsert(t, c, completed),
    }
}

fn fail_wft(
    run: &Run,
    wft: &WorkflowTask,
    cause: pb::WorkflowTaskFailedCause,
    failure: pb::Failure,
    identity: &str,
    now: Millis,
) -> RunCommit {
    let mut t = Transition::new(run, now);
    if wft.attempt <= 1 {
        // Later attempts of a task that keeps failing leave history alone; the checkpoint
        // keeps the attempt count and the last failure for operators.
        let scheduled = ensure_scheduled(&mut t, wft);
        let started = t.append(Attributes::WorkflowTaskStarted(
            pb::WorkflowTaskStartedAttributes {
                scheduled_event_id: scheduled,
                identity: identity.to_owned(),
            },
        ));
        t.append(Attributes::WorkflowTaskFailed(
            pb::WorkflowTaskFailedAttributes {
                scheduled_event_id: scheduled,
                started_event_id: started,
                cause: cause as i32,
                failure: Some(failure.clone()),
                identity: identity.to_owned(),
            },
        ));
    }
    t.flush_buffered();
    // The worker that failed dropped the run: the retry goes to any worker, with full history.
    t.run_mut().state.sticky_queue.clear();
    t.run_mut().state.sticky_from = 0;
    let backoff = (1000_i64 << (wft.attempt.clamp(1, 7) - 1)).min(MAX_WFT_BACKOFF_MS);
    let delay = if wft.attempt <= 1 { 0 } else { backoff };
    t.run_mut().wft = Some(WorkflowTask {
        queue: run.task_queue.clone(),
        attempt: wft.attempt + 1,
        scheduled_event_id: 0,
        visible_at: now + delay,
        lease: None,
    });
    t.run_mut().state.wft_last_failure = Some(failure);
    t.finish()
}

/// A worker reports that a workflow task failed (non-determinism, a panic): it is retried
/// with backoff; history is never rewritten.
pub fn fail_workflow_task(
    run: &Run,
    token: &TaskToken,
    cause: pb::WorkflowTaskFailedCause,
    failure: pb::Failure,
    identity: &str,
    now: Millis,
    d: Dispatch<'_>,
) -> Result<Decided, EngineError> {
    let wft = current_wft(run, token)?.clone();
    Ok(hand_out(
        fail_wft(run, &wft, cause, failure, identity, now),
        d,
    ))
}

/// After a workflow task was claimed from the store whose run has buffered events (its
/// previous lease ran out): appends them so the new holder sees them.
pub fn flush_for_claim(run: &Run, now: Millis) -> Option<RunCommit> {
    if run.state.buffered.is_empty() {
        return None;
    }
    let mut t = Transition::new(run, now);
    t.flush_buffered();
    Some(t.finish())
}
