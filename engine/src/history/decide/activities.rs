//! Activities: the commands that schedule and cancel them, and their outcomes. A scheduled
//! activity is a pending entry in the checkpoint and a task row; its attempts and their
//! failures stay in the checkpoint (retried with backoff per the activity's policy), and only
//! its final outcome, with its last attempt's start, is appended to history for the workflow
//! (invariant 5). Its timeouts fire through `timers`.

use super::super::retry::may_retry;
use super::*;

/// `ScheduleActivity`: the scheduled event, the pending activity, its task row and its
/// timeout timers.
pub(super) fn schedule(
    t: &mut Transition,
    c: &pb::ScheduleActivityTaskCommand,
    completed: i64,
) -> Result<(), String> {
    let now = t.now();
    parse_id(ActivityId::parse, &c.activity_id)?;
    parse_id(ActivityType::parse, &c.activity_type)?;
    if t.run()
        .state
        .activities
        .iter()
        .any(|a| a.activity_id == c.activity_id)
    {
        return Err(format!(
            "activity_id '{}' is already used by a pending activity",
            c.activity_id
        ));
    }
    let queue = queue_or(t.run(), &c.task_queue)?;
    // `duration_to_ms` clamps a caller's timeouts to zero and a hundred years.
    let s2c = duration_to_ms(c.schedule_to_close_timeout.as_ref());
    let mut st2c = duration_to_ms(c.start_to_close_timeout.as_ref());
    if st2c <= 0 {
        st2c = if s2c > 0 {
            s2c
        } else {
            DEFAULT_ACTIVITY_TIMEOUT_MS
        };
    }
    let scheduled_event_id = t.append(Attributes::ActivityTaskScheduled(
        pb::ActivityTaskScheduledAttributes {
            activity_id: c.activity_id.clone(),
            activity_type: c.activity_type.clone(),
            task_queue: queue.to_string(),
            input: c.input.clone(),
            schedule_to_close_timeout: c.schedule_to_close_timeout,
            schedule_to_start_timeout: c.schedule_to_start_timeout,
            start_to_close_timeout: Some(ms_to_duration(st2c)),
            heartbeat_timeout: c.heartbeat_timeout,
            retry_policy: c.retry_policy.clone(),
            workflow_task_completed_event_id: completed,
        },
    ));
    t.run_mut().state.activities.push(PendingActivity {
        scheduled_event_id,
        activity_id: c.activity_id.clone(),
        activity_type: c.activity_type.clone(),
        task_queue: queue.to_string(),
        attempt: 1,
        scheduled_time: now,
        retry_policy: c.retry_policy.clone(),
        schedule_to_close_ms: s2c,
        start_to_close_ms: st2c,
        schedule_to_start_timer: duration_to_ms(c.schedule_to_start_timeout.as_ref()) > 0,
        ..Default::default()
    });
    let run = t.run();
    let activity = ScheduledActivity {
        workflow_execution: Some(pb::WorkflowExecution {
            workflow_id: run.workflow_id.to_string(),
            run_id: run.run_id.to_text(),
        }),
        workflow_type: run.workflow_type.to_string(),
        activity_id: c.activity_id.clone(),
        activity_type: c.activity_type.clone(),
        input: c.input.clone(),
        scheduled_time: Some(crate::clock::to_timestamp(now)),
        start_to_close_timeout: Some(ms_to_duration(st2c)),
        heartbeat_timeout: c.heartbeat_timeout,
        namespace: run.namespace.to_string(),
        traceparent: run.state.traceparent.clone(),
        idempotency_run_id: run.state.effects_run_id.clone(),
    };
    let task = ActivityTask {
        namespace: run.namespace.clone(),
        task_queue: queue,
        run_id: run.run_id,
        scheduled_event_id,
        attempt: 1,
        visible_at: now,
        lease: None,
        lease_ms: st2c,
        activity,
        heartbeat_details: None,
        heartbeat_ms: duration_to_ms(c.heartbeat_timeout.as_ref()),
        started_at: None,
    };
    t.push_task(TaskOp::Insert(task));
    if s2c > 0 {
        t.push_timer(TimerOp::Insert {
            key: schedule_to_close_key(scheduled_event_id),
            fire_at: now + s2c,
        });
    }
    let s2s = duration_to_ms(c.schedule_to_start_timeout.as_ref());
    if s2s > 0 {
        t.push_timer(TimerOp::Insert {
            key: schedule_to_start_key(scheduled_event_id),
            fire_at: now + s2s,
        });
    }
    Ok(())
}

