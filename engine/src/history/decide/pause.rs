//! Pausing and resuming a run, by an operator. A paused run's tasks are parked: nothing is
//! handed out, and what its changes would make available (the workflow task that delivers an
//! activity's result, a timer or a signal; an activity's next attempt) is parked as well
//! (`Transition::finish`). Tasks running when it was paused finish and their results are
//! recorded. The pause is the checkpoint's (who, when, why), not history's: workflow code never
//! sees it, and a replay is the same with or without it.

use super::*;

/// Pauses the run. A paused run stays as it was (`None`).
pub fn pause(
    run: &Run,
    reason: &str,
    identity: &str,
    now: Millis,
) -> Result<Option<RunCommit>, EngineError> {
    require_open(run)?;
    if run.state.is_paused() {
        return Ok(None);
    }
    let mut t = Transition::new(run, now);
    let state = &mut t.run_mut().state;
    state.paused_at = now;
    identity.clone_into(&mut state.paused_by);
    reason.clone_into(&mut state.paused_reason);
    for a in &run.state.activities {
        t.push_task(TaskOp::Hold {
            scheduled_event_id: a.scheduled_event_id,
            visible_at: PARKED_UNTIL,
        });
    }
    Ok(Some(t.finish()))
}

/// Resumes a paused run: its workflow task is available now, each activity's next attempt
/// when it is due (now, or the time its retry waits for). A run not paused stays as it was
/// (`None`).
pub fn resume(run: &Run, now: Millis, d: Dispatch<'_>) -> Result<Option<Decided>, EngineError> {
    require_open(run)?;
    if !run.state.is_paused() {
        return Ok(None);
    }
    let mut t = Transition::new(run, now);
    let state = &mut t.run_mut().state;
    state.paused_at = 0;
    state.paused_by.clear();
    state.paused_reason.clear();
    if let Some(wft) = t.run_mut().wft.as_mut() {
        wft.visible_at = now;
    }
    for a in &run.state.activities {
        t.push_task(TaskOp::Hold {
            scheduled_event_id: a.scheduled_event_id,
            visible_at: a.next_attempt_time.max(now),
        });
    }
    Ok(Some(hand_out(t.finish(), d)))
}
