//! The driver against canned histories, live and replayed, without an engine.

use super::*;
use crate::error::WorkflowError;
use crate::workflow::{ActivityOptions, WorkflowContext, erase};
use futures::{FutureExt, StreamExt};
use std::time::Duration;

/// A minimal stand-in for the engine's bookkeeping: turns commands into the events the
/// engine would record.
#[derive(Default)]
struct Hist {
    events: Vec<pb::HistoryEvent>,
    activity_sched: HashMap<String, i64>,
    time: i64,
}

impl Hist {
    fn push(&mut self, a: A) -> i64 {
        let id = self.events.len() as i64 + 1;
        self.time += 1000;
        self.events.push(pb::HistoryEvent {
            event_id: id,
            event_time: Some(pbjson_types::Timestamp {
                seconds: self.time / 1000,
                nanos: 0,
            }),
            attributes: Some(a),
        });
        id
    }

    fn start(input: &str) -> Self {
        let mut h = Self::default();
        h.push(A::WorkflowExecutionStarted(
            pb::WorkflowExecutionStartedAttributes {
                workflow_type: "t".into(),
                // "" stands for no input (JSON null), for workflows that take `()`.
                input: Some(if input.is_empty() {
                    to_payload(&()).unwrap()
                } else {
                    to_payload(&input).unwrap()
                }),
                ..Default::default()
            },
        ));
        h.wft();
        h
    }

    fn wft(&mut self) {
        self.push(A::WorkflowTaskScheduled(
            pb::WorkflowTaskScheduledAttributes {
                attempt: 1,
                ..Default::default()
            },
        ));
    }

    fn record(&mut self, commands: &[pb::Command]) {
        self.push(A::WorkflowTaskStarted(Default::default()));
        self.push(A::WorkflowTaskCompleted(Default::default()));
        for c in commands {
            match c.attributes.clone().unwrap() {
                C::ScheduleActivity(s) => {
                    let id = self.push(A::ActivityTaskScheduled(
                        pb::ActivityTaskScheduledAttributes {
                            activity_id: s.activity_id.clone(),
                            activity_type: s.activity_type,
                            ..Default::default()
                        },
                    ));
                    self.activity_sched.insert(s.activity_id, id);
                }
                C::RequestCancelActivity(r) => {
                    let sched = self.activity_sched[&r.activity_id];
                    self.push(A::ActivityTaskCancelRequested(
                        pb::ActivityTaskCancelRequestedAttributes {
                            scheduled_event_id: sched,
                            ..Default::default()
                        },
                    ));
                    self.push(A::ActivityTaskCanceled(
                        pb::ActivityTaskCanceledAttributes {
                            scheduled_event_id: sched,
                            details: None,
                        },
                    ));
                }
                C::StartTimer(t) => {
                    self.push(A::TimerStarted(pb::TimerStartedAttributes {
                        timer_id: t.timer_id,
                        ..Default::default()
                    }));
                }
                C::CancelTimer(t) => {
                    self.push(A::TimerCanceled(pb::TimerCanceledAttributes {
                        timer_id: t.timer_id,
                        ..Default::default()
                    }));
                }
                C::PublishEvent(p) => {
                    self.push(A::EventPublished(pb::EventPublishedAttributes {
                        event_type: p.event_type,
                        body: p.body,
                        ..Default::default()
                    }));
                }
                C::RecordMarker(m) => {
                    self.push(A::MarkerRecorded(pb::MarkerRecordedAttributes {
                        marker_name: m.marker_name,
                        details: m.details,
                        ..Default::default()
                    }));
                }
                C::CompleteWorkflow(c) => {
                    self.push(A::WorkflowExecutionCompleted(
                        pb::WorkflowExecutionCompletedAttributes {
                            result: c.result,
                            ..Default::default()
                        },
                    ));
                }
                C::FailWorkflow(f) => {
                    self.push(A::WorkflowExecutionFailed(
                        pb::WorkflowExecutionFailedAttributes {
                            failure: f.failure,
                            ..Default::default()
                        },
                    ));
                }
                C::CancelWorkflow(_) => {
                    self.push(A::WorkflowExecutionCanceled(Default::default()));
                }
                C::ContinueAsNew(_) => {
                    self.push(A::WorkflowExecutionContinuedAsNew(Default::default()));
                }
                C::StartChildWorkflow(c) => {
                    self.push(A::StartChildWorkflowExecutionInitiated(
                        pb::StartChildWorkflowExecutionInitiatedAttributes {
                            workflow_id: c.workflow_id,
                            workflow_type: c.workflow_type,
                            input: c.input,
                            ..Default::default()
                        },
                    ));
                }
                C::UpsertSearchAttributes(c) => {
                    self.push(A::UpsertSearchAttributes(
                        pb::UpsertSearchAttributesAttributes {
                            attributes: c.attributes,
                            ..Default::default()
                        },
                    ));
                }
                C::CompleteUpdate(c) => {
                    self.push(A::WorkflowUpdateCompleted(
                        pb::WorkflowUpdateCompletedAttributes {
                            update_id: c.update_id,
                            result: c.result,
                            failure: c.failure,
                            ..Default::default()
                        },
                    ));
                }
                C::RequestCancelChildWorkflow(c) => {
                    self.push(A::ChildWorkflowExecutionCancelRequested(
                        pb::ChildWorkflowExecutionCancelRequestedAttributes {
                            workflow_id: c.workflow_id,
                            ..Default::default()
                        },
                    ));
                }
            }
        }
    }

