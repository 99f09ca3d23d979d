use super::*;
use pb::command::Attributes as C;

pub(super) const T0: Millis = 1_700_000_000_000;

/// Nobody to hand tasks to, at `at`: every decision's tasks stay in the store.
pub(super) fn nobody(at: Millis) -> Dispatch<'static> {
    Dispatch::nobody(at)
}

pub(super) fn started_run() -> Run {
    let params = StartParams::new(
        Namespace::parse("default").unwrap(),
        WorkflowId::parse("w-1").unwrap(),
        WorkflowType::parse("thing").unwrap(),
        TaskQueue::parse("q").unwrap(),
    );
    let commit = new_run(&params, RunId::new(), T0, nobody(T0)).commit;
    assert_eq!(commit.events.len(), 2);
    commit.run
}

/// Applies a commit as the store would: the checkpoint moves to the next version.
pub(super) fn applied(c: &RunCommit) -> Run {
    let mut r = c.run.clone();
    r.version += 1;
    r
}

/// Leases the pending workflow task and returns the token a worker would get.
pub(super) fn lease(run: &mut Run, now: Millis) -> TaskToken {
    let wft = run.wft.as_mut().expect("a workflow task is pending");
    let l = Lease::new(now, 10_000);
    wft.lease = Some(l.clone());
    TaskToken {
        namespace: run.namespace.to_string(),
        run_id: run.run_id.to_text(),
        kind: TOKEN_KIND_WORKFLOW,
        scheduled_event_id: wft.scheduled_event_id,
        attempt: wft.attempt,
        lease_id: l.id,
        history_len: run.next_event_id - 1,
    }
}

fn schedule(id: &str) -> pb::Command {
    pb::Command {
        attributes: Some(C::ScheduleActivity(pb::ScheduleActivityTaskCommand {
            activity_id: id.into(),
            activity_type: "reserve".into(),
            ..Default::default()
        })),
    }
}

pub(super) fn complete() -> pb::Command {
    pb::Command {
        attributes: Some(C::CompleteWorkflow(Default::default())),
    }
}

pub(super) fn applied_outcome(o: WftOutcome) -> RunCommit {
    match o {
        WftOutcome::Applied(c) => c.commit,
        WftOutcome::Rejected { error, .. } => panic!("rejected: {error}"),
    }
}

fn kinds(events: &[pb::HistoryEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e.attributes.as_ref().unwrap() {
            Attributes::WorkflowTaskScheduled(_) => "wft_scheduled",
            Attributes::WorkflowTaskStarted(_) => "wft_started",
            Attributes::WorkflowTaskCompleted(_) => "wft_completed",
            Attributes::WorkflowTaskFailed(_) => "wft_failed",
            Attributes::ActivityTaskScheduled(_) => "act_scheduled",
            Attributes::ActivityTaskStarted(_) => "act_started",
            Attributes::ActivityTaskCompleted(_) => "act_completed",
            Attributes::ActivityTaskFailed(_) => "act_failed",
            Attributes::WorkflowExecutionSignaled(_) => "signaled",
            Attributes::WorkflowExecutionCompleted(_) => "completed",
            Attributes::TimerFired(_) => "timer_fired",
            _ => "other",
        })
        .collect()
}

#[test]
fn a_completion_records_started_and_completed_then_the_commands_in_order() {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    let c = applied_outcome(
        complete_workflow_task(
            &run,
            &token,
            &[schedule("a"), schedule("b")],
            "w1",
            T0,
            nobody(T0),
        )
        .unwrap(),
    );
    assert_eq!(
        kinds(&c.events),
        [
            "wft_started",
            "wft_completed",
            "act_scheduled",
            "act_scheduled"
        ]
    );
    let ids: Vec<i64> = c.events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, [3, 4, 5, 6], "event ids stay dense");
    assert!(c.run.wft.is_none());
    assert_eq!(c.tasks.len(), 2);
    assert_eq!(c.run.state.activities.len(), 2);
}

#[test]
fn events_arriving_during_a_workflow_task_are_buffered_then_delivered() {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    let c = signal(&run, "go", None, "ops", T0 + 1, nobody(T0 + 1))
        .unwrap()
        .commit;
    assert!(c.events.is_empty(), "buffered, not appended");
    let run = applied(&c);
    assert_eq!(run.state.buffered.len(), 1);
    let c = applied_outcome(
        complete_workflow_task(&run, &token, &[], "w1", T0 + 2, nobody(T0 + 2)).unwrap(),
    );
    assert_eq!(
        kinds(&c.events),
        ["wft_started", "wft_completed", "signaled", "wft_scheduled"]
    );
    assert!(
        c.run.wft.is_some(),
        "a new workflow task delivers the signal"
    );
}

