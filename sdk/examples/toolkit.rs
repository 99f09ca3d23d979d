//! The workflow developer's toolkit in one program: a subscription that a query reads, an
//! update changes (after its validator), that sets search attributes and that starts a child
//! workflow for each renewal's payment.
//!
//! Start the engine in one terminal (`cargo run --release -- dev`), then:
//! `cargo run -p martix-sdk --example toolkit`

use futures::StreamExt;
use martix_sdk::{
    Activity, ActivityContext, ActivityError, ActivityOptions, ChildWorkflowOptions, Client,
    ListOptions, Query, SearchAttribute, StartOptions, Update, Worker, WorkerOptions, Workflow,
    WorkflowContext, WorkflowError, WorkflowState,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Plan {
    customer: String,
    cents: i64,
    renewals: u32,
}

/// A subscription: renews `renewals` times, each renewal paid by a child workflow.
struct Subscription;
impl Workflow for Subscription {
    const NAME: &'static str = "subscription";
    type Input = Plan;
    type Output = u32;
}

/// One payment, a workflow of its own (its retries, its history).
struct Payment;
impl Workflow for Payment {
    const NAME: &'static str = "payment";
    type Input = i64;
    type Output = String;
}

/// Charges the card.
struct Charge;
impl Activity for Charge {
    const NAME: &'static str = "charge";
    type Input = i64;
    type Output = String;
    fn options() -> ActivityOptions {
        ActivityOptions::new(Duration::from_secs(5))
    }
}

/// What the subscription costs now.
struct Price;
impl Query for Price {
    const NAME: &'static str = "price";
    type Args = ();
    type Output = i64;
}

/// A new price, from the next renewal on: positive, at most twice the current one.
struct Reprice;
impl Update for Reprice {
    const NAME: &'static str = "reprice";
    type Args = i64;
    type Output = i64;
}

async fn subscription(ctx: WorkflowContext, plan: Plan) -> Result<u32, WorkflowError> {
    let price = WorkflowState::new(plan.cents);
    ctx.on_query(Price, &price, |p, ()| *p);
    ctx.on_update(
        Reprice,
        &price,
        |now, new| {
            if *new > 0 && *new <= 2 * now {
                Ok(())
            } else {
                Err(format!("{new} is not a price between 1 and {}", 2 * now))
            }
        },
        |_ctx, price, new| async move {
            price.update(|p| *p = new);
            Ok(new)
        },
    );
    ctx.upsert_search_attributes([("customer", SearchAttribute::keyword(&plan.customer))]);
    let mut go = ctx.signal_by_name::<()>("renew");
    for n in 1..=plan.renewals {
        go.next().await;
        let receipt = ctx
            .child_workflow(Payment, &price.get())
            .with_options(
                ChildWorkflowOptions::default()
                    .workflow_id(format!("{}-payment-{n}", ctx.info().workflow_id)),
            )
            .await?;
        ctx.upsert_search_attributes([("last_receipt", SearchAttribute::keyword(receipt))]);
    }
    Ok(plan.renewals)
}

async fn payment(ctx: WorkflowContext, cents: i64) -> Result<String, WorkflowError> {
    Ok(ctx.activity(Charge, &cents).await?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = "http://127.0.0.1:7233";
    let queue = "toolkit";
    let mut worker = Worker::new(endpoint, WorkerOptions::new(queue))?;
    worker.workflow(Subscription, subscription);
    worker.workflow(Payment, payment);
    worker.activity(Charge, |_: ActivityContext, cents: i64| async move {
        Ok::<_, ActivityError>(format!("receipt for {cents} cents"))
    });
    let stop = CancellationToken::new();
    tokio::spawn(worker.run(stop.clone()));

    let client = Client::connect(endpoint).await?;
    let id = format!("sub-{}", std::process::id());
    let plan = Plan {
        customer: "c42".into(),
        cents: 900,
        renewals: 2,
    };
    let run = client
        .start(Subscription, StartOptions::for_id(&id, queue), &plan)
        .await?;
    run.signal_by_name("renew", &()).await?;
    // The update waits for the run to be idle, then for its validator and its handler.
    let new = loop {
        match run.update(Reprice, &1_200).await {
            Ok(p) => break p,
            Err(e) if e.to_string().contains("has not completed a workflow task") => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    println!(
        "repriced to {new}; the query says {}",
        run.query(Price, &()).await?
    );
    match run.update(Reprice, &99_999).await {
        Err(refused) => println!("refused, nothing recorded: {refused}"),
        Ok(p) => println!("unexpectedly accepted: {p}"),
    }
    run.signal_by_name("renew", &()).await?;
    println!("{} renewals", run.result::<u32>().await?);
    let found = client
        .list_all_workflows(
            &ListOptions::new().query(format!(r#"customer = "c42" AND workflow_id = "{id}""#)),
        )
        .await?;
    println!("found by customer: {}", found.len());
    stop.cancel();
    Ok(())
}