    fn activity_done(&mut self, id: &str, result: &str) {
        let sched = self.activity_sched[id];
        self.push(A::ActivityTaskStarted(pb::ActivityTaskStartedAttributes {
            scheduled_event_id: sched,
            attempt: 1,
            ..Default::default()
        }));
        self.push(A::ActivityTaskCompleted(
            pb::ActivityTaskCompletedAttributes {
                scheduled_event_id: sched,
                result: Some(to_payload(&result).unwrap()),
                ..Default::default()
            },
        ));
    }

    fn activity_failed(&mut self, id: &str, message: &str) {
        let sched = self.activity_sched[id];
        self.push(A::ActivityTaskFailed(pb::ActivityTaskFailedAttributes {
            scheduled_event_id: sched,
            failure: Some(pb::Failure {
                message: message.into(),
                r#type: "Declined".into(),
                ..Default::default()
            }),
            ..Default::default()
        }));
    }

    fn timer_fired(&mut self, id: &str) {
        self.push(A::TimerFired(pb::TimerFiredAttributes {
            timer_id: id.into(),
            started_event_id: 0,
        }));
    }

    fn signal(&mut self, name: &str, value: &str) {
        self.push(A::WorkflowExecutionSignaled(
            pb::WorkflowExecutionSignaledAttributes {
                signal_name: name.into(),
                input: Some(to_payload(&value).unwrap()),
                identity: String::new(),
            },
        ));
    }
}

fn driver(f: WorkflowFn) -> RunDriver {
    RunDriver::new(
        f,
        WorkflowInfo {
            namespace: "default".into(),
            workflow_id: "wf".into(),
            run_id: "run-1".into(),
            first_run_id: "run-1".into(),
            continued_from_run_id: None,
            workflow_type: "t".into(),
            task_queue: "q".into(),
        },
    )
}

/// Runs one workflow task live on a cached driver and records its commands.
fn step(d: &mut RunDriver, h: &mut Hist) -> Vec<String> {
    d.apply_history(&h.events).expect("apply");
    let cmds = d.activate_live().expect("activate");
    h.record(&cmds);
    cmds.iter().map(command_key).collect()
}

/// Replays the whole history on a fresh driver: must match.
fn replays(f: WorkflowFn, h: &Hist) -> Result<(), ActivationError> {
    let mut d = driver(f);
    d.apply_history(&h.events)?;
    d.finish_replay()?;
    Ok(())
}

fn opts() -> ActivityOptions {
    ActivityOptions::new(Duration::from_secs(5))
}

async fn sequential(ctx: WorkflowContext, input: String) -> Result<String, WorkflowError> {
    let a: String = ctx.activity_by_name("a", &input, opts()).await?;
    let b: String = ctx.activity_by_name("b", &a, opts()).await?;
    Ok(format!("{a}+{b}"))
}