#[test]
fn closing_with_unhandled_events_is_rejected_and_the_events_delivered() {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    let run = applied(
        &signal(&run, "late", None, "ops", T0 + 1, nobody(T0 + 1))
            .unwrap()
            .commit,
    );
    match complete_workflow_task(&run, &token, &[complete()], "w1", T0 + 2, nobody(T0 + 2)).unwrap()
    {
        WftOutcome::Rejected {
            decided: Decided { commit, .. },
            error,
        } => {
            assert!(error.to_string().contains("unhandled events"), "{error}");
            assert_eq!(kinds(&commit.events), ["signaled"]);
            assert!(commit.run.is_open());
            assert!(commit.run.wft.as_ref().unwrap().lease.is_none());
        }
        WftOutcome::Applied(_) => panic!("must not close over an unseen signal"),
    }
}

#[test]
fn bad_commands_fail_the_task_and_leave_history_intact() {
    let cases: Vec<(Vec<pb::Command>, &str)> = vec![
        (vec![schedule("a"), schedule("a")], "already used"),
        (vec![complete(), complete()], "closed the workflow"),
        (
            vec![pb::Command {
                attributes: Some(C::CancelTimer(pb::CancelTimerCommand {
                    timer_id: "never".into(),
                })),
            }],
            "never started",
        ),
        (vec![pb::Command { attributes: None }], "no attributes"),
        // Ids in commands follow the requests' rules: no queue a worker could not poll.
        (
            vec![pb::Command {
                attributes: Some(C::ScheduleActivity(pb::ScheduleActivityTaskCommand {
                    activity_id: "a".into(),
                    activity_type: "reserve".into(),
                    task_queue: "billing\n".into(),
                    ..Default::default()
                })),
            }],
            "task_queue must not contain control characters",
        ),
        (
            vec![pb::Command {
                attributes: Some(C::ContinueAsNew(
                    pb::ContinueAsNewWorkflowExecutionCommand {
                        workflow_type: "x".repeat(256),
                        ..Default::default()
                    },
                )),
            }],
            "workflow_type is 256 bytes, at most 255",
        ),
        (
            vec![pb::Command {
                attributes: Some(C::ContinueAsNew(
                    pb::ContinueAsNewWorkflowExecutionCommand {
                        workflow_task_timeout: Some(ms_to_duration(3_600_000)),
                        ..Default::default()
                    },
                )),
            }],
            "workflow_task_timeout is 3600000 ms; it must be between 1s and 10m",
        ),
    ];
    for (commands, why) in cases {
        let mut run = started_run();
        let token = lease(&mut run, T0);
        match complete_workflow_task(&run, &token, &commands, "w1", T0, nobody(T0)).unwrap() {
            WftOutcome::Rejected {
                decided: Decided { commit, .. },
                error,
            } => {
                assert!(error.to_string().contains(why), "{error} should say {why}");
                assert_eq!(
                    kinds(&commit.events),
                    ["wft_started", "wft_failed"],
                    "only the failure is recorded"
                );
                assert!(commit.tasks.is_empty() && commit.timers.is_empty());
                let wft = commit.run.wft.as_ref().unwrap();
                assert_eq!(wft.attempt, 2);
                assert!(commit.run.is_open());
            }
            WftOutcome::Applied(_) => panic!("{why}: must be rejected"),
        }
    }
}

#[test]
fn stale_and_forged_workflow_tokens_are_rejected() {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    let forged = TaskToken {
        lease_id: "forged".into(),
        ..token.clone()
    };
    assert!(matches!(
        complete_workflow_task(&run, &forged, &[], "w", T0, nobody(T0)),
        Err(EngineError::NotFound(_))
    ));
    let done = applied(&applied_outcome(
        complete_workflow_task(&run, &token, &[complete()], "w", T0, nobody(T0)).unwrap(),
    ));
    assert!(matches!(
        complete_workflow_task(&done, &token, &[complete()], "w", T0, nobody(T0)),
        Err(EngineError::NotFound(_))
    ));
}

