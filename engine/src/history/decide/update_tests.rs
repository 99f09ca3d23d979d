use super::tests::{T0, applied, applied_outcome, complete, lease, nobody, started_run};
use super::*;
use pb::command::Attributes as C;

fn request(id: &str) -> UpdateRequest {
    UpdateRequest {
        update_id: id.into(),
        name: "change_address".into(),
        args: None,
        identity: "client".into(),
    }
}

/// A run that completed its first workflow task and waits: idle.
fn idle_run() -> Run {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    applied(&applied_outcome(
        complete_workflow_task(&run, &token, &[], "w", T0, nobody(T0)).unwrap(),
    ))
}

fn complete_update(id: &str) -> pb::Command {
    pb::Command {
        attributes: Some(C::CompleteUpdate(pb::CompleteUpdateCommand {
            update_id: id.into(),
            result: Some(pb::Payload {
                encoding: "json/plain".into(),
                data: b"1".to_vec(),
            }),
            failure: None,
        })),
    }
}

fn accepted(run: &Run, id: &str) -> Run {
    let d = accept_update(run, &request(id), run.next_event_id - 1, T0, nobody(T0)).unwrap();
    applied(&d.expect("the idle run moved").commit)
}

#[test]
fn an_update_on_the_state_its_validator_saw_is_recorded_and_delivered() {
    let run = idle_run();
    let len = run.next_event_id - 1;
    let d = accept_update(&run, &request("u-1"), len, T0, nobody(T0))
        .unwrap()
        .expect("accepted");
    let c = &d.commit;
    assert_eq!(c.events[0].event_id, len + 1);
    assert!(matches!(
        c.events[0].attributes,
        Some(Attributes::WorkflowUpdateAccepted(ref a)) if a.update_id == "u-1" && !a.validate
    ));
    assert!(c.run.wft.is_some(), "a workflow task runs the handler");
    assert_eq!(
        c.run.state.updates,
        [PendingUpdate {
            update_id: "u-1".into(),
            accepted_event_id: len + 1
        }]
    );
}

#[test]
fn a_run_that_moved_since_the_validator_looked_records_nothing() {
    let run = idle_run();
    let len = run.next_event_id - 1;
    let signalled = applied(
        &signal(&run, "go", None, "t", T0, nobody(T0))
            .unwrap()
            .commit,
    );
    assert!(
        accept_update(&signalled, &request("u-1"), len, T0, nobody(T0))
            .unwrap()
            .is_none()
    );
    // A workflow task outstanding (the signal's): the state may change under the validator.
    let now_len = signalled.next_event_id - 1;
    assert!(
        accept_update(&signalled, &request("u-1"), now_len, T0, nobody(T0))
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_handlers_result_completes_the_update_once() {
    let run = accepted(&idle_run(), "u-1");
    let accepted_at = run.state.updates[0].accepted_event_id;
    let mut run = run;
    let token = lease(&mut run, T0);
    let c = applied_outcome(
        complete_workflow_task(&run, &token, &[complete_update("u-1")], "w", T0, nobody(T0))
            .unwrap(),
    );
    assert!(c.run.state.updates.is_empty());
    assert!(matches!(
        c.events.last().unwrap().attributes,
        Some(Attributes::WorkflowUpdateCompleted(ref u))
            if u.update_id == "u-1" && u.accepted_event_id == accepted_at && u.result.is_some()
    ));
    // Again: no such update in flight.
    let mut run = applied(&c);
    let run2 = applied(
        &signal(&run, "go", None, "t", T0, nobody(T0))
            .unwrap()
            .commit,
    );
    run = run2;
    let token = lease(&mut run, T0);
    match complete_workflow_task(&run, &token, &[complete_update("u-1")], "w", T0, nobody(T0))
        .unwrap()
    {
        WftOutcome::Rejected { error, .. } => assert!(
            error
                .to_string()
                .contains("no accepted update has update_id 'u-1'"),
            "{error}"
        ),
        WftOutcome::Applied(_) => panic!("completed twice"),
    }
}

#[test]
fn in_flight_updates_are_bounded_and_dropped_when_the_run_closes() {
    let mut run = idle_run();
    for i in 0..MAX_UPDATES_IN_FLIGHT {
        run.state.updates.push(PendingUpdate {
            update_id: format!("u-{i}"),
            accepted_event_id: 1,
        });
    }
    let len = run.next_event_id - 1;
    let e = accept_update(&run, &request("one-more"), len, T0, nobody(T0)).unwrap_err();
    assert!(matches!(e, EngineError::Overloaded { .. }), "{e}");
    let mut run = accepted(&idle_run(), "u-1");
    let token = lease(&mut run, T0);
    let c = applied_outcome(
        complete_workflow_task(&run, &token, &[complete()], "w", T0, nobody(T0)).unwrap(),
    );
    assert!(c.closed && c.run.state.updates.is_empty());
    assert!(
        accept_update(&applied(&c), &request("u-2"), 0, T0, nobody(T0)).is_err(),
        "a closed run takes no update"
    );
}

#[test]
fn a_run_started_with_an_update_records_it_for_the_workflow_to_validate() {
    let mut params = StartParams::new(
        Namespace::parse("default").unwrap(),
        WorkflowId::parse("w-1").unwrap(),
        WorkflowType::parse("thing").unwrap(),
        TaskQueue::parse("q").unwrap(),
    );
    params.initial_update = Some(request("u-1"));
    let c = new_run(&params, RunId::new(), T0, nobody(T0)).commit;
    let kinds: Vec<_> = c
        .events
        .iter()
        .map(|e| match e.attributes.as_ref().unwrap() {
            Attributes::WorkflowExecutionStarted(_) => "started",
            Attributes::WorkflowTaskScheduled(_) => "wft",
            Attributes::WorkflowUpdateAccepted(a) if a.validate => "accepted, to validate",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["started", "wft", "accepted, to validate"]);
    assert_eq!(c.run.state.updates[0].accepted_event_id, 3);
}