#[test]
fn commands_come_in_program_order_and_replay_matches() {
    let f = erase(sequential);
    let mut d = driver(f.clone());
    let mut h = Hist::start("x");
    assert_eq!(step(&mut d, &mut h), ["ScheduleActivity(id=1, type=a)"]);
    h.activity_done("1", "A");
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["ScheduleActivity(id=2, type=b)"]);
    h.activity_done("2", "B");
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    d.apply_history(&h.events).unwrap();
    assert!(d.finished);
    replays(f, &h).expect("a replay of the same code is deterministic");
    let result = h.events.iter().find_map(|e| match &e.attributes {
        Some(A::WorkflowExecutionCompleted(c)) => c.result.clone(),
        _ => None,
    });
    assert_eq!(from_payload::<String>(result.as_ref()).unwrap(), "A+B");
}

async fn parallel(ctx: WorkflowContext, _: ()) -> Result<Vec<String>, WorkflowError> {
    let (a, b) = futures::join!(
        ctx.activity_by_name::<_, String>("a", &1, opts()),
        ctx.activity_by_name::<_, String>("b", &2, opts())
    );
    Ok(vec![a?, b?])
}

#[test]
fn parallel_activities_are_scheduled_together_and_joined() {
    let f = erase(parallel);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert_eq!(
        step(&mut d, &mut h),
        [
            "ScheduleActivity(id=1, type=a)",
            "ScheduleActivity(id=2, type=b)"
        ]
    );
    // Results arrive in the other order, in separate tasks.
    h.activity_done("2", "B");
    h.wft();
    assert!(step(&mut d, &mut h).is_empty(), "still waiting for a");
    h.activity_done("1", "A");
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    replays(f, &h).unwrap();
}

async fn race(ctx: WorkflowContext, _: ()) -> Result<&'static str, WorkflowError> {
    // The SDK's futures are fused and `Unpin`: `select!` takes them as they are.
    let mut act = ctx.activity_by_name::<_, String>("slow", &(), opts());
    let mut timer = ctx.sleep(Duration::from_secs(30));
    futures::select! {
        _ = act => Ok("activity"),
        () = timer => Ok("timer"),
    }
}

#[test]
fn a_timer_that_wins_a_race_cancels_the_activity() {
    let f = erase(race);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert_eq!(
        step(&mut d, &mut h),
        ["ScheduleActivity(id=1, type=slow)", "StartTimer(id=2)"]
    );
    h.timer_fired("2");
    h.wft();
    assert_eq!(
        step(&mut d, &mut h),
        ["RequestCancelActivity(id=1)", "CompleteWorkflow"]
    );
    replays(f, &h).unwrap();
}

async fn approvals(ctx: WorkflowContext, _: ()) -> Result<Vec<String>, WorkflowError> {
    let mut signals = ctx.signal_by_name::<String>("approve");
    let first = signals.next().await.unwrap()?;
    let second = signals.next().await.unwrap()?;
    Ok(vec![first, second])
}

#[test]
fn signals_sent_before_and_after_the_workflow_waits_are_delivered_in_order() {
    let f = erase(approvals);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    h.signal("approve", "alice"); // arrives with the first task
    assert!(step(&mut d, &mut h).is_empty());
    h.signal("approve", "bob");
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    replays(f, &h).unwrap();
    let result = h.events.iter().find_map(|e| match &e.attributes {
        Some(A::WorkflowExecutionCompleted(c)) => c.result.clone(),
        _ => None,
    });
    assert_eq!(
        from_payload::<Vec<String>>(result.as_ref()).unwrap(),
        ["alice", "bob"]
    );
}

/// Waits for `go` signals and a timer in one `select_biased!` loop (no `.fuse()`): the timer, once
/// fired, is terminated and skipped; the stream never ends.
async fn select_loop(ctx: WorkflowContext, _: ()) -> Result<(Vec<String>, bool), WorkflowError> {
    let mut go = ctx.signal_by_name::<String>("go");
    let mut timer = ctx.sleep(Duration::from_secs(10));
    let mut seen = Vec::new();
    let mut fired = false;
    while seen.len() < 2 {
        futures::select_biased! {
            s = go.next() => seen.push(s.expect("never ends")?),
            () = timer => fired = true,
        }
    }
    Ok((seen, fired))
}

