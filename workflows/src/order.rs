//! The order saga: validate -> reserve inventory -> charge payment -> create shipment ->
//! send confirmation, with compensations.
//!
//! - Payment declined: the inventory is released; the order ends `compensated`.
//! - Shipment impossible: the payment is refunded and the inventory released: `compensated`.
//! - Cancelled by an operator before shipment: refund and release: `compensated` (step
//!   `cancel`). After the shipment is created a cancellation is ignored and the order
//!   completes: the goods are on their way.
//! - Invalid input or no stock: nothing happened, nothing to undo: `failed`.
//! - Refused by the fraud rules of the pricing step (amount limit, too many orders a minute):
//!   nothing was reserved or charged: `rejected`.
//! - Cancelled by signal `cancel` (an inbound `order.cancel_requested` message): as by an
//!   operator.
//! - A notification that keeps failing never undoes an order: it is retried, then recorded as
//!   failed in the outcome.

use martix_order_contract::events::{
    self, InventoryReleased, InventoryReserved, OrderEnded, OrderPlaced, PaymentCharged,
    PaymentDeclined, PaymentRefunded, ShipmentCreated,
};
use martix_order_contract::{
    CANCEL_SIGNAL, Charge, Invoice, NotificationInput, Order, OrderOutcome, StepInput, failures,
    names,
};
use martix_sdk::{ActivityFailure, ActivityOptions, Saga, WorkflowContext, WorkflowError};
use serde_json::json;
use std::time::Duration;

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

/// The order saga, workflow type `order`. Every business step is published as an event (see
/// `martix_order_contract::events` for the types and bodies); the last one is the terminal
/// event.
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
    ctx.publish(events::ORDER_PLACED, &OrderPlaced::from(&order));
    if let Err(why) = order.validate() {
        outcome.status = "failed".into();
        outcome.failed_step = Some("validate".into());
        outcome.cause = Some(why.to_string());
        return finish(&ctx, outcome, &order, None).await;
    }
    let opts = step_options();
    let input = |undo_key: &str| StepInput {
        order: order.clone(),
        undo_key: undo_key.to_owned(),
    };
    let cancelled = || ctx.is_cancel_requested() || ctx.has_signal(CANCEL_SIGNAL);

    let invoice: Invoice = match ctx
        .activity(names::PRICE_ORDER, &input(""), opts.clone())
        .await
    {
        Ok(i) => i,
        Err(f) => {
            let rejected = failures::is_rejection(f.error_type());
            outcome.status = if rejected { "rejected" } else { "failed" }.into();
            outcome.failed_step = Some("validate".into());
            outcome.cause = Some(cause(&f));
            return finish(&ctx, outcome, &order, None).await;
        }
    };
    ctx.publish(events::ORDER_PRICED, &invoice);
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
            return finish(&ctx, outcome, &order, Some(&invoice)).await;
        }
    };
    ctx.publish(
        events::INVENTORY_RESERVED,
        &InventoryReserved {
            reservation: reservation.clone(),
        },
    );
    saga.add_with_event(
        names::RELEASE_INVENTORY,
        &input(&reservation),
        opts.clone(),
        events::INVENTORY_RELEASED,
        &InventoryReleased {
            reservation: reservation.clone(),
        },
    );

    let failed = if cancelled() {
        Some(("cancel", "cancelled before payment".to_owned()))
    } else {
        match ctx
            .activity::<_, Charge>(names::CHARGE_PAYMENT, &input(""), opts.clone())
            .await
        {
            Err(f) => {
                ctx.publish(
                    events::PAYMENT_DECLINED,
                    &PaymentDeclined { reason: cause(&f) },
                );
                Some(("payment", cause(&f)))
            }
            Ok(charge) => {
                ctx.publish(
                    events::PAYMENT_CHARGED,
                    &PaymentCharged {
                        amount_cents: charge.amount_cents,
                        charge: charge.key.clone(),
                    },
                );
                saga.add_with_event(
                    names::REFUND_PAYMENT,
                    &input(&charge.key),
                    opts.clone(),
                    events::PAYMENT_REFUNDED,
                    &PaymentRefunded {
                        amount_cents: charge.amount_cents,
                        charge: charge.key.clone(),
                    },
                );
                if cancelled() {
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
                        Ok(shipment) => {
                            ctx.publish(events::SHIPMENT_CREATED, &ShipmentCreated { shipment });
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
    finish(&ctx, outcome, &order, Some(&invoice)).await
}

/// Sends the confirmation (a notification that keeps failing is recorded, never undoes),
/// then publishes the terminal event.
async fn finish(
    ctx: &WorkflowContext,
    mut outcome: OrderOutcome,
    order: &Order,
    invoice: Option<&Invoice>,
) -> Result<OrderOutcome, WorkflowError> {
    let opts = ActivityOptions::new(Duration::from_secs(10))
        .initial_interval(Duration::from_millis(200))
        .maximum_attempts(5);
    let body = json!({
        "order_id": order.order_id,
        "customer_id": order.customer_id,
        "status": outcome.status,
        "failed_step": outcome.failed_step,
        "total_cents": invoice.map_or(0, |i| i.total_cents),
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
    ctx.publish(outcome.terminal_event(), &OrderEnded::from(&outcome));
    Ok(outcome)
}
