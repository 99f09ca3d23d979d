//! What a change carries besides its events: the run's history size, the ids of delivered
//! events, timer rows, published events and their outbox rows, and what a start writes.

use super::tests::{T0, applied, applied_outcome, lease, nobody, started_run};
use super::*;
use pb::command::Attributes as C;

fn encoded(events: &[pb::HistoryEvent]) -> i64 {
    events.iter().map(|e| e.encoded_len() as i64).sum()
}

fn start_timer(id: &str, ms: i64) -> pb::Command {
    pb::Command {
        attributes: Some(C::StartTimer(pb::StartTimerCommand {
            timer_id: id.into(),
            start_to_fire_timeout: Some(ms_to_duration(ms)),
        })),
    }
}

fn publish(event_type: &str, body: &str) -> pb::Command {
    pb::Command {
        attributes: Some(C::PublishEvent(pb::PublishEventCommand {
            event_type: event_type.into(),
            body: Some(pb::Payload {
                encoding: "json/plain".into(),
                data: body.as_bytes().to_vec(),
            }),
        })),
    }
}

fn params() -> StartParams {
    StartParams::new(
        Namespace::parse("default").unwrap(),
        WorkflowId::parse("w-1").unwrap(),
        WorkflowType::parse("thing").unwrap(),
        TaskQueue::parse("q").unwrap(),
    )
}

/// The run's history size is the encoded size of every event it holds, however they came:
/// a start, a completion, events buffered during a task and delivered after it.
#[test]
fn the_history_size_is_the_sum_of_the_events_sizes() {
    let params = params();
    let first = new_run(&params, RunId::new(), T0, nobody(T0)).commit;
    let mut all = first.events.clone();
    assert_eq!(first.run.state.history_bytes, encoded(&all));
    let mut run = first.run;
    let token = lease(&mut run, T0);
    let c = signal(&run, "go", None, "ops", T0 + 1, nobody(T0 + 1))
        .unwrap()
        .commit;
    let run = applied(&c);
    let c = applied_outcome(
        complete_workflow_task(
            &run,
            &token,
            &[start_timer("t1", 5_000)],
            "w1",
            T0 + 2,
            nobody(T0 + 2),
        )
        .unwrap(),
    );
    all.extend(c.events.iter().cloned());
    assert!(all.len() >= 6, "{}", all.len());
    assert_eq!(c.run.state.history_bytes, encoded(&all));
    // Buffered events get the next ids in order, after the task's own events.
    let ids: Vec<i64> = all.iter().map(|e| e.event_id).collect();
    let dense: Vec<i64> = (1..=all.len() as i64).collect();
    assert_eq!(ids, dense);
    assert_eq!(c.run.next_event_id, all.len() as i64 + 1);
}

/// A started timer is a pending timer and a row due when it fires; a cancelled one deletes
/// its row; the row's key names the timer.
#[test]
fn timers_write_their_rows_by_key() {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    let c = applied_outcome(
        complete_workflow_task(
            &run,
            &token,
            &[start_timer("nap", 3_500)],
            "w1",
            T0,
            nobody(T0),
        )
        .unwrap(),
    );
    assert_eq!(
        c.timers,
        [TimerOp::Insert {
            key: "t:nap".into(),
            fire_at: T0 + 3_500
        }]
    );
    assert_eq!(c.run.state.timers[0].fire_at, T0 + 3_500);
    let fired = fire_timer(&applied(&c), "t:nap", T0 + 3_500, false, nobody(T0 + 3_500))
        .expect("the timer fires")
        .commit;
    assert_eq!(fired.fired_timer.as_deref(), Some("t:nap"));
    assert!(fired.run.state.timers.is_empty());
}