#[test]
fn sdk_futures_and_streams_are_fused_for_select_loops() {
    use futures::future::FusedFuture;
    use futures::stream::FusedStream;
    let f = erase(select_loop);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert_eq!(step(&mut d, &mut h), ["StartTimer(id=1)"]);
    h.timer_fired("1");
    h.signal("go", "a");
    h.wft();
    assert!(step(&mut d, &mut h).is_empty(), "one signal so far");
    h.signal("go", "b");
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    replays(f, &h).unwrap();
    let result = h.events.iter().find_map(|e| match &e.attributes {
        Some(A::WorkflowExecutionCompleted(c)) => c.result.clone(),
        _ => None,
    });
    assert_eq!(
        from_payload::<(Vec<String>, bool)>(result.as_ref()).unwrap(),
        (vec!["a".to_owned(), "b".to_owned()], true)
    );
    // A stream that never ends is never terminated; a future not polled yet is not either.
    let shared = Arc::new(Mutex::new(Shared::new(0)));
    let ctx = WorkflowContext::new(shared, d.info.clone());
    assert!(!ctx.signal_by_name::<String>("go").is_terminated());
    assert!(!ctx.sleep(Duration::from_secs(1)).is_terminated());
    assert!(!ctx.cancelled().is_terminated());
}

/// Takes the signals that already arrived without waiting, then says what it found.
async fn early_signals(ctx: WorkflowContext, _: ()) -> Result<Vec<String>, WorkflowError> {
    let mut go = ctx.signal_by_name::<u32>("go");
    let mut found = Vec::new();
    while let Some(s) = go.try_next() {
        found.push(match s {
            Ok(n) => n.to_string(),
            Err(e) => e.to_string(),
        });
    }
    Ok(found)
}

#[test]
fn try_next_takes_the_signals_that_arrived_and_names_one_that_does_not_decode() {
    let f = erase(early_signals);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    h.push(A::WorkflowExecutionSignaled(
        pb::WorkflowExecutionSignaledAttributes {
            signal_name: "go".into(),
            input: Some(to_payload(&7).unwrap()),
            identity: String::new(),
        },
    ));
    h.signal("go", "not a number");
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    replays(f, &h).unwrap();
    let result = h.events.iter().find_map(|e| match &e.attributes {
        Some(A::WorkflowExecutionCompleted(c)) => c.result.clone(),
        _ => None,
    });
    let found = from_payload::<Vec<String>>(result.as_ref()).unwrap();
    assert_eq!(found[0], "7");
    assert!(
        found[1].starts_with("signal 'go': cannot decode its payload: invalid type: string"),
        "{found:?}"
    );
    assert_eq!(
        found.len(),
        2,
        "no signal left: try_next answers None at once"
    );
}

/// `?` on a signal that does not decode fails the run, naming the signal.
async fn strict_signal(ctx: WorkflowContext, _: ()) -> Result<u32, WorkflowError> {
    Ok(ctx
        .signal_by_name::<u32>("amount")
        .next()
        .await
        .expect("never ends")?)
}

#[test]
fn a_signal_that_does_not_decode_fails_the_run_naming_it() {
    let mut d = driver(erase(strict_signal));
    let mut h = Hist::start("");
    h.signal("amount", "ten");
    d.apply_history(&h.events).unwrap();
    let cmds = d.activate_live().unwrap();
    match &cmds[0].attributes {
        Some(C::FailWorkflow(f)) => {
            let f = f.failure.as_ref().unwrap();
            assert!(
                f.message.starts_with("signal 'amount': cannot decode"),
                "{f:?}"
            );
        }
        other => panic!("expected FailWorkflow, got {other:?}"),
    }
}

async fn with_defaults(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    let ctx = ctx.with_activity_defaults(
        ActivityOptions::new(Duration::from_secs(7)).initial_interval(Duration::from_millis(200)),
    );
    let a = ctx.activity_by_name::<_, ()>("a", &(), ActivityOptions::default().maximum_attempts(3));
    let b = ctx.activity_by_name::<_, ()>("b", &(), opts());
    let (a, b) = futures::join!(a, b);
    Ok(a.and(b)?)
}

