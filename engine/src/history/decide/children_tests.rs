use super::tests::{T0, applied, applied_outcome, complete, lease, nobody, started_run};
use super::*;
use pb::command::Attributes as C;

fn start_child(id: &str, policy: pb::ParentClosePolicy) -> pb::Command {
    pb::Command {
        attributes: Some(C::StartChildWorkflow(
            pb::StartChildWorkflowExecutionCommand {
                workflow_id: id.into(),
                workflow_type: "refund".into(),
                parent_close_policy: policy as i32,
                input: Some(pb::Payload {
                    encoding: "json/plain".into(),
                    data: b"7".to_vec(),
                }),
                ..Default::default()
            },
        )),
    }
}

fn cancel_child(id: &str) -> pb::Command {
    pb::Command {
        attributes: Some(C::RequestCancelChildWorkflow(
            pb::RequestCancelChildWorkflowCommand {
                workflow_id: id.into(),
            },
        )),
    }
}

/// A parent that started child `c-1` (not yet started by the engine): the run, and the
/// initiated event's id.
fn parent_with_child(policy: pb::ParentClosePolicy) -> (Run, i64) {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    let c = applied_outcome(
        complete_workflow_task(
            &run,
            &token,
            &[start_child("c-1", policy)],
            "w",
            T0,
            nobody(T0),
        )
        .unwrap(),
    );
    let initiated = c.events.last().unwrap().event_id;
    assert!(matches!(
        c.events.last().unwrap().attributes,
        Some(Attributes::StartChildWorkflowExecutionInitiated(_))
    ));
    assert_eq!(
        c.timers,
        [TimerOp::Insert {
            key: child_start_key(initiated),
            fire_at: T0
        }],
        "the engine starts the child when the row comes due: now"
    );
    (applied(&c), initiated)
}

/// `run` with a workflow task to lease (a signal came).
fn poked(run: &Run) -> Run {
    applied(
        &signal(run, "poke", None, "t", T0, nobody(T0))
            .unwrap()
            .commit,
    )
}

#[test]
fn a_started_child_is_recorded_once_and_wakes_the_parent() {
    let (run, initiated) = parent_with_child(pb::ParentClosePolicy::Unspecified);
    let child = &run.state.children[0];
    assert_eq!(
        (child.workflow_id.as_str(), child.run_id.as_str()),
        ("c-1", "")
    );
    assert_eq!(
        child.parent_close_policy,
        pb::ParentClosePolicy::Terminate as i32,
        "unspecified is terminate"
    );
    let key = child_start_key(initiated);
    let child_run = RunId::new();
    let d = child_started(&run, initiated, Ok(child_run), &key, T0, nobody(T0)).unwrap();
    let c = &d.commit;
    assert_eq!(c.fired_timer.as_deref(), Some(key.as_str()));
    assert!(matches!(
        c.events[0].attributes,
        Some(Attributes::ChildWorkflowExecutionStarted(ref s))
            if s.initiated_event_id == initiated
                && s.workflow_execution.as_ref().unwrap().run_id == child_run.to_text()
    ));
    assert!(c.run.wft.is_some(), "a workflow task delivers it");
    let run = applied(c);
    assert_eq!(run.state.children[0].run_id, child_run.to_text());
    assert!(
        child_started(&run, initiated, Ok(RunId::new()), &key, T0, nobody(T0)).is_none(),
        "a start is recorded once"
    );
}

#[test]
fn a_child_that_cannot_start_is_a_failure_event_and_no_longer_pending() {
    let (run, initiated) = parent_with_child(pb::ParentClosePolicy::Terminate);
    let failure = pb::Failure {
        message: "in use".into(),
        r#type: "WorkflowAlreadyRunning".into(),
        ..Default::default()
    };
    let key = child_start_key(initiated);
    let d = child_started(&run, initiated, Err(failure), &key, T0, nobody(T0)).unwrap();
    assert!(matches!(
        d.commit.events[0].attributes,
        Some(Attributes::StartChildWorkflowExecutionFailed(ref f))
            if f.failure.as_ref().unwrap().r#type == "WorkflowAlreadyRunning"
    ));
    assert!(d.commit.run.state.children.is_empty());
}

