//! The replay gate in CI: every history in `tests/histories/` (runs of the order saga on a real
//! engine, exported with `martix workflow export`) replays against the saga's code as it is now.
//! A change that would break orders in flight fails here. How to refresh the corpus:
//! docs/workflows.md, "Versioning".

use martix_order_contract::StepInput;
use martix_order_contract::saga::{PriceOrder, ReserveInventory};
use martix_order_contract::{Order, OrderOutcome};
use martix_sdk::{ReplayError, Replayer, WorkflowContext, WorkflowError};
use std::path::PathBuf;

/// The corpus's files, by name.
fn corpus() -> Vec<(PathBuf, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

#[test]
fn every_recorded_order_replays_against_the_current_saga() {
    let replayer = martix_workflows::replayer();
    let corpus = corpus();
    assert!(corpus.len() >= 10, "a corpus of {} histories", corpus.len());
    let mut outcomes = std::collections::BTreeSet::new();
    for (path, text) in &corpus {
        replayer
            .replay_json(text)
            .unwrap_or_else(|e| panic!("{} no longer replays: {e}", path.display()));
        // Which ways orders end the corpus covers.
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let last = value["events"].as_array().unwrap().last().unwrap().clone();
        outcomes.insert(match &last["workflowExecutionCompleted"] {
            serde_json::Value::Null => "in flight",
            done if done["compensated"] == serde_json::json!(true) => "compensated",
            _ => "completed",
        });
    }
    assert_eq!(
        outcomes.into_iter().collect::<Vec<_>>(),
        ["compensated", "completed", "in flight"],
        "the corpus holds orders that completed, compensated and are in flight"
    );
}

/// The saga as a careless change would leave it: stock reserved before the order is priced.
async fn swapped(ctx: WorkflowContext, order: Order) -> Result<OrderOutcome, WorkflowError> {
    let input = StepInput {
        order: order.clone(),
        undo_key: String::new(),
    };
    ctx.activity(ReserveInventory, &input).await?;
    ctx.activity(PriceOrder, &input).await?;
    martix_workflows::order(ctx, order).await
}

#[test]
fn a_saga_with_two_steps_swapped_is_caught_on_every_order() {
    let mut replayer = Replayer::new();
    replayer.workflow(martix_workflows::OrderSaga, swapped);
    for (path, text) in corpus() {
        match replayer.replay_json(&text) {
            Err(ReplayError::Nondeterminism(e)) => {
                assert!(e.to_string().contains("reserve_inventory"), "{e}")
            }
            other => panic!("{}: the swap went unnoticed: {other:?}", path.display()),
        }
    }
}

/// The saga's `status` query answers from a replay of each recorded run what its outcome says
/// (a closed one) or where it waits (the one in flight), with no engine.
#[test]
fn the_status_query_answers_from_each_recorded_run() {
    use martix_order_contract::saga::OrderStatus;
    use martix_sdk::proto::history_event::Attributes as A;
    let replayer = martix_workflows::replayer();
    let mut in_flight = 0;
    for (path, text) in corpus() {
        let history = martix_sdk::WorkflowHistory::from_json(&text).unwrap();
        let status = replayer
            .query(&history, OrderStatus, &())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let closed = match history.events.last().and_then(|e| e.attributes.as_ref()) {
            Some(A::WorkflowExecutionCompleted(done)) => done.result.clone(),
            _ => None,
        };
        let Some(result) = closed else {
            in_flight += 1;
            assert_eq!(status.status, "running", "{}", path.display());
            assert_ne!(status.step, "done", "{}", path.display());
            continue;
        };
        let outcome: OrderOutcome = martix_sdk::payload::from_payload(Some(&result)).unwrap();
        assert_eq!(status.step, "done", "{}", path.display());
        assert_eq!(status.status, outcome.status, "{}", path.display());
        assert_eq!(
            status.charged_cents,
            outcome.charged_cents,
            "{}",
            path.display()
        );
        assert_eq!(
            status.failed_step,
            outcome.failed_step,
            "{}",
            path.display()
        );
    }
    assert!(in_flight >= 1, "the corpus holds a run in flight");
}