#[test]
fn workflow_defaults_fill_what_a_call_leaves_unset() {
    let mut d = driver(erase(with_defaults));
    let h = Hist::start("");
    d.apply_history(&h.events).unwrap();
    let scheduled: Vec<_> = d
        .activate_live()
        .unwrap()
        .into_iter()
        .map(|c| match c.attributes {
            Some(C::ScheduleActivity(s)) => s,
            other => panic!("{other:?}"),
        })
        .collect();
    let secs = |d: &Option<pbjson_types::Duration>| d.as_ref().map(|d| d.seconds);
    assert_eq!(secs(&scheduled[0].start_to_close_timeout), Some(7));
    let policy = scheduled[0].retry_policy.clone().unwrap();
    assert_eq!(policy.maximum_attempts, 3);
    assert_eq!(policy.initial_interval.unwrap().nanos, 200_000_000);
    assert_eq!(
        secs(&scheduled[1].start_to_close_timeout),
        Some(5),
        "the call's own timeout wins"
    );
}

/// A typed activity with defaults of its own.
struct Charge;
impl crate::Activity for Charge {
    const NAME: &'static str = "charge";
    type Input = u64;
    type Output = String;
    fn options() -> ActivityOptions {
        ActivityOptions::new(Duration::from_secs(3)).maximum_attempts(2)
    }
}

/// An activity whose input cannot be JSON (a map with tuple keys).
struct Tally;
impl crate::Activity for Tally {
    const NAME: &'static str = "tally";
    type Input = HashMap<(u8, u8), u8>;
    type Output = ();
}

async fn typed(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let bad = ctx.activity(Tally, &HashMap::from([((1, 2), 3)])).await;
    let why = bad.expect_err("cannot be encoded").to_string();
    let ctx = ctx.with_activity_defaults(ActivityOptions::default().maximum_attempts(7));
    let charged = ctx
        .activity(Charge, &100)
        .with_options(ActivityOptions::default().heartbeat_timeout(Duration::from_secs(1)))
        .await?;
    Ok(format!("{charged}; {why}"))
}

#[test]
fn a_typed_activity_layers_its_options_and_an_input_that_does_not_encode_fails_the_call() {
    let f = erase(typed);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    d.apply_history(&h.events).unwrap();
    let cmds = d.activate_live().unwrap();
    let Some(C::ScheduleActivity(s)) = &cmds[0].attributes else {
        panic!("only the charge is scheduled: {cmds:?}")
    };
    assert_eq!(
        (s.activity_id.as_str(), s.activity_type.as_str()),
        ("1", "charge")
    );
    assert_eq!(s.input, Some(to_payload(&100).unwrap()));
    assert_eq!(s.start_to_close_timeout.unwrap().seconds, 3, "the type's");
    assert_eq!(s.heartbeat_timeout.unwrap().seconds, 1, "the call's");
    assert_eq!(
        s.retry_policy.as_ref().unwrap().maximum_attempts,
        7,
        "the workflow's defaults override the type's"
    );
    h.record(&cmds);
    h.activity_done("1", "ch-1");
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    replays(f, &h).unwrap();
    let result = h.events.iter().find_map(|e| match &e.attributes {
        Some(A::WorkflowExecutionCompleted(c)) => c.result.clone(),
        _ => None,
    });
    let result = from_payload::<String>(result.as_ref()).unwrap();
    assert!(
        result.starts_with("ch-1; activity 'tally': cannot encode its input: key must be a string"),
        "{result}"
    );
}

async fn cancellable(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    let mut act = ctx.activity_by_name::<_, ()>("ship", &(), opts());
    let mut cancelled = ctx.cancelled();
    futures::select! {
        r = act => Ok(r?),
        () = cancelled => Err(WorkflowError::Canceled),
    }
}

#[test]
fn a_cancellation_request_reaches_the_workflow_which_decides() {
    let f = erase(cancellable);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    step(&mut d, &mut h);
    h.push(A::WorkflowExecutionCancelRequested(Default::default()));
    h.wft();
    assert_eq!(
        step(&mut d, &mut h),
        ["RequestCancelActivity(id=1)", "CancelWorkflow"]
    );
    replays(f, &h).unwrap();
}

async fn declined(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    ctx.activity_by_name::<_, ()>("charge", &(), opts()).await?;
    Ok(())
}

