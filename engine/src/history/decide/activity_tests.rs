//! Activities in a change: what scheduling writes, their timeouts, cancellation, retries now,
//! and the rows they leave or delete.

use super::tests::{T0, applied, applied_outcome, lease, nobody, started_run};
use super::*;
use pb::command::Attributes as C;

fn schedule_with(id: &str, f: impl FnOnce(&mut pb::ScheduleActivityTaskCommand)) -> pb::Command {
    let mut c = pb::ScheduleActivityTaskCommand {
        activity_id: id.into(),
        activity_type: "call".into(),
        ..Default::default()
    };
    f(&mut c);
    pb::Command {
        attributes: Some(C::ScheduleActivity(c)),
    }
}

/// Completes the run's pending workflow task with `commands` at T0; the change.
fn decide(commands: &[pb::Command]) -> RunCommit {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    applied_outcome(complete_workflow_task(&run, &token, commands, "w", T0, nobody(T0)).unwrap())
}

fn token_for(run: &Run, i: usize) -> TaskToken {
    let a = &run.state.activities[i];
    TaskToken {
        namespace: run.namespace.to_string(),
        run_id: run.run_id.to_text(),
        kind: TOKEN_KIND_ACTIVITY,
        scheduled_event_id: a.scheduled_event_id,
        attempt: a.attempt,
        lease_id: "l1".into(),
        history_len: 0,
    }
}

