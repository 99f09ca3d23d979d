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