#[test]
fn a_child_closing_before_its_start_was_recorded_shows_the_start_first() {
    let (run, initiated) = parent_with_child(pb::ParentClosePolicy::Terminate);
    let first = RunId::new();
    let closed = pb::ChildWorkflowExecutionClosedAttributes {
        initiated_event_id: initiated,
        status: pb::WorkflowStatus::Completed as i32,
        ..Default::default()
    };
    let key = child_closed_key(initiated, first);
    let d = child_closed(&run, initiated, first, closed, &key, T0, nobody(T0)).unwrap();
    let kinds: Vec<_> = d
        .commit
        .events
        .iter()
        .map(|e| match e.attributes.as_ref().unwrap() {
            Attributes::ChildWorkflowExecutionStarted(_) => "started",
            Attributes::ChildWorkflowExecutionClosed(_) => "closed",
            Attributes::WorkflowTaskScheduled(_) => "wft",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["started", "wft", "closed"]);
    assert!(d.commit.run.state.children.is_empty());
    let run = applied(&d.commit);
    let late = child_started(
        &run,
        initiated,
        Ok(first),
        &child_start_key(initiated),
        T0,
        nobody(T0),
    );
    assert!(
        late.is_none(),
        "the start row, firing late, records nothing"
    );
}

#[test]
fn closing_terminates_or_cancels_started_children_by_their_policy_and_abandons_the_rest() {
    for (policy, key) in [
        (
            pb::ParentClosePolicy::Terminate,
            Some(PARENT_TERMINATES_KEY),
        ),
        (
            pb::ParentClosePolicy::RequestCancel,
            Some(PARENT_CANCELS_KEY),
        ),
        (pb::ParentClosePolicy::Abandon, None),
    ] {
        let (run, initiated) = parent_with_child(policy);
        let child_run = RunId::new();
        let started = child_started(
            &run,
            initiated,
            Ok(child_run),
            &child_start_key(initiated),
            T0,
            nobody(T0),
        )
        .unwrap();
        let mut run = applied(&started.commit);
        let token = lease(&mut run, T0);
        let c = applied_outcome(
            complete_workflow_task(&run, &token, &[complete()], "w", T0, nobody(T0)).unwrap(),
        );
        let told: Vec<_> = c
            .foreign_timers
            .iter()
            .map(|t| (t.run_id, t.key.as_str()))
            .collect();
        assert_eq!(
            told,
            key.map(|k| (child_run, k)).into_iter().collect::<Vec<_>>(),
            "{policy:?}"
        );
        assert!(c.run.state.children.is_empty());
    }
}

#[test]
fn a_child_not_yet_started_when_the_parent_closes_never_starts() {
    let (run, _) = parent_with_child(pb::ParentClosePolicy::Terminate);
    let mut run = poked(&run);
    let token = lease(&mut run, T0);
    let c = applied_outcome(
        complete_workflow_task(&run, &token, &[complete()], "w", T0, nobody(T0)).unwrap(),
    );
    assert!(c.closed, "the run's rows go, the start row with them");
    assert!(c.foreign_timers.is_empty());
}

#[test]
fn a_child_tells_its_parent_when_its_workflow_ends_not_when_it_continues_as_new() {
    let parent_run = RunId::new();
    let link = pb::ParentExecution {
        workflow_execution: Some(pb::WorkflowExecution {
            workflow_id: "p-1".into(),
            run_id: parent_run.to_text(),
        }),
        initiated_event_id: 5,
        parent_close_policy: pb::ParentClosePolicy::Terminate as i32,
    };
    let mut params = StartParams::new(
        Namespace::parse("default").unwrap(),
        WorkflowId::parse("c-1").unwrap(),
        WorkflowType::parse("refund").unwrap(),
        TaskQueue::parse("q").unwrap(),
    );
    params.parent = Some(link.clone());
    let mut run = applied(&new_run(&params, RunId::new(), T0, nobody(T0)).commit);
    assert_eq!(run.state.parent.as_ref(), Some(&link));
    let token = lease(&mut run, T0);
    let again = pb::Command {
        attributes: Some(C::ContinueAsNew(Default::default())),
    };
    let c = applied_outcome(
        complete_workflow_task(&run, &token, &[again], "w", T0, nobody(T0)).unwrap(),
    );
    assert!(c.foreign_timers.is_empty(), "the chain goes on");
    let next = c.new_run.as_ref().unwrap();
    assert_eq!(next.run.state.parent.as_ref(), Some(&link), "carried on");
    let mut next = applied(next);
    let token = lease(&mut next, T0);
    let c = applied_outcome(
        complete_workflow_task(&next, &token, &[complete()], "w", T0, nobody(T0)).unwrap(),
    );
    assert_eq!(c.foreign_timers.len(), 1);
    assert_eq!(c.foreign_timers[0].run_id, parent_run);
    assert_eq!(
        ChildKey::parse(&c.foreign_timers[0].key),
        Some(ChildKey::Closed(5, next.run_id))
    );
}

#[test]
fn bad_child_commands_fail_the_task_with_why() {
    let cases: [(pb::Command, &str); 4] = [
        (cancel_child(""), "workflow_id must not be empty"),
        (
            start_child("w-1", pb::ParentClosePolicy::Abandon),
            "this workflow's own",
        ),
        (
            start_child("", pb::ParentClosePolicy::Abandon),
            "workflow_id",
        ),
        (
            pb::Command {
                attributes: Some(C::StartChildWorkflow(
                    pb::StartChildWorkflowExecutionCommand {
                        workflow_id: "c-9".into(),
                        workflow_type: "refund".into(),
                        parent_close_policy: 42,
                        ..Default::default()
                    },
                )),
            },
            "parent_close_policy 42 is not a policy",
        ),
    ];
    for (command, why) in cases {
        let mut run = started_run();
        let token = lease(&mut run, T0);
        match complete_workflow_task(&run, &token, &[command], "w", T0, nobody(T0)).unwrap() {
            WftOutcome::Rejected { error, .. } => {
                assert!(error.to_string().contains(why), "{error} lacks {why}")
            }
            WftOutcome::Applied(_) => panic!("applied, expected: {why}"),
        }
    }
    // The same id twice among pending children.
    let (run, _) = parent_with_child(pb::ParentClosePolicy::Terminate);
    let mut run = poked(&run);
    let token = lease(&mut run, T0);
    let o = complete_workflow_task(
        &run,
        &token,
        &[start_child("c-1", pb::ParentClosePolicy::Terminate)],
        "w",
        T0,
        nobody(T0),
    )
    .unwrap();
    assert!(
        matches!(o, WftOutcome::Rejected { ref error, .. } if error.to_string().contains("already used by a pending child"))
    );
}

#[test]
fn cancelling_a_child_that_closed_meanwhile_is_recorded_and_goes_nowhere() {
    let mut run = started_run();
    let token = lease(&mut run, T0);
    let c = applied_outcome(
        complete_workflow_task(&run, &token, &[cancel_child("gone")], "w", T0, nobody(T0)).unwrap(),
    );
    assert!(matches!(
        c.events.last().unwrap().attributes,
        Some(Attributes::ChildWorkflowExecutionCancelRequested(ref a)) if a.initiated_event_id == 0
    ));
    assert!(c.foreign_timers.is_empty());
}

#[test]
fn cancelling_a_started_child_tells_it_and_one_not_started_is_told_when_it_starts() {
    let (run, initiated) = parent_with_child(pb::ParentClosePolicy::Abandon);
    let mut run = poked(&run);
    let token = lease(&mut run, T0);
    let c = applied_outcome(
        complete_workflow_task(&run, &token, &[cancel_child("c-1")], "w", T0, nobody(T0)).unwrap(),
    );
    assert!(
        c.foreign_timers.is_empty(),
        "not started: nothing to tell yet"
    );
    assert!(c.run.state.children[0].cancel_requested);
    let run = applied(&c);
    let child_run = RunId::new();
    let d = child_started(
        &run,
        initiated,
        Ok(child_run),
        &child_start_key(initiated),
        T0,
        nobody(T0),
    )
    .unwrap();
    assert_eq!(
        d.commit
            .foreign_timers
            .iter()
            .map(|t| (t.run_id, t.key.as_str()))
            .collect::<Vec<_>>(),
        [(child_run, PARENT_CANCELS_KEY)]
    );
    let mut run = applied(&d.commit);
    let token = lease(&mut run, T0);
    let c = applied_outcome(
        complete_workflow_task(&run, &token, &[cancel_child("c-1")], "w", T0, nobody(T0)).unwrap(),
    );
    assert_eq!(c.foreign_timers.len(), 1, "a started child is told at once");
}

#[test]
fn child_keys_read_back() {
    let run = RunId::new();
    assert_eq!(
        ChildKey::parse(&child_start_key(7)),
        Some(ChildKey::Start(7))
    );
    assert_eq!(
        ChildKey::parse(&child_closed_key(7, run)),
        Some(ChildKey::Closed(7, run))
    );
    assert_eq!(ChildKey::parse("c:x:start"), None);
    assert_eq!(ChildKey::parse("t:c:1:start"), None);
    assert_eq!(ChildKey::parse("c:7:closed:not-a-uuid"), None);
}