fn with_activity() -> (Run, TaskToken) {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    let mut cmd = schedule("a");
    if let Some(C::ScheduleActivity(s)) = cmd.attributes.as_mut() {
        s.retry_policy = Some(pb::RetryPolicy {
            maximum_attempts: 2,
            ..Default::default()
        });
    }
    let run = applied(&applied_outcome(
        complete_workflow_task(&run, &token, &[cmd], "w", T0, nobody(T0)).unwrap(),
    ));
    let act = run.state.activities[0].clone();
    let token = TaskToken {
        namespace: run.namespace.to_string(),
        run_id: run.run_id.to_text(),
        kind: TOKEN_KIND_ACTIVITY,
        scheduled_event_id: act.scheduled_event_id,
        attempt: 1,
        lease_id: "l1".into(),
        history_len: 0,
    };
    (run, token)
}

#[test]
fn a_retried_activity_writes_no_history_and_only_the_final_outcome_arrives() {
    let (run, token) = with_activity();
    let failure = pb::Failure {
        message: "io".into(),
        ..Default::default()
    };
    let c = fail_activity(
        &run,
        &token,
        failure.clone(),
        "w",
        T0 + 10,
        0.0,
        false,
        nobody(T0 + 10),
    )
    .unwrap()
    .commit;
    assert!(c.events.is_empty(), "a retry is not in history");
    assert!(
        matches!(c.tasks[0], TaskOp::Retry { attempt: 2, visible_at, .. } if visible_at == T0 + 1010)
    );
    let run = applied(&c);
    assert_eq!(run.state.activities[0].attempt, 2);
    // The first attempt's token is stale now.
    assert!(complete_activity(&run, &token, None, "w", T0, nobody(T0)).is_err());
    let token2 = TaskToken {
        attempt: 2,
        lease_id: "l2".into(),
        ..token
    };
    let c = fail_activity(
        &run,
        &token2,
        failure,
        "w",
        T0 + 2000,
        0.0,
        false,
        nobody(T0 + 2000),
    )
    .unwrap()
    .commit;
    assert_eq!(
        kinds(&c.events),
        ["act_started", "act_failed", "wft_scheduled"],
        "maximum_attempts reached: the failure reaches the workflow"
    );
}

#[test]
fn non_retryable_failures_and_retry_hints_are_honoured() {
    let (run, token) = with_activity();
    let declined = pb::Failure {
        message: "declined".into(),
        non_retryable: true,
        ..Default::default()
    };
    let c = fail_activity(&run, &token, declined, "w", T0, 0.0, false, nobody(T0))
        .unwrap()
        .commit;
    assert_eq!(kinds(&c.events)[1], "act_failed");
    let open = pb::Failure {
        message: "circuit open".into(),
        next_retry_delay: Some(ms_to_duration(7_000)),
        ..Default::default()
    };
    let c = fail_activity(&run, &token, open, "w", T0, 0.0, false, nobody(T0))
        .unwrap()
        .commit;
    assert!(matches!(c.tasks[0], TaskOp::Retry { visible_at, .. } if visible_at == T0 + 7_000));
}

#[test]
fn a_timer_fires_once_and_a_cancelled_one_not_at_all() {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    let start = pb::Command {
        attributes: Some(C::StartTimer(pb::StartTimerCommand {
            timer_id: "t1".into(),
            start_to_fire_timeout: Some(ms_to_duration(5_000)),
        })),
    };
    let run = applied(&applied_outcome(
        complete_workflow_task(&run, &token, &[start], "w", T0, nobody(T0)).unwrap(),
    ));
    assert_eq!(run.state.timers[0].fire_at, T0 + 5_000);
    let fired = fire_timer(&run, "t:t1", T0 + 5_000, false, nobody(T0 + 5_000))
        .expect("pending timer fires")
        .commit;
    assert_eq!(kinds(&fired.events), ["timer_fired", "wft_scheduled"]);
    assert_eq!(fired.fired_timer.as_deref(), Some("t:t1"));
    assert!(
        fire_timer(
            &applied(&fired),
            "t:t1",
            T0 + 6_000,
            false,
            nobody(T0 + 6_000)
        )
        .is_none()
    );
}

