//! Updates in the driver: a validator asked on the state, a handler that runs an activity
//! beside the workflow and completes the update, an update sent with a start validated by the
//! workflow itself; each live and replayed.

use super::*;
use crate::workflow::WorkflowState;

impl Hist {
    fn update(&mut self, id: &str, args: i64, validate: bool) {
        self.push(A::WorkflowUpdateAccepted(
            pb::WorkflowUpdateAcceptedAttributes {
                update_id: id.into(),
                update_name: "add".into(),
                args: Some(to_payload(&args).unwrap()),
                identity: "client".into(),
                validate,
            },
        ));
    }

    /// The completion of update `id`: its result, or its failure's type.
    fn update_outcome(&self, id: &str) -> Result<i64, String> {
        self.events
            .iter()
            .find_map(|e| match &e.attributes {
                Some(A::WorkflowUpdateCompleted(c)) if c.update_id == id => {
                    Some(match &c.failure {
                        Some(f) => Err(f.r#type.clone()),
                        None => Ok(from_payload(c.result.as_ref()).unwrap()),
                    })
                }
                _ => None,
            })
            .expect("the update completed")
    }
}

/// Keeps a total; update `add` (positive amounts only) asks activity `audit` about the amount
/// and adds it; signal `done` ends the workflow with the total.
async fn ledger(ctx: WorkflowContext, _: ()) -> Result<i64, WorkflowError> {
    let total = WorkflowState::new(0i64);
    ctx.on_update_by_name(
        "add",
        &total,
        |_, n: &i64| {
            if *n > 0 {
                Ok(())
            } else {
                Err(format!("{n} is not a positive amount"))
            }
        },
        |ctx: WorkflowContext, total: WorkflowState<i64>, n: i64| async move {
            let _: String = ctx.activity_by_name("audit", &n, opts()).await?;
            Ok(total.update(|t| {
                *t += n;
                *t
            }))
        },
    );
    ctx.signal_by_name::<String>("done").next().await;
    Ok(total.get())
}

#[test]
fn a_validator_answers_on_the_state_and_refuses_with_its_reason() {
    let mut d = driver(erase(ledger));
    let mut h = Hist::start("");
    assert!(step(&mut d, &mut h).is_empty());
    let arg = |n: i64| to_payload(&n).unwrap();
    assert!(d.validate_update("add", Some(&arg(3))).is_ok());
    let no = d.validate_update("add", Some(&arg(-3))).unwrap_err();
    assert_eq!(no.kind, "Rejected");
    assert_eq!(no.message, "-3 is not a positive amount");
    let unknown = d.validate_update("remove", Some(&arg(1))).unwrap_err();
    assert_eq!(unknown.kind, "UnknownUpdate");
    assert!(
        unknown.message.contains("(it handles: add)"),
        "{}",
        unknown.message
    );
    let bad = d
        .validate_update("add", Some(&to_payload(&"three").unwrap()))
        .unwrap_err();
    assert_eq!(bad.kind, "InvalidUpdateArgs");
    assert!(step(&mut d, &mut h).is_empty(), "asking issued nothing");
}

#[test]
fn an_accepted_update_runs_its_handler_beside_the_workflow_and_replays() {
    let f = erase(ledger);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert!(step(&mut d, &mut h).is_empty());
    h.update("u-1", 5, false);
    h.wft();
    assert_eq!(
        step(&mut d, &mut h),
        ["ScheduleActivity(id=1, type=audit)"],
        "the handler runs; the workflow still waits for its signal"
    );
    h.update("u-2", 7, false);
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["ScheduleActivity(id=2, type=audit)"]);
    h.activity_done("2", "ok");
    h.activity_done("1", "ok");
    h.wft();
    assert_eq!(
        step(&mut d, &mut h),
        ["CompleteUpdate(id=u-1)", "CompleteUpdate(id=u-2)"],
        "handlers complete in the order they were accepted"
    );
    assert_eq!(h.update_outcome("u-1"), Ok(5));
    assert_eq!(h.update_outcome("u-2"), Ok(12));
    h.signal("done", "");
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteWorkflow"]);
    replays(f, &h).expect("a replay runs the same handlers in the same order");
}

#[test]
fn an_update_sent_with_the_start_is_validated_by_the_workflow_first() {
    let f = erase(ledger);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    h.update("bad", -1, true);
    h.update("good", 2, true);
    assert_eq!(
        step(&mut d, &mut h),
        [
            "CompleteUpdate(id=bad)",
            "ScheduleActivity(id=1, type=audit)"
        ],
        "the refused one completes at once, rejected; the other runs"
    );
    assert_eq!(h.update_outcome("bad"), Err("Rejected".into()));
    h.activity_done("1", "ok");
    h.wft();
    assert_eq!(step(&mut d, &mut h), ["CompleteUpdate(id=good)"]);
    assert_eq!(h.update_outcome("good"), Ok(2));
    replays(f, &h).unwrap();
}

async fn tags(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    ctx.upsert_search_attributes([("customer", crate::SearchAttribute::keyword("c42"))]);
    ctx.sleep(Duration::from_secs(1)).await;
    Ok(())
}

async fn no_tags(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    ctx.sleep(Duration::from_secs(1)).await;
    Ok(())
}

#[test]
fn search_attributes_are_a_command_replay_checks() {
    let mut d = driver(erase(tags));
    let mut h = Hist::start("");
    assert_eq!(
        step(&mut d, &mut h),
        ["UpsertSearchAttributes", "StartTimer(id=1)"]
    );
    replays(erase(tags), &h).unwrap();
    let e = replays(erase(no_tags), &h).unwrap_err();
    assert!(
        e.to_string()
            .contains("is UpsertSearchAttributes, but the workflow issued StartTimer(id=1)"),
        "{e}"
    );
}

/// Waits for activity `ship`, then answers the address an update may have changed.
async fn ships(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let address = WorkflowState::new(String::from("old"));
    ctx.on_update_by_name(
        "move",
        &address,
        |_, _: &String| Ok(()),
        |_ctx: WorkflowContext, address: WorkflowState<String>, to: String| async move {
            address.update(|a| *a = to.clone());
            Ok(to)
        },
    );
    let _: String = ctx.activity_by_name("ship", &(), opts()).await?;
    Ok(address.get())
}

#[test]
fn an_update_accepted_before_an_activitys_result_changes_the_state_the_code_then_reads() {
    let f = erase(ships);
    let mut d = driver(f.clone());
    let mut h = Hist::start("");
    assert_eq!(step(&mut d, &mut h), ["ScheduleActivity(id=1, type=ship)"]);
    // Recorded in this order: the update, then the result; one activation delivers both.
    h.push(A::WorkflowUpdateAccepted(
        pb::WorkflowUpdateAcceptedAttributes {
            update_id: "u-1".into(),
            update_name: "move".into(),
            args: Some(to_payload(&"new").unwrap()),
            identity: "client".into(),
            validate: false,
        },
    ));
    h.activity_done("1", "shipped");
    h.wft();
    assert_eq!(
        step(&mut d, &mut h),
        ["CompleteUpdate(id=u-1)", "CompleteWorkflow"]
    );
    let result = h.events.iter().find_map(|e| match &e.attributes {
        Some(A::WorkflowExecutionCompleted(c)) => c.result.clone(),
        _ => None,
    });
    assert_eq!(from_payload::<String>(result.as_ref()).unwrap(), "new");
    replays(f, &h).unwrap();
}