/// Published events are numbered from 1 without gaps, go to the outbox with the same id as
/// their history event (`<run id>/<event id>`), and the count carries on in the checkpoint.
#[test]
fn published_events_are_numbered_and_written_to_the_outbox() {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    let c = applied_outcome(
        complete_workflow_task(
            &run,
            &token,
            &[
                publish("thing.began", r#"{"n":1}"#),
                publish("thing.went", "{}"),
            ],
            "w1",
            T0,
            nobody(T0),
        )
        .unwrap(),
    );
    assert_eq!(c.run.state.events_published, 2);
    let published: Vec<(i64, &pb::EventPublishedAttributes)> = c
        .events
        .iter()
        .filter_map(|e| match e.attributes.as_ref()? {
            Attributes::EventPublished(p) => Some((e.event_id, p)),
            _ => None,
        })
        .collect();
    assert_eq!(published.len(), 2);
    assert_eq!(c.outbox.len(), 2);
    for (i, ((history_id, p), o)) in published.iter().zip(&c.outbox).enumerate() {
        let sequence = i as i64 + 1;
        assert_eq!((p.sequence, o.sequence), (sequence, sequence));
        let id = format!("{}/{history_id}", c.run.run_id.to_text());
        assert_eq!((&p.event_id, &o.event_id), (&id, &id));
        assert_eq!(o.event_type, p.event_type);
        assert_eq!(o.subject, "w-1");
        assert_eq!(o.occurred_at, T0);
    }
    assert_eq!(c.outbox[0].body, r#"{"n":1}"#);
}

/// A start writes the task timeout it names (else the default) into the checkpoint and the
/// started event, carries the chain's trace and event count, and sets a timer row for each
/// timeout it names, none for those it does not.
#[test]
fn a_start_writes_its_timeouts_and_carries_its_chain() {
    let c = new_run(&params(), RunId::new(), T0, nobody(T0)).commit;
    assert_eq!(
        c.run.state.workflow_task_timeout_ms,
        DEFAULT_WORKFLOW_TASK_TIMEOUT_MS
    );
    assert!(c.timers.is_empty(), "no timeout, no timer: {:?}", c.timers);
    assert_eq!(c.run.state.execution_deadline, 0);
    let Some(Attributes::WorkflowExecutionStarted(started)) = &c.events[0].attributes else {
        panic!()
    };
    assert_eq!(started.workflow_run_timeout, None);
    assert_eq!(started.workflow_execution_timeout, None);

    let mut p = params();
    p.task_timeout_ms = 5_000;
    p.run_timeout_ms = 60_000;
    p.execution_timeout_ms = 90_000;
    p.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
    p.events_published = 7;
    let c = new_run(&p, RunId::new(), T0, nobody(T0)).commit;
    assert_eq!(c.run.state.workflow_task_timeout_ms, 5_000);
    assert_eq!(c.run.state.traceparent, p.traceparent);
    assert_eq!(c.run.state.events_published, 7);
    let Some(Attributes::WorkflowExecutionStarted(started)) = &c.events[0].attributes else {
        panic!()
    };
    assert_eq!(started.workflow_task_timeout, Some(ms_to_duration(5_000)));
    assert_eq!(started.workflow_run_timeout, Some(ms_to_duration(60_000)));
    assert_eq!(
        started.workflow_execution_timeout,
        Some(ms_to_duration(90_000))
    );
    let Some(Attributes::WorkflowTaskScheduled(scheduled)) = &c.events[1].attributes else {
        panic!()
    };
    assert_eq!(
        scheduled.start_to_close_timeout,
        Some(ms_to_duration(5_000))
    );
    assert_eq!(
        c.timers,
        [
            TimerOp::Insert {
                key: RUN_TIMEOUT_KEY.into(),
                fire_at: T0 + 60_000
            },
            TimerOp::Insert {
                key: EXECUTION_TIMEOUT_KEY.into(),
                fire_at: T0 + 90_000
            }
        ]
    );
    assert_eq!(c.run.state.execution_deadline, T0 + 90_000);

    // The next run of a chain keeps the chain's deadline, whatever time it starts at.
    let mut next = params();
    next.execution_deadline = Some(T0 + 90_000);
    next.execution_timeout_ms = 90_000;
    let c = new_run(&next, RunId::new(), T0 + 50_000, nobody(T0 + 50_000)).commit;
    assert_eq!(c.run.state.execution_deadline, T0 + 90_000);
    assert_eq!(
        c.timers,
        [TimerOp::Insert {
            key: EXECUTION_TIMEOUT_KEY.into(),
            fire_at: T0 + 90_000
        }]
    );
}

/// A token's lease is at most 64 bytes, as the engine makes them.
#[test]
fn a_token_lease_of_64_bytes_decodes_and_65_does_not() {
    let mut run = started_run();
    let mut token = lease(&mut run, T0);
    token.lease_id = "a".repeat(64);
    assert!(TaskToken::decode_from(&token.encode_to_vec()).is_ok());
    token.lease_id = "a".repeat(65);
    assert!(TaskToken::decode_from(&token.encode_to_vec()).is_err());
}

#[test]
fn the_default_activity_timeout_is_ten_minutes() {
    assert_eq!(DEFAULT_ACTIVITY_TIMEOUT_MS, 600_000);
}

fn cancel_timer(id: &str) -> pb::Command {
    pb::Command {
        attributes: Some(C::CancelTimer(pb::CancelTimerCommand {
            timer_id: id.into(),
        })),
    }
}

fn schedule_on(id: &str) -> pb::Command {
    pb::Command {
        attributes: Some(C::ScheduleActivity(pb::ScheduleActivityTaskCommand {
            activity_id: id.into(),
            activity_type: "call".into(),
            task_queue: "q".into(),
            start_to_close_timeout: Some(ms_to_duration(30_000)),
            retry_policy: Some(pb::RetryPolicy {
                maximum_attempts: 4,
                ..Default::default()
            }),
            ..Default::default()
        })),
    }
}

fn marker(name: &str, reason: &str) -> pb::Command {
    let mut details = HashMap::new();
    details.insert(
        "reason".to_owned(),
        pb::Payload {
            encoding: "json/plain".into(),
            data: serde_json::to_vec(reason).unwrap(),
        },
    );
    pb::Command {
        attributes: Some(C::RecordMarker(pb::RecordMarkerCommand {
            marker_name: name.into(),
            details,
        })),
    }
}

/// A run with history: two activities (one completed), three timers (one fired, one
/// cancelled), an attention marker and another marker, a cancel request, three completed
/// workflow tasks; all events, in order.
fn lived() -> (Run, Vec<pb::HistoryEvent>) {
    let mut p = params();
    p.task_timeout_ms = 7_000;
    p.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
    let first = new_run(&p, RunId::new(), T0, nobody(T0)).commit;
    let mut history = first.events.clone();
    let mut run = first.run;
    let step = |c: RunCommit, history: &mut Vec<pb::HistoryEvent>| {
        history.extend(c.events.iter().cloned());
        applied(&c)
    };
    let token = lease(&mut run, T0);
    let c = applied_outcome(
        complete_workflow_task(
            &run,
            &token,
            &[
                schedule_on("a"),
                schedule_on("b"),
                start_timer("t1", 5_000),
                start_timer("t2", 9_000),
                start_timer("t3", 100),
                marker("attention", "call the bank"),
                marker("patch", "x"),
            ],
            "w",
            T0,
            nobody(T0),
        )
        .unwrap(),
    );
    run = step(c, &mut history);
    let a = run.state.activities[0].scheduled_event_id;
    let token = TaskToken {
        namespace: "default".into(),
        run_id: run.run_id.to_text(),
        kind: TOKEN_KIND_ACTIVITY,
        scheduled_event_id: a,
        attempt: 1,
        lease_id: "l1".into(),
        history_len: 0,
    };
    let c = complete_activity(&run, &token, None, "w", T0 + 100, nobody(T0 + 100))
        .unwrap()
        .commit;
    run = step(c, &mut history);
    let c = fire_timer(&run, "t:t3", T0 + 150, false, nobody(T0 + 150))
        .unwrap()
        .commit;
    run = step(c, &mut history);
    let token = lease(&mut run, T0 + 200);
    let c = applied_outcome(
        complete_workflow_task(
            &run,
            &token,
            &[cancel_timer("t2")],
            "w",
            T0 + 200,
            nobody(T0 + 200),
        )
        .unwrap(),
    );
    run = step(c, &mut history);
    let c = request_cancel(&run, "enough", "ops", T0 + 250, nobody(T0 + 250))
        .unwrap()
        .unwrap()
        .commit;
    run = step(c, &mut history);
    let token = lease(&mut run, T0 + 300);
    let c = applied_outcome(
        complete_workflow_task(&run, &token, &[], "w", T0 + 300, nobody(T0 + 300)).unwrap(),
    );
    run = step(c, &mut history);
    (run, history)
}

fn completed_ids(history: &[pb::HistoryEvent]) -> Vec<i64> {
    history
        .iter()
        .filter(|e| matches!(e.attributes, Some(Attributes::WorkflowTaskCompleted(_))))
        .map(|e| e.event_id)
        .collect()
}

#[test]
fn a_reset_point_is_the_last_the_first_or_a_named_completed_task() {
    let (_, history) = lived();
    let completed = completed_ids(&history);
    assert_eq!(completed.len(), 3, "{completed:?}");
    assert_eq!(reset_point(&history, 0).unwrap(), completed[2]);
    assert_eq!(reset_point(&history, -1).unwrap(), completed[0]);
    assert_eq!(reset_point(&history, completed[1]).unwrap(), completed[1]);
    let not_one = reset_point(&history, completed[1] + 1).unwrap_err();
    assert!(
        not_one.to_string().contains(&format!("{completed:?}")),
        "{not_one}"
    );
    let none = reset_point(&history[..2], 0).unwrap_err();
    assert!(
        none.to_string().contains("no completed workflow task"),
        "{none}"
    );
}

/// A reset to the last completed task: the new run holds the history before that task, then
/// the task failed (cause RESET) and a new one; its checkpoint is rebuilt from the copy (the
/// activity and timer still pending get fresh rows, the completed and cancelled ones none, the
/// cancel request stays), it carries the chain, acts for the old run's effects, and the old
/// run is terminated naming it.
#[test]
fn a_reset_copies_history_to_its_point_and_rebuilds_what_was_pending() {
    let (run, history) = lived();
    let point = reset_point(&history, 0).unwrap();
    let (decided, new_id) = reset(
        &run,
        &history,
        point,
        "bad deploy",
        "ops",
        T0 + 400,
        nobody(T0 + 400),
    )
    .unwrap();
    let old = decided.commit;
    assert!(old.closed);
    assert_eq!(old.run.status, pb::WorkflowStatus::Terminated);
    let next = *old
        .new_run
        .expect("the new run comes with the old one's end");
    assert_eq!(next.run.run_id, new_id);
    let cut = history
        .iter()
        .find_map(|e| match &e.attributes {
            Some(Attributes::WorkflowTaskCompleted(c)) if e.event_id == point => {
                Some(c.started_event_id)
            }
            _ => None,
        })
        .unwrap();
    let prefix: Vec<pb::HistoryEvent> = history
        .iter()
        .filter(|e| e.event_id < cut)
        .cloned()
        .collect();
    assert_eq!(next.events[..prefix.len()], prefix[..]);
    let rest: Vec<&str> = next.events[prefix.len()..]
        .iter()
        .map(|e| match e.attributes.as_ref().unwrap() {
            Attributes::WorkflowTaskStarted(_) => "wft_started",
            Attributes::WorkflowTaskFailed(f) => {
                assert_eq!(f.cause, pb::WorkflowTaskFailedCause::Reset as i32);
                let failure = f.failure.as_ref().unwrap();
                assert_eq!(failure.r#type, "Reset");
                assert_eq!(
                    failure.message,
                    format!("reset from run {} at event {point}: bad deploy", run.run_id)
                );
                "wft_failed"
            }
            Attributes::WorkflowTaskScheduled(_) => "wft_scheduled",
            _ => "other",
        })
        .collect();
    assert_eq!(rest, ["wft_started", "wft_failed", "wft_scheduled"]);
    let ids: Vec<i64> = next.events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    let s = &next.run.state;
    assert_eq!(s.history_bytes, encoded(&next.events));
    assert_eq!(s.effects_run_id, run.run_id.to_text());
    assert_eq!(s.workflow_task_timeout_ms, 7_000);
    assert_eq!(s.first_run_id, run.state.first_run_id);
    assert_eq!(s.traceparent, run.state.traceparent);
    assert_eq!(s.execution_deadline, run.state.execution_deadline);
    assert!(s.cancel_requested);
    assert_eq!(s.attention, "call the bank");
    assert_eq!(s.attention_since, T0);
    let pending: Vec<&str> = s
        .activities
        .iter()
        .map(|a| a.activity_id.as_str())
        .collect();
    assert_eq!(pending, ["b"]);
    let b = &s.activities[0];
    assert_eq!(b.start_to_close_ms, 30_000);
    assert_eq!(
        (b.activity_type.as_str(), b.task_queue.as_str()),
        ("call", "q")
    );
    assert_eq!((b.attempt, b.scheduled_time), (1, T0));
    assert_eq!(b.retry_policy.as_ref().map(|p| p.maximum_attempts), Some(4));
    let timers: Vec<&str> = s.timers.iter().map(|t| t.timer_id.as_str()).collect();
    assert_eq!(timers, ["t1"]);
    assert_eq!(
        next.timers,
        [TimerOp::Insert {
            key: "t:t1".into(),
            fire_at: T0 + 5_000
        }]
    );
    let inserted: Vec<(i64, Millis)> = next
        .tasks
        .iter()
        .filter_map(|op| match op {
            TaskOp::Insert(t) => Some((t.scheduled_event_id, t.visible_at)),
            _ => None,
        })
        .collect();
    assert_eq!(inserted, [(s.activities[0].scheduled_event_id, T0 + 400)]);
    let TaskOp::Insert(task) = &next.tasks[0] else {
        panic!()
    };
    assert_eq!(task.activity.idempotency_run_id, run.run_id.to_text());

    // A reset of the reset copy still acts for the first run's effects.
    let copy = applied(&next);
    let mut all = next.events.clone();
    all.sort_by_key(|e| e.event_id);
    let again = reset(
        &copy,
        &all,
        reset_point(&all, -1).unwrap(),
        "again",
        "ops",
        T0 + 500,
        nobody(T0 + 500),
    )
    .unwrap()
    .0
    .commit;
    let again = again.new_run.unwrap();
    assert_eq!(again.run.state.effects_run_id, run.run_id.to_text());
}

#[test]
fn a_reset_point_that_is_not_a_completed_task_is_refused() {
    let (run, history) = lived();
    assert!(reset(&run, &history, 3, "x", "ops", T0, nobody(T0)).is_err());
}

/// A task token names its namespace: one edited to name another finds nothing.
#[test]
fn a_token_of_another_namespace_finds_nothing() {
    let mut run = started_run();
    let mut token = lease(&mut run, T0);
    assert!(same_namespace(&run, &token).is_ok());
    token.namespace = "other".into();
    assert!(matches!(
        complete_workflow_task(&run, &token, &[], "w", T0, nobody(T0)),
        Err(EngineError::NotFound(_))
    ));
}

#[test]
fn a_commands_own_name_is_1_to_255_bytes() {
    assert!(check_id("timer_id", "t").is_ok());
    assert!(check_id("timer_id", &"t".repeat(255)).is_ok());
    assert_eq!(
        check_id("timer_id", "").unwrap_err(),
        "timer_id must not be empty"
    );
    assert_eq!(
        check_id("timer_id", &"t".repeat(256)).unwrap_err(),
        "timer_id is 256 bytes, at most 255"
    );
}

#[test]
fn a_reporter_given_a_workflow_task_was_given_something() {
    let mut to = ToReporter::default();
    assert!(to.is_empty());
    to.workflow_task = Some(Lease::new(T0, 1_000));
    assert!(!to.is_empty());
}
