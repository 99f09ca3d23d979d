//! The order saga: validate -> reserve inventory -> charge payment -> create shipment ->
//! send confirmation, with compensations.
//!
//! - Payment declined: the inventory is released; the order ends `compensated`.
//! - Shipment impossible: the payment is refunded and the inventory released: `compensated`.
//! - Cancelled by an operator before shipment: refund and release: `compensated` (step
//!   `cancel`). After the shipment is created a cancellation is ignored and the order
//!   completes: the goods are on their way.
//! - Invalid input or no stock: nothing happened, nothing to undo: `failed`.
//! - A notification that keeps failing never undoes an order: it is retried, then recorded as
//!   failed in the outcome.

use martix_activities::NotificationInput;
use martix_activities::model::{Charge, Order, StepInput, names};
use martix_sdk::{ActivityFailure, ActivityOptions, Saga, WorkflowContext, WorkflowError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How an order ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderOutcome {
    pub order_id: String,
    /// `completed`, `compensated` or `failed`.
    pub status: String,
    /// The step that failed (`validate`, `reserve`, `payment`, `shipment`, `cancel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Money taken and kept: the order's total if it completed, else 0.
    pub charged_cents: i64,
    /// `sent` or `failed`.
    pub notification: String,
    /// Compensations that failed after all their retries (reported, never dropped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensation_failures: Vec<String>,
}

/// Each step may take 10 s per attempt (an attempt lost with a crashed worker is retried after
/// that), retried from 200 ms doubling to 10 s, without limit for outages; business rejections
/// are non-retryable and end the step at once.
fn step_options() -> ActivityOptions {
    ActivityOptions::new(Duration::from_secs(10))
        .initial_interval(Duration::from_millis(200))
        .maximum_interval(Duration::from_secs(10))
}

fn cause(f: &ActivityFailure) -> String {
    let t = f.error_type();
    if t.is_empty() {
        f.failure.message.clone()
    } else {
        format!("{t}: {}", f.failure.message)
    }
}

/// The order saga, workflow type `order`.
pub async fn order(ctx: WorkflowContext, order: Order) -> Result<OrderOutcome, WorkflowError> {
    let mut outcome = OrderOutcome {
        order_id: order.order_id.clone(),
        status: "completed".into(),
        failed_step: None,
        cause: None,
        charged_cents: 0,
        notification: "sent".into(),
        compensation_failures: Vec::new(),
    };
    if let Err(why) = order.validate() {
        outcome.status = "failed".into();
        outcome.failed_step = Some("validate".into());
        outcome.cause = Some(why.to_string());
        return notify(&ctx, outcome, &order).await;
    }
    let opts = step_options();
    let input = |undo_key: &str| StepInput {
        order: order.clone(),
        undo_key: undo_key.to_owned(),
    };
    let mut saga = Saga::new();

    let reservation: String = match ctx
        .activity(names::RESERVE_INVENTORY, &input(""), opts.clone())
        .await
    {
        Ok(r) => r,
        Err(f) => {
            outcome.status = "failed".into();
            outcome.failed_step = Some("reserve".into());
            outcome.cause = Some(cause(&f));
            return notify(&ctx, outcome, &order).await;
        }
    };
    saga.add(names::RELEASE_INVENTORY, &input(&reservation), opts.clone());

    let failed = if ctx.is_cancel_requested() {
        Some(("cancel", "cancelled before payment".to_owned()))
    } else {
        match ctx
            .activity::<_, Charge>(names::CHARGE_PAYMENT, &input(""), opts.clone())
            .await
        {
            Err(f) => Some(("payment", cause(&f))),
            Ok(charge) => {
                saga.add(names::REFUND_PAYMENT, &input(&charge.key), opts.clone());
                if ctx.is_cancel_requested() {
                    Some(("cancel", "cancelled before shipment".to_owned()))
                } else {
                    match ctx
                        .activity::<_, String>(
                            names::CREATE_SHIPMENT,
                            &input(&reservation),
                            opts.clone(),
                        )
                        .await
                    {
                        Err(f) => Some(("shipment", cause(&f))),
                        Ok(_) => {
                            outcome.charged_cents = charge.amount_cents;
                            None
                        }
                    }
                }
            }
        }
    };
    if let Some((step, why)) = failed {
        ctx.mark_compensated();
        outcome.status = "compensated".into();
        outcome.failed_step = Some(step.into());
        outcome.cause = Some(why.to_string());
        outcome.compensation_failures = saga
            .compensate(&ctx)
            .await
            .into_iter()
            .map(|c| format!("{}: {}", c.activity_type, c.failure))
            .collect();
    }
    notify(&ctx, outcome, &order).await
}

/// Sends the confirmation; a notification that keeps failing is recorded, never undoes.
async fn notify(
    ctx: &WorkflowContext,
    mut outcome: OrderOutcome,
    order: &Order,
) -> Result<OrderOutcome, WorkflowError> {
    let opts = ActivityOptions::new(Duration::from_secs(10))
        .initial_interval(Duration::from_millis(200))
        .maximum_attempts(5);
    let body = serde_json::json!({
        "order_id": order.order_id,
        "customer_id": order.customer_id,
        "status": outcome.status,
        "failed_step": outcome.failed_step,
        "total_cents": order.total_cents(),
        "currency": order.currency,
    });
    let sent = ctx
        .activity::<_, ()>(
            names::SEND_NOTIFICATION,
            &NotificationInput {
                order_id: order.order_id.clone(),
                outcome: outcome.status.clone(),
                body,
            },
            opts,
        )
        .await;
    if sent.is_err() {
        outcome.notification = "failed".into();
    }
    Ok(outcome)
}