#[test]
fn terminate_closes_at_once_and_later_requests_are_refused() {
    let run = started_run();
    let c = terminate(&run, "stuck", "ops", T0).unwrap();
    assert!(c.closed);
    let run = applied(&c);
    assert_eq!(run.status, pb::WorkflowStatus::Terminated);
    assert!(matches!(
        signal(&run, "x", None, "ops", T0, nobody(T0)),
        Err(EngineError::FailedPrecondition(_))
    ));
}

#[test]
fn continue_as_new_closes_this_run_and_starts_the_next_in_one_commit() {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    let can = pb::Command {
        attributes: Some(C::ContinueAsNew(Default::default())),
    };
    let c =
        applied_outcome(complete_workflow_task(&run, &token, &[can], "w", T0, nobody(T0)).unwrap());
    assert_eq!(c.run.status, pb::WorkflowStatus::ContinuedAsNew);
    let next = c.new_run.as_ref().expect("next run");
    assert_eq!(next.run.workflow_id, run.workflow_id);
    assert!(next.run.is_open() && next.run.wft.is_some());
    assert_eq!(next.run.state.first_run_id, run.run_id.to_text());
}

#[test]
fn a_paused_run_parks_its_tasks_records_results_and_resumes_them_when_due() {
    let (run, token) = with_activity();
    let act = run.state.activities[0].scheduled_event_id;
    let c = pause(&run, "supplier outage", "ops@host", T0 + 5)
        .unwrap()
        .expect("a running run pauses");
    assert!(c.events.is_empty(), "a pause is not in history");
    assert_eq!(
        c.tasks,
        [TaskOp::Hold {
            scheduled_event_id: act,
            visible_at: PARKED_UNTIL
        }]
    );
    let run = applied(&c);
    assert_eq!(run.state.paused_by, "ops@host");
    assert_eq!(run.state.paused_reason, "supplier outage");
    assert!(
        pause(&run, "again", "other", T0 + 6).unwrap().is_none(),
        "pausing a paused run changes nothing"
    );

    // The attempt running when it was paused fails: its retry is parked, its time kept.
    let failure = pb::Failure {
        message: "io".into(),
        ..Default::default()
    };
    let d = fail_activity(&run, &token, failure, "w", T0 + 10, 0.0, false, nobody(T0))
        .unwrap()
        .commit;
    assert!(matches!(d.tasks[0], TaskOp::Retry { visible_at, .. } if visible_at == PARKED_UNTIL));
    let run = applied(&d);
    assert_eq!(run.state.activities[0].next_attempt_time, T0 + 1010);

    // A signal is recorded; the workflow task that delivers it is parked and handed to no one.
    let mut pollers = AllWaiting::default();
    let s = signal(
        &run,
        "go",
        None,
        "c",
        T0 + 20,
        Dispatch::pollers(&mut pollers, T0 + 20),
    )
    .unwrap();
    assert_eq!(kinds(&s.commit.events), ["signaled", "wft_scheduled"]);
    assert_eq!(s.commit.run.wft.as_ref().unwrap().visible_at, PARKED_UNTIL);
    assert!(s.to_pollers.is_empty());
    let run = applied(&s.commit);

    // Resumed before the retry is due: the workflow task goes now, the attempt at its time.
    let mut pollers = AllWaiting::default();
    let r = resume(&run, T0 + 30, Dispatch::pollers(&mut pollers, T0 + 30))
        .unwrap()
        .expect("a paused run resumes");
    assert_eq!(
        r.commit.tasks,
        [TaskOp::Hold {
            scheduled_event_id: act,
            visible_at: T0 + 1010
        }]
    );
    assert_eq!(r.to_pollers.len(), 1, "the workflow task is handed out");
    let run = applied(&r.commit);
    assert!(!run.state.is_paused() && run.state.paused_by.is_empty());
    assert!(resume(&run, T0 + 40, nobody(T0 + 40)).unwrap().is_none());
}

#[test]
fn a_closed_run_can_be_neither_paused_nor_resumed() {
    let run = started_run();
    let run = applied(&terminate(&run, "done", "ops", T0).unwrap());
    assert!(matches!(
        pause(&run, "x", "ops", T0),
        Err(EngineError::FailedPrecondition(_))
    ));
    assert!(matches!(
        resume(&run, T0, nobody(T0)),
        Err(EngineError::FailedPrecondition(_))
    ));
}

/// A poller waits on every queue.
#[derive(Default)]
struct AllWaiting(usize);

