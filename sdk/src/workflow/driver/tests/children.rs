//! Child workflows in the driver: the command, its start, its close, its failure to start, a
//! cancellation, each live and replayed, and a changed child as non-determinism.

use super::*;
use crate::error::ChildWorkflowError;
use crate::workflow::ChildWorkflowOptions;

impl Hist {
    /// The initiated event of child `id`.
    fn initiated(&self, id: &str) -> i64 {
        self.events
            .iter()
            .find_map(|e| match &e.attributes {
                Some(A::StartChildWorkflowExecutionInitiated(c)) if c.workflow_id == id => {
                    Some(e.event_id)
                }
                _ => None,
            })
            .expect("the child was asked for")
    }

    fn child_started(&mut self, id: &str, run_id: &str) {
        let initiated = self.initiated(id);
        self.push(A::ChildWorkflowExecutionStarted(
            pb::ChildWorkflowExecutionStartedAttributes {
                initiated_event_id: initiated,
                workflow_execution: Some(pb::WorkflowExecution {
                    workflow_id: id.into(),
                    run_id: run_id.into(),
                }),
                workflow_type: "pay".into(),
            },
        ));
    }

    fn child_closed(&mut self, id: &str, status: pb::WorkflowStatus, result: Option<u32>) {
        let initiated = self.initiated(id);
        self.push(A::ChildWorkflowExecutionClosed(
            pb::ChildWorkflowExecutionClosedAttributes {
                initiated_event_id: initiated,
                status: status as i32,
                result: result.map(|r| to_payload(&r).unwrap()),
                failure: result.is_none().then(|| pb::Failure {
                    message: "the child workflow was canceled".into(),
                    r#type: "Canceled".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ));
    }
}

fn completed(h: &Hist) -> String {
    let result = h.events.iter().find_map(|e| match &e.attributes {
        Some(A::WorkflowExecutionCompleted(c)) => c.result.clone(),
        _ => None,
    });
    from_payload(result.as_ref()).expect("the workflow completed")
}

/// Starts a `pay` child with a made-up id, waits for it to run, then for its result.
async fn pays(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let started = ctx
        .child_workflow_by_name::<_, u32>("pay", &7u32, ChildWorkflowOptions::default())
        .start()
        .await?;
    let run = started.run_id().to_owned();
    let out = started.result().await?;
    Ok(format!("{out} from {run}"))
}

#[test]
fn a_child_is_asked_for_started_and_awaited_and_replays() {
    let f = erase(pays);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert_eq!(
        step(&mut d, &mut h),
        ["StartChildWorkflow(id=wf/child-1-1, type=pay)"],
        "the id is the parent's, this run's and the command's"
    );
    h.child_started("wf/child-1-1", "r-7");
    h.wft();
    assert!(step(&mut d, &mut h).is_empty(), "waits for its result");
    h.child_closed("wf/child-1-1", pb::WorkflowStatus::Completed, Some(14));
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    assert_eq!(completed(&h), "14 from r-7");
    replays(f, &h).expect("a replay asks for the same child");
}

#[test]
fn a_start_and_close_in_one_task_resolve_both_futures() {
    let f = erase(pays);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    step(&mut d, &mut h);
    h.child_started("wf/child-1-1", "r-7");
    h.wft();
    h.child_closed("wf/child-1-1", pb::WorkflowStatus::Completed, Some(2));
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    assert_eq!(completed(&h), "2 from r-7");
    replays(f, &h).unwrap();
}

async fn taken(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let child = ctx.child_workflow_by_name::<_, u32>(
        "pay",
        &7u32,
        ChildWorkflowOptions::default().workflow_id("pay-1"),
    );
    match child.await {
        Err(e) if e.is_already_running() => Ok(format!("taken: {}", e.workflow_id())),
        other => Ok(format!("{other:?}")),
    }
}

#[test]
fn a_child_that_cannot_start_fails_its_future_with_the_reason() {
    let f = erase(taken);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert_eq!(
        step(&mut d, &mut h),
        ["StartChildWorkflow(id=pay-1, type=pay)"]
    );
    let initiated = h.initiated("pay-1");
    h.push(A::StartChildWorkflowExecutionFailed(
        pb::StartChildWorkflowExecutionFailedAttributes {
            initiated_event_id: initiated,
            workflow_id: "pay-1".into(),
            workflow_type: "pay".into(),
            failure: Some(pb::Failure {
                message: "in use".into(),
                r#type: "WorkflowAlreadyRunning".into(),
                ..Default::default()
            }),
        },
    ));
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    assert_eq!(completed(&h), "taken: pay-1");
    replays(f, &h).unwrap();
}

async fn cancels(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let mut child = ctx
        .child_workflow_by_name::<_, u32>("pay", &7u32, ChildWorkflowOptions::default())
        .start()
        .await?;
    child.cancel();
    child.cancel();
    match child.result().await {
        Err(ChildWorkflowError::Closed { status, .. }) => Ok(status),
        other => Ok(format!("{other:?}")),
    }
}

#[test]
fn a_child_asked_to_cancel_once_reports_how_it_ended() {
    let f = erase(cancels);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    step(&mut d, &mut h);
    h.child_started("wf/child-1-1", "r-7");
    h.wft();
    assert_eq!(
        step(&mut d, &mut h),
        ["RequestCancelChildWorkflow(id=wf/child-1-1)"],
        "asked once, however often the code asks"
    );
    h.child_closed("wf/child-1-1", pb::WorkflowStatus::Canceled, None);
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    assert_eq!(completed(&h), "CANCELED");
    replays(f, &h).unwrap();
}

async fn pays_another(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let out = ctx
        .child_workflow_by_name::<_, u32>("refund", &7u32, ChildWorkflowOptions::default())
        .await?;
    Ok(out.to_string())
}

#[test]
fn a_child_of_another_type_on_replay_is_nondeterminism() {
    let mut d = driver(erase(pays));
    let mut h = Hist::start("");
    step(&mut d, &mut h);
    let e = replays(erase(pays_another), &h).unwrap_err();
    assert!(
        e.to_string().contains(
            "is StartChildWorkflow(id=wf/child-1-1, type=pay), but the workflow issued \
             StartChildWorkflow(id=wf/child-1-1, type=refund)"
        ),
        "{e}"
    );
}