fn inserted(c: &RunCommit) -> Vec<&ActivityTask> {
    c.tasks
        .iter()
        .filter_map(|op| match op {
            TaskOp::Insert(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// An activity that names no timeout gets the default start-to-close; one with only a
/// schedule-to-close gets that as its start-to-close too; its task row and pending entry say
/// so, and only the timeouts it names get timer rows.
#[test]
fn scheduling_writes_the_timeouts_the_activity_names_or_the_defaults() {
    let c = decide(&[schedule_with("plain", |_| {})]);
    let a = &c.run.state.activities[0];
    assert_eq!(a.start_to_close_ms, DEFAULT_ACTIVITY_TIMEOUT_MS);
    assert_eq!(
        (a.activity_id.as_str(), a.activity_type.as_str()),
        ("plain", "call")
    );
    assert_eq!(a.task_queue, "q");
    assert_eq!(
        a.scheduled_event_id, 5,
        "after started, scheduled, task started, completed"
    );
    assert_eq!(
        (a.attempt, a.scheduled_time, a.schedule_to_close_ms),
        (1, T0, 0)
    );
    assert!(!a.schedule_to_start_timer);
    assert!(c.timers.is_empty(), "{:?}", c.timers);
    let task = inserted(&c)[0];
    assert_eq!(
        (task.lease_ms, task.visible_at, task.attempt),
        (DEFAULT_ACTIVITY_TIMEOUT_MS, T0, 1)
    );
    assert_eq!(
        task.task_queue.as_str(),
        "q",
        "the workflow's queue by default"
    );

    let c = decide(&[schedule_with("bounded", |s| {
        s.schedule_to_close_timeout = Some(ms_to_duration(60_000));
        s.schedule_to_start_timeout = Some(ms_to_duration(5_000));
        s.heartbeat_timeout = Some(ms_to_duration(2_000));
        s.task_queue = "other".into();
    })]);
    let a = &c.run.state.activities[0];
    let id = a.scheduled_event_id;
    assert_eq!(
        (a.start_to_close_ms, a.schedule_to_close_ms),
        (60_000, 60_000)
    );
    assert!(a.schedule_to_start_timer);
    assert_eq!(a.task_queue, "other");
    let task = inserted(&c)[0];
    assert_eq!((task.lease_ms, task.heartbeat_ms), (60_000, 2_000));
    assert_eq!(task.first_lease_ms(), 2_000);
    assert_eq!(task.task_queue.as_str(), "other");
    assert_eq!(
        c.timers,
        [
            TimerOp::Insert {
                key: schedule_to_close_key(id),
                fire_at: T0 + 60_000
            },
            TimerOp::Insert {
                key: schedule_to_start_key(id),
                fire_at: T0 + 5_000
            }
        ]
    );
    let Some(Attributes::ActivityTaskScheduled(s)) = &c.events[2].attributes else {
        panic!("{:?}", c.events[2])
    };
    assert_eq!(s.start_to_close_timeout, Some(ms_to_duration(60_000)));

    let c = decide(&[schedule_with("own", |s| {
        s.start_to_close_timeout = Some(ms_to_duration(7_000));
        s.schedule_to_close_timeout = Some(ms_to_duration(60_000));
    })]);
    assert_eq!(c.run.state.activities[0].start_to_close_ms, 7_000);
}

#[test]
fn scheduling_refuses_a_second_activity_of_the_same_id() {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    let out = complete_workflow_task(
        &run,
        &token,
        &[schedule_with("a", |_| {}), schedule_with("a", |_| {})],
        "w",
        T0,
        nobody(T0),
    )
    .unwrap();
    let WftOutcome::Rejected { error, .. } = out else {
        panic!("a duplicate id must fail the task")
    };
    assert!(error.to_string().contains("already used"), "{error}");
}

/// A cancelled activity: requested and cancelled events, its row and its timer rows deleted.
#[test]
fn a_cancelled_activity_leaves_with_its_rows() {
    let c = decide(&[schedule_with("a", |s| {
        s.schedule_to_close_timeout = Some(ms_to_duration(60_000));
    })]);
    let mut run = applied(&c);
    let id = run.state.activities[0].scheduled_event_id;
    // A new workflow task to decide in: a signal.
    let run2 = applied(
        &signal(&run, "x", None, "ops", T0 + 1, nobody(T0 + 1))
            .unwrap()
            .commit,
    );
    run = run2;
    let token = lease(&mut run, T0 + 2);
    let cancel = pb::Command {
        attributes: Some(C::RequestCancelActivity(
            pb::RequestCancelActivityTaskCommand {
                activity_id: "a".into(),
            },
        )),
    };
    let c = applied_outcome(
        complete_workflow_task(&run, &token, &[cancel], "w", T0 + 2, nobody(T0 + 2)).unwrap(),
    );
    assert!(c.run.state.activities.is_empty());
    let kinds: Vec<bool> = c
        .events
        .iter()
        .map(|e| {
            matches!(
                e.attributes,
                Some(
                    Attributes::ActivityTaskCancelRequested(_)
                        | Attributes::ActivityTaskCanceled(_)
                )
            )
        })
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k).count(), 2);
    assert!(c.tasks.contains(&TaskOp::Delete {
        scheduled_event_id: id,
        lease_id: None
    }));
    assert!(c.timers.contains(&TimerOp::Delete {
        key: schedule_to_close_key(id)
    }));
    assert!(
        !c.timers.contains(&TimerOp::Delete {
            key: schedule_to_start_key(id)
        }),
        "no schedule-to-start row was written, none is deleted"
    );
}

/// A completion removes the activity, deletes its row under the worker's lease, and only the
/// timer rows it has.
#[test]
fn a_completed_activity_deletes_its_row_and_its_timer_rows() {
    let c = decide(&[schedule_with("a", |s| {
        s.schedule_to_start_timeout = Some(ms_to_duration(5_000));
    })]);
    let run = applied(&c);
    let id = run.state.activities[0].scheduled_event_id;
    let c = complete_activity(
        &run,
        &token_for(&run, 0),
        None,
        "w",
        T0 + 10,
        nobody(T0 + 10),
    )
    .unwrap()
    .commit;
    assert!(c.run.state.activities.is_empty());
    assert!(c.tasks.contains(&TaskOp::Delete {
        scheduled_event_id: id,
        lease_id: Some("l1".into())
    }));
    assert_eq!(
        c.timers,
        [TimerOp::Delete {
            key: schedule_to_start_key(id)
        }]
    );
}

/// A schedule-to-close timeout ends the activity timed out; a schedule-to-start one only if no
/// worker picked the first attempt up; the fired row is not deleted twice.
#[test]
fn timeouts_end_the_activity_when_they_still_matter() {
    let c = decide(&[schedule_with("a", |s| {
        s.schedule_to_close_timeout = Some(ms_to_duration(60_000));
        s.schedule_to_start_timeout = Some(ms_to_duration(5_000));
    })]);
    let run = applied(&c);
    let id = run.state.activities[0].scheduled_event_id;
    let s2s = schedule_to_start_key(id);
    assert!(fire_timer(&run, &s2s, T0 + 5_000, true, nobody(T0 + 5_000)).is_none());
    let c = fire_timer(&run, &s2s, T0 + 5_000, false, nobody(T0 + 5_000))
        .unwrap()
        .commit;
    let timed_out = c
        .events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::ActivityTaskTimedOut(t)) => Some(t.clone()),
            _ => None,
        })
        .expect("timed out");
    assert_eq!(timed_out.failure.unwrap().r#type, "ScheduleToStartTimeout");
    assert_eq!(c.fired_timer.as_deref(), Some(s2s.as_str()));
    assert_eq!(
        c.timers,
        [TimerOp::Delete {
            key: schedule_to_close_key(id)
        }],
        "the other row goes, the fired one is the guard's"
    );
    let s2c = schedule_to_close_key(id);
    let c = fire_timer(&run, &s2c, T0 + 60_000, true, nobody(T0 + 60_000))
        .unwrap()
        .commit;
    let failure = c
        .events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::ActivityTaskTimedOut(t)) => t.failure.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(failure.r#type, "ScheduleToCloseTimeout");
    assert!(c.tasks.contains(&TaskOp::Delete {
        scheduled_event_id: id,
        lease_id: None
    }));
    // A key of no activity, or of another kind, is moot.
    assert!(fire_timer(&run, "a:999:s2c", T0, false, nobody(T0)).is_none());
    assert!(fire_timer(&run, &format!("a:{id}:zz"), T0, false, nobody(T0)).is_none());
}