impl Pollers for AllWaiting {
    fn take_workflow(&mut self, _: &str, _: &str) -> Option<PollerId> {
        self.0 += 1;
        Some(PollerId(self.0))
    }
    fn take_activity(&mut self, _: &str, _: &str) -> Option<PollerId> {
        self.0 += 1;
        Some(PollerId(self.0))
    }
}

#[test]
fn an_attempt_a_breaker_refused_costs_nothing_and_waits_behind_it() {
    let (run, token) = with_activity();
    let act = run.state.activities[0].scheduled_event_id;
    let refused = pb::Failure {
        message: "circuit breaker gateway is open; nothing was called".into(),
        r#type: "CircuitOpen".into(),
        breaker: "gateway".into(),
        next_retry_delay: Some(ms_to_duration(30_000)),
        ..Default::default()
    };
    let c = fail_activity(&run, &token, refused, "w", T0 + 10, 0.0, false, nobody(T0))
        .unwrap()
        .commit;
    assert!(c.events.is_empty());
    assert_eq!(
        c.tasks,
        [TaskOp::Park {
            scheduled_event_id: act,
            lease_id: token.lease_id.clone(),
            breaker: "gateway".into()
        }]
    );
    let run = applied(&c);
    let a = &run.state.activities[0];
    assert_eq!((a.attempt, a.parked_behind.as_str()), (1, "gateway"));
    // No token completes a parked task: not its last holder's, not one naming the breaker.
    assert!(complete_activity(&run, &token, None, "w", T0 + 11, nobody(T0)).is_err());
    let forged = TaskToken {
        lease_id: breaker_lease("gateway"),
        ..token.clone()
    };
    let raw = prost::Message::encode_to_vec(&forged);
    assert!(TaskToken::decode_from(&raw).is_err());
    let split = TaskToken {
        lease_id: "l1\u{1f}breaker:x".into(),
        ..token.clone()
    };
    assert!(TaskToken::decode_from(&prost::Message::encode_to_vec(&split)).is_err());
    assert_eq!((a.parked_since, a.next_attempt_time), (T0 + 10, 0));

    assert!(unpark(&run, act, "mailer", T0 + 20, nobody(T0 + 20)).is_none());
    let mut pollers = AllWaiting::default();
    let r = unpark(
        &run,
        act,
        "gateway",
        T0 + 20,
        Dispatch::pollers(&mut pollers, T0 + 20),
    )
    .expect("released");
    assert_eq!(
        r.commit.tasks,
        [TaskOp::Unpark {
            scheduled_event_id: act,
            breaker: "gateway".into(),
            visible_at: T0 + 20
        }]
    );
    let released = applied(&r.commit);
    assert!(released.state.activities[0].parked_behind.is_empty());
    assert!(
        unpark(&released, act, "gateway", T0 + 30, nobody(T0 + 30)).is_none(),
        "released once"
    );

    // Released while the run is paused: it stays parked for the pause.
    let paused = applied(&pause(&run, "audit", "ops", T0 + 15).unwrap().unwrap());
    let r = unpark(&paused, act, "gateway", T0 + 20, nobody(T0 + 20)).unwrap();
    assert!(matches!(
        r.commit.tasks[..],
        [TaskOp::Unpark { visible_at, .. }] if visible_at == PARKED_UNTIL
    ));

    // On the run before it was parked: a bad breaker name is refused, changing nothing; a
    // breaker's refusal said to be non-retryable is a failure, not a parking.
    let (unparked, token) = with_activity();
    let bad = pb::Failure {
        breaker: "gate\nway".into(),
        ..Default::default()
    };
    match fail_activity(&unparked, &token, bad, "w", T0, 0.0, false, nobody(T0)) {
        Err(EngineError::InvalidArgument { field, .. }) => assert_eq!(field, "failure.breaker"),
        other => panic!("expected the breaker's name refused, got {other:?}"),
    }
    let final_refusal = pb::Failure {
        breaker: "gateway".into(),
        non_retryable: true,
        ..Default::default()
    };
    let c = fail_activity(
        &unparked,
        &token,
        final_refusal,
        "w",
        T0,
        0.0,
        false,
        nobody(T0),
    )
    .unwrap()
    .commit;
    assert!(
        !c.tasks.iter().any(|t| matches!(t, TaskOp::Park { .. })),
        "{:?}",
        c.tasks
    );
}