/// `RequestCancelActivity`: the activity is cancelled at once (its task row and timers go).
pub(super) fn request_cancel(
    t: &mut Transition,
    c: &pb::RequestCancelActivityTaskCommand,
    completed: i64,
) -> Result<(), String> {
    let Some(pos) = t
        .run()
        .state
        .activities
        .iter()
        .position(|a| a.activity_id == c.activity_id)
    else {
        return Err(format!(
            "no pending activity has activity_id '{}'",
            c.activity_id
        ));
    };
    // Looked up before it goes: which timer rows it has decides which are deleted.
    let id = t.run().state.activities[pos].scheduled_event_id;
    remove_activity(t, id);
    t.append(Attributes::ActivityTaskCancelRequested(
        pb::ActivityTaskCancelRequestedAttributes {
            scheduled_event_id: id,
            workflow_task_completed_event_id: completed,
        },
    ));
    t.append(Attributes::ActivityTaskCanceled(
        pb::ActivityTaskCanceledAttributes {
            scheduled_event_id: id,
            details: None,
        },
    ));
    t.push_task(TaskOp::Delete {
        scheduled_event_id: id,
        lease_id: None,
    });
    Ok(())
}

fn current_activity<'a>(
    run: &'a Run,
    token: &TaskToken,
) -> Result<&'a PendingActivity, EngineError> {
    same_namespace(run, token)?;
    if !run.is_open() {
        return Err(EngineError::NotFound(format!(
            "workflow run {} is closed",
            run.run_id
        )));
    }
    // A task parked behind a breaker is held by no worker: no token names it.
    run.activity(token.scheduled_event_id)
        .filter(|a| a.attempt == token.attempt && a.parked_behind.is_empty())
        .ok_or_else(|| {
            EngineError::NotFound(
                "activity task is no longer current: it was completed, cancelled or retried".into(),
            )
        })
}

fn started_event(act: &PendingActivity, identity: &str) -> Attributes {
    Attributes::ActivityTaskStarted(pb::ActivityTaskStartedAttributes {
        scheduled_event_id: act.scheduled_event_id,
        attempt: act.attempt,
        identity: identity.to_owned(),
        last_failure: act.last_failure.clone(),
    })
}

/// The activity is resolved: it leaves the checkpoint, its timeout timers go.
/// Drops a resolved activity and the timer rows it has (only those: a delete of a row that
/// was never written is a statement for nothing on every activity).
fn remove_activity(t: &mut Transition, id: i64) {
    let (s2c, s2s) = t.run().activity(id).map_or((true, true), |a| {
        (a.schedule_to_close_ms > 0, a.schedule_to_start_timer)
    });
    t.run_mut()
        .state
        .activities
        .retain(|a| a.scheduled_event_id != id);
    if s2c {
        t.push_timer(TimerOp::Delete {
            key: schedule_to_close_key(id),
        });
    }
    if s2s {
        t.push_timer(TimerOp::Delete {
            key: schedule_to_start_key(id),
        });
    }
}

/// An activity attempt succeeded: its result reaches the workflow.
pub fn complete_activity(
    run: &Run,
    token: &TaskToken,
    result: Option<pb::Payload>,
    identity: &str,
    now: Millis,
    d: Dispatch<'_>,
) -> Result<Decided, EngineError> {
    let act = current_activity(run, token)?.clone();
    let mut t = Transition::new(run, now);
    remove_activity(&mut t, act.scheduled_event_id);
    t.add_external([
        started_event(&act, identity),
        Attributes::ActivityTaskCompleted(pb::ActivityTaskCompletedAttributes {
            scheduled_event_id: act.scheduled_event_id,
            started_event_id: 0,
            result,
            identity: identity.to_owned(),
        }),
    ]);
    t.push_task(TaskOp::Delete {
        scheduled_event_id: act.scheduled_event_id,
        lease_id: Some(token.lease_id.clone()),
    });
    Ok(hand_out(t.finish(), d))
}