#[test]
fn an_activity_failure_fails_the_workflow_with_the_cause() {
    let f = erase(declined);
    let mut d = driver(f);
    let mut h = Hist::start("");
    step(&mut d, &mut h);
    h.activity_failed("1", "card declined");
    h.wft();
    d.apply_history(&h.events).unwrap();
    let cmds = d.activate_live().unwrap();
    match &cmds[0].attributes {
        Some(C::FailWorkflow(f)) => {
            let f = f.failure.as_ref().unwrap();
            assert_eq!(f.cause.as_ref().unwrap().message, "card declined");
        }
        other => panic!("expected FailWorkflow, got {other:?}"),
    }
}

async fn changed(ctx: WorkflowContext, input: String) -> Result<String, WorkflowError> {
    // Was `a` then `b`; now `c` first.
    let a: String = ctx.activity_by_name("c", &input, opts()).await?;
    Ok(a)
}

#[test]
fn an_incompatible_change_is_reported_naming_the_event_and_the_command() {
    let mut d = driver(erase(sequential));
    let mut h = Hist::start("x");
    step(&mut d, &mut h);
    h.activity_done("1", "A");
    h.wft();
    step(&mut d, &mut h);
    let err = replays(erase(changed), &h).unwrap_err().to_string();
    assert!(err.contains("non-determinism"), "{err}");
    assert!(err.contains("history event 5"), "names the event: {err}");
    assert!(err.contains("ScheduleActivity(id=1, type=a)"), "{err}");
    assert!(
        err.contains("ScheduleActivity(id=1, type=c)"),
        "names the command: {err}"
    );
}

async fn patched_v2(ctx: WorkflowContext, input: String) -> Result<String, WorkflowError> {
    let first: String = if ctx.patched("use-c") {
        ctx.activity_by_name("c", &input, opts()).await?
    } else {
        ctx.activity_by_name("a", &input, opts()).await?
    };
    let b: String = ctx.activity_by_name("b", &first, opts()).await?;
    Ok(format!("{first}+{b}"))
}

#[test]
fn the_same_change_behind_patched_replays_old_runs_and_takes_the_new_path_in_new_ones() {
    // An old run, recorded under the old code.
    let mut d = driver(erase(sequential));
    let mut h = Hist::start("x");
    step(&mut d, &mut h);
    h.activity_done("1", "A");
    h.wft();
    step(&mut d, &mut h);
    replays(erase(patched_v2), &h).expect("the patched code replays the old run");

    // A new run takes the new path and records the patch.
    let mut d = driver(erase(patched_v2));
    let mut h = Hist::start("x");
    assert_eq!(
        step(&mut d, &mut h),
        ["RecordMarker(patch)", "ScheduleActivity(id=1, type=c)"]
    );
    h.activity_done("1", "C");
    h.wft();
    step(&mut d, &mut h);
    replays(erase(patched_v2), &h).expect("and replays it");
}

async fn randomness(ctx: WorkflowContext, _: ()) -> Result<(u64, String, u64, i64), WorkflowError> {
    let r = ctx.random();
    let u = ctx.uuid().to_string();
    let side = ctx.side_effect(|| std::process::id() as u64 + 1_000_000);
    ctx.sleep(Duration::from_secs(1)).await;
    let now = ctx
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    Ok((r, u, side, now))
}

#[test]
fn time_randomness_and_side_effects_are_the_same_on_replay() {
    let f = erase(randomness);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert_eq!(
        step(&mut d, &mut h),
        ["RecordMarker(side_effect)", "StartTimer(id=2)"]
    );
    h.timer_fired("2");
    h.wft();
    step(&mut d, &mut h);
    let live = h.events.iter().find_map(|e| match &e.attributes {
        Some(A::WorkflowExecutionCompleted(c)) => c.result.clone(),
        _ => None,
    });
    replays(f.clone(), &h).unwrap();
    // A fresh driver that replays up to the last task produces the same result.
    let mut cut = Hist {
        events: h.events[..h.events.len() - 3].to_vec(),
        ..Default::default()
    };
    cut.time = h.time;
    let mut d = driver(f);
    d.apply_history(&cut.events).unwrap();
    let cmds = d.activate_live().unwrap();
    match &cmds[0].attributes {
        Some(C::CompleteWorkflow(c)) => assert_eq!(c.result, live),
        other => panic!("{other:?}"),
    }
}

async fn panics(_ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    panic!("bug in workflow code")
}