/// A retry that would come after the schedule-to-close deadline is not made: the failure
/// reaches the workflow.
#[test]
fn no_retry_past_the_schedule_to_close_deadline() {
    let c = decide(&[schedule_with("a", |s| {
        s.schedule_to_close_timeout = Some(ms_to_duration(1_500));
    })]);
    let run = applied(&c);
    let failure = pb::Failure {
        message: "io".into(),
        ..Default::default()
    };
    // The first retry waits 1 s: within the deadline.
    let c = fail_activity(
        &run,
        &token_for(&run, 0),
        failure.clone(),
        "w",
        T0,
        0.0,
        false,
        nobody(T0),
    )
    .unwrap()
    .commit;
    assert!(c.events.is_empty());
    let run = applied(&c);
    assert_eq!(run.state.activities[0].next_attempt_time, T0 + 1_000);
    // The second would wait 2 s more: past it.
    let c = fail_activity(
        &run,
        &token_for(&run, 0),
        failure,
        "w",
        T0 + 1_000,
        0.0,
        false,
        nobody(T0 + 1_000),
    )
    .unwrap()
    .commit;
    assert!(c.run.state.activities.is_empty());
    assert!(
        c.events
            .iter()
            .any(|e| matches!(e.attributes, Some(Attributes::ActivityTaskFailed(_))))
    );
}

/// A retry the failure asks for (its `next_retry_delay`) is taken as given; a timed-out
/// attempt that may not retry ends timed out.
#[test]
fn a_retry_hint_is_taken_and_a_last_timed_out_attempt_ends_timed_out() {
    let c = decide(&[schedule_with("a", |s| {
        s.retry_policy = Some(pb::RetryPolicy {
            maximum_attempts: 2,
            ..Default::default()
        });
    })]);
    let run = applied(&c);
    let hinted = pb::Failure {
        message: "slow down".into(),
        next_retry_delay: Some(ms_to_duration(7_000)),
        ..Default::default()
    };
    let c = fail_activity(
        &run,
        &token_for(&run, 0),
        hinted,
        "w",
        T0,
        0.0,
        false,
        nobody(T0),
    )
    .unwrap()
    .commit;
    let run = applied(&c);
    assert_eq!(run.state.activities[0].next_attempt_time, T0 + 7_000);
    assert_eq!(run.state.activities[0].attempt, 2);
    let c = fail_activity(
        &run,
        &token_for(&run, 0),
        pb::Failure::default(),
        "w",
        T0 + 8_000,
        0.0,
        true,
        nobody(T0 + 8_000),
    )
    .unwrap()
    .commit;
    assert!(
        c.events
            .iter()
            .any(|e| matches!(e.attributes, Some(Attributes::ActivityTaskTimedOut(_))))
    );
}