/// An activity attempt failed (or, with `timed_out`, its lease ran out): retried per its
/// policy, or its failure reaches the workflow. `jitter` in `[0, 1)` spreads the retry delay.
// The report (token, failure, identity, whether a timeout), its time, its randomness and who
// is there: each is an input of the decision, and a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn fail_activity(
    run: &Run,
    token: &TaskToken,
    failure: pb::Failure,
    identity: &str,
    now: Millis,
    jitter: f64,
    timed_out: bool,
    d: Dispatch<'_>,
) -> Result<Decided, EngineError> {
    let act = current_activity(run, token)?.clone();
    let mut t = Transition::new(run, now);
    if !failure.breaker.is_empty() && !failure.non_retryable && !timed_out {
        // Refused by the worker's breaker without a call: not an attempt. The task waits
        // behind the breaker until the engine releases it (`unpark`).
        let breaker = failure.breaker.clone();
        check_breaker_name("failure.breaker", &breaker)?;
        let pending = pending_mut(&mut t, act.scheduled_event_id);
        pending.parked_behind.clone_from(&breaker);
        pending.parked_since = now;
        pending.next_attempt_time = 0;
        pending.last_failure = Some(failure);
        t.push_task(TaskOp::Park {
            scheduled_event_id: act.scheduled_event_id,
            lease_id: token.lease_id.clone(),
            breaker,
        });
        return Ok(hand_out(t.finish(), d));
    }
    let policy = act.retry_policy.as_ref();
    let delay_ms = match failure.next_retry_delay.as_ref() {
        Some(hint) if duration_to_ms(Some(hint)) > 0 => duration_to_ms(Some(hint)),
        _ => retry_delay(policy, act.attempt, jitter).as_millis() as i64,
    };
    let next_at = now + delay_ms;
    let in_time =
        act.schedule_to_close_ms == 0 || next_at < act.scheduled_time + act.schedule_to_close_ms;
    if !failure.non_retryable && in_time && may_retry(policy, act.attempt, &failure.r#type) {
        let pending = pending_mut(&mut t, act.scheduled_event_id);
        pending.attempt += 1;
        pending.last_failure = Some(failure);
        pending.next_attempt_time = next_at;
        t.push_task(TaskOp::Retry {
            scheduled_event_id: act.scheduled_event_id,
            attempt: act.attempt + 1,
            visible_at: next_at,
            lease_id: token.lease_id.clone(),
        });
    } else {
        remove_activity(&mut t, act.scheduled_event_id);
        let outcome = if timed_out {
            Attributes::ActivityTaskTimedOut(pb::ActivityTaskTimedOutAttributes {
                scheduled_event_id: act.scheduled_event_id,
                started_event_id: 0,
                failure: Some(failure),
            })
        } else {
            Attributes::ActivityTaskFailed(pb::ActivityTaskFailedAttributes {
                scheduled_event_id: act.scheduled_event_id,
                started_event_id: 0,
                failure: Some(failure),
                identity: identity.to_owned(),
            })
        };
        t.add_external([started_event(&act, identity), outcome]);
        t.push_task(TaskOp::Delete {
            scheduled_event_id: act.scheduled_event_id,
            lease_id: Some(token.lease_id.clone()),
        });
    }
    Ok(hand_out(t.finish(), d))
}

/// The pending activity scheduled by event `id` of the change's run, which the caller found.
fn pending_mut(t: &mut Transition, id: i64) -> &mut PendingActivity {
    t.run_mut()
        .state
        .activities
        .iter_mut()
        .find(|a| a.scheduled_event_id == id)
        .expect("the activity is pending")
}