#[test]
fn a_panic_in_workflow_code_fails_the_task_not_the_worker() {
    let mut d = driver(erase(panics));
    let h = Hist::start("");
    d.apply_history(&h.events).unwrap();
    match d.activate_live() {
        Err(ActivationError::Panic(m)) => assert!(m.contains("bug in workflow code")),
        other => panic!("{other:?}"),
    }
}

async fn publishing(ctx: WorkflowContext, input: String) -> Result<String, WorkflowError> {
    ctx.publish("order.placed", &serde_json::json!({ "order": input }));
    let a: String = ctx.activity_by_name("a", &input, opts()).await?;
    ctx.publish("order.completed", &serde_json::json!({ "result": a }));
    Ok(a)
}

async fn publishing_other(ctx: WorkflowContext, input: String) -> Result<String, WorkflowError> {
    ctx.publish("order.accepted", &serde_json::json!({ "order": input }));
    let a: String = ctx.activity_by_name("a", &input, opts()).await?;
    Ok(a)
}

#[test]
fn events_are_published_once_and_replayed_not_republished() {
    let mut d = driver(erase(publishing));
    let mut h = Hist::start("x");
    assert_eq!(
        step(&mut d, &mut h),
        [
            "PublishEvent(order.placed)",
            "ScheduleActivity(id=1, type=a)"
        ]
    );
    h.activity_done("1", "A");
    h.wft();
    assert_eq!(
        step(&mut d, &mut h),
        ["PublishEvent(order.completed)", "CompleteWorkflow"]
    );
    // A replay matches the recorded events: no command is issued twice.
    replays(erase(publishing), &h).expect("replays");
    let published: Vec<String> = h
        .events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(A::EventPublished(p)) => Some(p.event_type.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(published, ["order.placed", "order.completed"]);
    // Publishing something else where history has an event is non-determinism.
    let err = replays(erase(publishing_other), &h)
        .unwrap_err()
        .to_string();
    assert!(err.contains("PublishEvent(order.placed)"), "{err}");
    assert!(err.contains("PublishEvent(order.accepted)"), "{err}");
}

mod children;
mod combinators;
mod updates;

/// A value JSON cannot hold (a map with non-string keys).
#[derive(serde::Deserialize)]
struct Unrecordable(std::collections::HashMap<(u8, u8), u8>);

impl serde::Serialize for Unrecordable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

async fn unrecordable_side_effect(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    let _ = ctx.side_effect(|| Unrecordable([((1, 2), 3)].into_iter().collect()));
    Ok(())
}

async fn unencodable_event(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    ctx.publish(
        "thing.done",
        &Unrecordable([((1, 2), 3)].into_iter().collect()),
    );
    Ok(())
}

#[test]
fn a_side_effect_or_event_that_cannot_be_encoded_fails_the_task_naming_it() {
    for (f, says) in [
        (erase(unrecordable_side_effect), "side_effect: a "),
        (
            erase(unencodable_event),
            "publish thing.done: the body cannot be encoded",
        ),
    ] {
        let mut d = driver(f);
        let h = Hist::start("");
        d.apply_history(&h.events).unwrap();
        match d.activate_live() {
            Err(ActivationError::Panic(msg)) => assert!(msg.contains(says), "{msg}"),
            other => panic!("expected the task to fail, got {other:?}"),
        }
    }
}

/// A run's info comes from its start event: the first run of its chain (this one when the
/// event names none) and the run it continues (none when the event names none).
#[test]
fn a_runs_info_names_its_chain() {
    let started = |first: &str, from: &str| pb::WorkflowExecutionStartedAttributes {
        workflow_type: "t".into(),
        task_queue: "q".into(),
        first_run_id: first.into(),
        continued_from_run_id: from.into(),
        ..Default::default()
    };
    let info = |s| WorkflowInfo::of_run("ns".into(), "wf".into(), "run-2".into(), &s);
    let alone = info(started("", ""));
    assert_eq!(alone.first_run_id, "run-2");
    assert_eq!(alone.continued_from_run_id, None);
    assert_eq!(
        (alone.workflow_type.as_str(), alone.task_queue.as_str()),
        ("t", "q")
    );
    let next = info(started("run-1", "run-1"));
    assert_eq!(next.first_run_id, "run-1");
    assert_eq!(next.continued_from_run_id.as_deref(), Some("run-1"));
}

/// The defaults a context was given are the ones it reports; the original keeps its own.
#[test]
fn a_context_reports_its_activity_defaults() {
    let ctx = WorkflowContext::new(
        Arc::new(Mutex::new(Shared::new(1))),
        WorkflowInfo::of_run(
            "ns".into(),
            "wf".into(),
            "run-1".into(),
            &pb::WorkflowExecutionStartedAttributes::default(),
        ),
    );
    let defaults = ActivityOptions::new(Duration::from_secs(9)).maximum_attempts(4);
    let with = ctx.with_activity_defaults(defaults.clone());
    assert_eq!(with.activity_defaults(), &defaults);
    assert_eq!(ctx.activity_defaults(), &ActivityOptions::default());
    assert_eq!(with.info().run_id, "run-1");
}

fn context(seed: u64) -> WorkflowContext {
    WorkflowContext::new(
        Arc::new(Mutex::new(Shared::new(seed))),
        WorkflowInfo::of_run(
            "ns".into(),
            "wf".into(),
            "run-1".into(),
            &pb::WorkflowExecutionStartedAttributes::default(),
        ),
    )
}

/// Randomness is the seeded sequence: numbers in turn, a UUID made of the next two (version
/// 4), different draws differ.
#[test]
fn random_numbers_and_uuids_are_the_seeded_sequence() {
    let ctx = context(42);
    let mut twin = Shared::new(42);
    let (a, b) = (ctx.random(), ctx.random());
    assert_eq!((a, b), (twin.next_random(), twin.next_random()));
    assert_ne!(a, b);
    let u = ctx.uuid();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&twin.next_random().to_be_bytes());
    bytes[8..].copy_from_slice(&twin.next_random().to_be_bytes());
    assert_eq!(u, uuid::Builder::from_random_bytes(bytes).into_uuid());
    assert_eq!(u.get_version_num(), 4);
    assert_ne!(u, ctx.uuid());
    assert_ne!(context(43).random(), context(42).random());
}