/// An operator runs a waiting activity now: at its attempt, or from 1 again; one not waiting,
/// or not there, is refused.
#[test]
fn retry_now_runs_waiting_activities_at_once() {
    let c = decide(&[schedule_with("a", |_| {}), schedule_with("b", |_| {})]);
    let run = applied(&c);
    let (a, b) = (
        run.state.activities[0].scheduled_event_id,
        run.state.activities[1].scheduled_event_id,
    );
    assert!(matches!(
        retry_activities_now(&run, "", false, T0, nobody(T0)),
        Err(EngineError::FailedPrecondition(_))
    ));
    assert!(matches!(
        retry_activities_now(&run, "zz", false, T0, nobody(T0)),
        Err(EngineError::NotFound(_))
    ));
    let c = fail_activity(
        &run,
        &token_for(&run, 0),
        pb::Failure::default(),
        "w",
        T0,
        0.0,
        false,
        nobody(T0),
    )
    .unwrap()
    .commit;
    let run = applied(&c);
    let (d, ids) = retry_activities_now(&run, "", false, T0 + 10, nobody(T0 + 10)).unwrap();
    assert_eq!(ids, ["a"]);
    assert_eq!(
        d.commit.tasks,
        [TaskOp::RetryNow {
            scheduled_event_id: a,
            attempt: 2,
            visible_at: T0 + 10
        }]
    );
    assert_eq!(d.commit.run.activity(a).unwrap().next_attempt_time, 0);
    let (d, _) = retry_activities_now(&run, "a", true, T0 + 10, nobody(T0 + 10)).unwrap();
    assert!(matches!(
        d.commit.tasks[0],
        TaskOp::RetryNow { attempt: 1, .. }
    ));
    assert!(matches!(
        retry_activities_now(&run, "b", false, T0 + 10, nobody(T0 + 10)),
        Err(EngineError::FailedPrecondition(m)) if m.contains("'b'")
    ));
    let _ = b;
}

/// A failed workflow task: its first failure is in history (started, failed) and retried at
/// once on the workflow's queue, by any worker; later failures leave history alone and back
/// off (2 s, 4 s, ... at most a minute); the completion of a retried attempt writes its
/// scheduled event with its attempt.
#[test]
fn a_failing_workflow_task_is_retried_with_backoff_and_history_left_alone() {
    let failure = pb::Failure {
        message: "non-determinism".into(),
        ..Default::default()
    };
    let mut run = started_run();
    run.state.sticky_queue = "sticky-1".into();
    run.state.sticky_from = 3;
    let mut at = T0;
    let mut expected_delay = [0, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000].into_iter();
    for attempt in 1..=8 {
        let token = lease(&mut run, at);
        let c = fail_workflow_task(
            &run,
            &token,
            pb::WorkflowTaskFailedCause::NonDeterminism,
            failure.clone(),
            "w",
            at,
            nobody(at),
        )
        .unwrap()
        .commit;
        let wft = c.run.wft.clone().unwrap();
        assert_eq!(wft.attempt, attempt + 1);
        assert_eq!(
            wft.visible_at,
            at + expected_delay.next().unwrap(),
            "attempt {attempt}"
        );
        assert_eq!(wft.scheduled_event_id, 0);
        assert_eq!(wft.queue.as_str(), "q");
        assert!(c.run.state.sticky_queue.is_empty());
        assert_eq!(c.run.state.sticky_from, 0);
        assert_eq!(c.run.state.wft_last_failure.as_ref(), Some(&failure));
        if attempt == 1 {
            let n = c.events.len();
            assert_eq!(n, 2, "started and failed");
            assert!(matches!(
                &c.events[1].attributes,
                Some(Attributes::WorkflowTaskFailed(f)) if f.cause == pb::WorkflowTaskFailedCause::NonDeterminism as i32
            ));
        } else {
            assert!(
                c.events.is_empty(),
                "attempt {attempt} leaves history alone"
            );
        }
        run = applied(&c);
        at = wft.visible_at;
    }
    let token = lease(&mut run, at);
    let c =
        applied_outcome(complete_workflow_task(&run, &token, &[], "w", at, nobody(at)).unwrap());
    let Some(Attributes::WorkflowTaskScheduled(s)) = &c.events[0].attributes else {
        panic!("{:?}", c.events)
    };
    assert_eq!(s.attempt, 9);
}

/// A token whose history length is not the run's (its lease ran out and events arrived) is
/// no longer current; a claim of a task whose run buffered events delivers them.
#[test]
fn a_stale_history_length_is_refused_and_a_claim_delivers_what_was_buffered() {
    let mut run = started_run();
    assert!(flush_for_claim(&run, T0).is_none());
    let mut token = lease(&mut run, T0);
    token.history_len += 1;
    assert!(matches!(
        complete_workflow_task(&run, &token, &[], "w", T0, nobody(T0)),
        Err(EngineError::NotFound(m)) if m.contains("new events arrived")
    ));
    let run = applied(
        &signal(&run, "go", None, "ops", T0 + 1, nobody(T0 + 1))
            .unwrap()
            .commit,
    );
    assert_eq!(run.state.buffered.len(), 1);
    let c = flush_for_claim(&run, T0 + 2).expect("the buffered signal is appended");
    assert!(c.run.state.buffered.is_empty());
    assert!(matches!(
        c.events[0].attributes,
        Some(Attributes::WorkflowExecutionSignaled(_))
    ));
    assert_eq!(c.events[0].event_id, run.next_event_id);
}