/// The breaker an activity is parked behind lets calls through: its task becomes available
/// now. An activity no longer parked behind it (released already, resolved) stays as it is
/// (`None`).
pub fn unpark(
    run: &Run,
    scheduled_event_id: i64,
    breaker: &str,
    now: Millis,
    d: Dispatch<'_>,
) -> Option<Decided> {
    let parked = run
        .activity(scheduled_event_id)
        .is_some_and(|a| a.parked_behind == breaker);
    if !run.is_open() || !parked {
        return None;
    }
    let mut t = Transition::new(run, now);
    let pending = pending_mut(&mut t, scheduled_event_id);
    pending.parked_behind.clear();
    pending.parked_since = 0;
    t.push_task(TaskOp::Unpark {
        scheduled_event_id,
        breaker: breaker.to_owned(),
        visible_at: now,
    });
    Some(hand_out(t.finish(), d))
}

/// Runs now the activities waiting for their next attempt (`activity_id` empty: all of
/// them), optionally from attempt 1 again. Returns the ids it retried.
pub fn retry_activities_now(
    run: &Run,
    activity_id: &str,
    reset_attempts: bool,
    now: Millis,
    d: Dispatch<'_>,
) -> Result<(Decided, Vec<String>), EngineError> {
    require_open(run)?;
    let mut t = Transition::new(run, now);
    let mut retried = Vec::new();
    let mut found = false;
    for a in &mut t.run_mut().state.activities {
        if !activity_id.is_empty() && a.activity_id != activity_id {
            continue;
        }
        found = true;
        if a.next_attempt_time <= now {
            continue;
        }
        a.next_attempt_time = 0;
        if reset_attempts {
            a.attempt = 1;
        }
        retried.push((a.scheduled_event_id, a.attempt, a.activity_id.clone()));
    }
    if !activity_id.is_empty() && !found {
        return Err(EngineError::NotFound(format!(
            "run {} has no pending activity '{activity_id}'",
            run.run_id
        )));
    }
    if retried.is_empty() {
        return Err(EngineError::FailedPrecondition(if activity_id.is_empty() {
            "no activity of this run is waiting for its next attempt".into()
        } else {
            format!("activity '{activity_id}' is not waiting for its next attempt")
        }));
    }
    let ids = retried.iter().map(|r| r.2.clone()).collect();
    for (scheduled_event_id, attempt, _) in retried {
        t.push_task(TaskOp::RetryNow {
            scheduled_event_id,
            attempt,
            visible_at: now,
        });
    }
    Ok((hand_out(t.finish(), d), ids))
}

/// An activity's schedule-to-close (`kind` `s2c`) or schedule-to-start (`s2s`) timer came due:
/// the activity times out, unless it no longer matters (a schedule-to-start timeout only
/// counts for a first attempt no worker picked up). The timer row `key` is deleted by the
/// fire's guard.
pub(super) fn time_out(
    run: &Run,
    key: &str,
    id: &str,
    kind: &str,
    now: Millis,
    activity_started: bool,
) -> Option<RunCommit> {
    let act = run.activity(id.parse().ok()?)?.clone();
    let (error_type, message) = match kind {
        "s2c" => (
            "ScheduleToCloseTimeout",
            "the activity did not finish within its schedule-to-close timeout",
        ),
        "s2s" if !activity_started && act.attempt == 1 => (
            "ScheduleToStartTimeout",
            "no worker picked the activity up within its schedule-to-start timeout",
        ),
        _ => return None,
    };
    let mut t = Transition::new(run, now);
    remove_activity(&mut t, act.scheduled_event_id);
    t.add_external([Attributes::ActivityTaskTimedOut(
        pb::ActivityTaskTimedOutAttributes {
            scheduled_event_id: act.scheduled_event_id,
            started_event_id: 0,
            failure: Some(pb::Failure {
                message: message.into(),
                r#type: error_type.into(),
                ..Default::default()
            }),
        },
    )]);
    t.push_task(TaskOp::Delete {
        scheduled_event_id: act.scheduled_event_id,
        lease_id: None,
    });
    // The row being fired is deleted by the guard; drop the duplicate delete.
    let mut commit = t.finish();
    commit
        .timers
        .retain(|op| !matches!(op, TimerOp::Delete { key: k } if k == key));
    commit.fired_timer = Some(key.to_owned());
    Some(commit)
}