/// `has_signal` says whether a signal of that name waits to be taken.
#[test]
fn has_signal_tells_a_waiting_signal() {
    let ctx = context(1);
    assert!(!ctx.has_signal("go"));
    ctx.shared
        .lock()
        .unwrap()
        .signals
        .insert("go".into(), VecDeque::new());
    assert!(!ctx.has_signal("go"), "an empty queue holds nothing");
    ctx.shared
        .lock()
        .unwrap()
        .signals
        .get_mut("go")
        .unwrap()
        .push_back(None);
    assert!(ctx.has_signal("go"));
    assert!(!ctx.has_signal("stop"));
}

/// Counts `approve` signals in a state its query `seen` answers.
async fn counted(ctx: WorkflowContext, _: ()) -> Result<u32, WorkflowError> {
    let seen = crate::WorkflowState::new(0u32);
    ctx.on_query_by_name("seen", &seen, |n, ()| *n);
    let mut approvals = ctx.signal_by_name::<String>("approve");
    while seen.get() < 2 {
        approvals.next().await.unwrap()?;
        seen.update(|n| *n += 1);
    }
    Ok(seen.get())
}

#[test]
fn a_query_during_a_task_sees_the_last_completed_task_and_changes_nothing() {
    let f = erase(counted);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    h.signal("approve", "alice");
    assert!(step(&mut d, &mut h).is_empty());
    // A second signal arrives with a new workflow task: asked before that task runs, the run
    // answers from the state after the last completed task.
    h.signal("approve", "bob");
    h.wft();
    d.apply_history(&h.events).unwrap();
    let answer = d.query("seen", None).unwrap();
    assert_eq!(from_payload::<u32>(Some(&answer)).unwrap(), 1);
    let unknown = d.query("total", None).unwrap_err();
    assert_eq!(unknown.kind, "UnknownQuery");
    assert!(
        unknown.message.contains("(it answers: seen)"),
        "{}",
        unknown.message
    );
    // The queries issued nothing and changed nothing: the task completes as it would have,
    // and the history replays.
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    replays(f.clone(), &h).unwrap();
    // A closed run answers too.
    let mut closed = driver(f);
    closed.apply_history(&h.events).unwrap();
    assert_eq!(
        from_payload::<u32>(Some(&closed.query("seen", None).unwrap())).unwrap(),
        2
    );
}
