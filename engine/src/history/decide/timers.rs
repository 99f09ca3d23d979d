//! Timers: the commands that start and cancel the workflow's timers, and what happens when a
//! timer row comes due. A row is a user timer (`TimerFired` for the workflow), an activity's
//! timeout (see `activities::time_out`) or the run's or the workflow's timeout (the run
//! closes, timed out). The row that fires is deleted with the change, as its guard: a timer
//! fires once, and one cancelled or made moot meanwhile not at all.

use super::*;

/// `StartTimer`: the started event, the pending timer and its row.
pub(super) fn start(
    t: &mut Transition,
    c: &pb::StartTimerCommand,
    completed: i64,
) -> Result<(), String> {
    let now = t.now();
    check_id("timer_id", &c.timer_id)?;
    if t.run()
        .state
        .timers
        .iter()
        .any(|x| x.timer_id == c.timer_id)
    {
        return Err(format!(
            "timer_id '{}' is already used by a pending timer",
            c.timer_id
        ));
    }
    let ms = duration_to_ms(c.start_to_fire_timeout.as_ref());
    if ms <= 0 {
        return Err("start_to_fire_timeout must be positive".into());
    }
    let id = t.append(Attributes::TimerStarted(pb::TimerStartedAttributes {
        timer_id: c.timer_id.clone(),
        start_to_fire_timeout: c.start_to_fire_timeout,
        workflow_task_completed_event_id: completed,
    }));
    t.run_mut().state.timers.push(PendingTimer {
        timer_id: c.timer_id.clone(),
        started_event_id: id,
        fire_at: now + ms,
    });
    t.push_timer(TimerOp::Insert {
        key: user_timer_key(&c.timer_id),
        fire_at: now + ms,
    });
    Ok(())
}

/// `CancelTimer`: the pending timer and its row go.
pub(super) fn cancel(
    t: &mut Transition,
    c: &pb::CancelTimerCommand,
    completed: i64,
) -> Result<(), String> {
    let Some(pos) = t
        .run()
        .state
        .timers
        .iter()
        .position(|x| x.timer_id == c.timer_id)
    else {
        return Err(format!(
            "timer '{}' was never started or has already fired",
            c.timer_id
        ));
    };
    let timer = t.run_mut().state.timers.remove(pos);
    t.append(Attributes::TimerCanceled(pb::TimerCanceledAttributes {
        timer_id: timer.timer_id.clone(),
        started_event_id: timer.started_event_id,
        workflow_task_completed_event_id: completed,
    }));
    t.push_timer(TimerOp::Delete {
        key: user_timer_key(&timer.timer_id),
    });
    Ok(())
}

/// A timer row came due. `None` when it no longer matters (cancelled, or the run closed);
/// the caller then only deletes the row.
/// `activity_started`: for a schedule-to-start timer, whether the activity was picked up.
pub fn fire_timer(
    run: &Run,
    key: &str,
    now: Millis,
    activity_started: bool,
    d: Dispatch<'_>,
) -> Option<Decided> {
    fired(run, key, now, activity_started).map(|commit| hand_out(commit, d))
}

fn fired(run: &Run, key: &str, now: Millis, activity_started: bool) -> Option<RunCommit> {
    if !run.is_open() {
        return None;
    }
    if key == RUN_TIMEOUT_KEY || key == EXECUTION_TIMEOUT_KEY {
        let mut t = Transition::new(run, now);
        t.flush_buffered();
        t.close(
            pb::WorkflowStatus::TimedOut,
            Attributes::WorkflowExecutionTimedOut(pb::WorkflowExecutionTimedOutAttributes {}),
        );
        t.set_fired_timer(key.to_owned());
        return Some(t.finish());
    }
    if let Some(rest) = key.strip_prefix("a:") {
        let (id, kind) = rest.split_once(':')?;
        return activities::time_out(run, key, id, kind, now, activity_started);
    }
    let timer_id = key.strip_prefix("t:")?;
    let timer = run.state.timers.iter().find(|x| x.timer_id == timer_id)?;
    let mut t = Transition::new(run, now);
    let started = timer.started_event_id;
    t.run_mut().state.timers.retain(|x| x.timer_id != timer_id);
    t.add_external([Attributes::TimerFired(pb::TimerFiredAttributes {
        timer_id: timer_id.to_owned(),
        started_event_id: started,
    })]);
    t.set_fired_timer(key.to_owned());
    Some(t.finish())
}
