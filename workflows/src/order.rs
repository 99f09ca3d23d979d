//! The order saga: validate -> reserve inventory -> charge payment -> create shipment ->
//! send confirmation, with compensations.
//!
//! - Payment declined: the inventory is released; the order ends `compensated`.
//! - Shipment impossible: the payment is refunded and the inventory released: `compensated`.
//! - Cancelled by an operator before shipment: refund and release: `compensated` (step
//!   `cancel`); cancelled before anything was reserved, nothing is reserved or charged. After the shipment is created a cancellation is ignored and the order
//!   completes: the goods are on their way.
//! - Invalid input or no stock: nothing happened, nothing to undo: `failed`.
//! - Refused by the fraud rules of the pricing step (amount limit, too many orders a minute):
//!   nothing was reserved or charged: `rejected`.
//! - Cancelled by signal `cancel` (an inbound `order.cancel_requested` message): as by an
//!   operator.
//! - Update `change_shipping_address` moves the order until its shipment is being created;
//!   update `add_item` adds a line until its stock is being reserved (a line added while the
//!   order was priced has it priced again). After that, their validators refuse them.
//! - A notification that keeps failing never undoes an order: it is retried, then recorded as
//!   failed in the outcome.
//! - A compensation that fails for good (refused, or still failing after 10 attempts): the
//!   order needs attention (`order.needs_attention`) and waits for an operator's decision
//!   (signal `resolve`: retry, done by hand, or fail).

use futures::StreamExt;
use martix_order_contract::events::{
    self, InventoryReleased, InventoryReserved, NeedsAttention, OrderEnded, OrderPlaced,
    PaymentCharged, PaymentDeclined, PaymentRefunded, ShipmentCreated,
};
use martix_order_contract::saga::{
    AddItem, CancelOrder, ChangeShippingAddress, ChargePayment, CreateShipment, OrderStatus,
    PriceOrder, RefundPayment, ReleaseInventory, ReserveInventory, Resolve, SendNotification,
};
use martix_order_contract::{
    Invoice, NotificationInput, Order, OrderOutcome, Resolution, SagaStatus, StepInput, failures,
};
use martix_sdk::{
    Activity, ActivityFailure, CompensationFailure, Saga, SearchAttribute, Signal, WorkflowContext,
    WorkflowError, WorkflowState,
};
use serde_json::json;

fn cause(f: &ActivityFailure) -> String {
    let t = f.error_type();
    if t.is_empty() {
        f.message().to_owned()
    } else {
        format!("{t}: {}", f.message())
    }
}

/// The order saga, workflow type `order` (`martix_order_contract::saga::OrderSaga`). Each
/// step is a typed activity of `martix_order_contract::saga`, with its retry policy. Every
/// business step is published as an event (see `martix_order_contract::events` for the types
/// and bodies); the last one is the terminal event. Query `status`
/// (`martix_order_contract::saga::OrderStatus`) answers where it is.
pub async fn order(ctx: WorkflowContext, order: Order) -> Result<OrderOutcome, WorkflowError> {
    let progress = WorkflowState::new(SagaStatus {
        step: "validate".into(),
        status: "running".into(),
        ..SagaStatus::default()
    });
    ctx.on_query(OrderStatus, &progress, |p, ()| p.clone());
    // The order as it stands: the updates change it, every step reads it.
    let current = WorkflowState::new(order.clone());
    accept_changes(&ctx, &progress, &current);
    let at = |step: &str| progress.update(|p| p.step = step.to_owned());
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
        return finish(&ctx, &progress, outcome, &order, None).await;
    }
    let input = |undo_key: &str| StepInput {
        order: current.get(),
        undo_key: undo_key.to_owned(),
    };
    let cancelled = || ctx.is_cancel_requested() || ctx.has_signal(CancelOrder::NAME);
    // Cancelled before anything was reserved or charged: nothing to undo.
    // The run ends COMPENSATED, as every cancelled order does.
    let cancel_early = |mut outcome: OrderOutcome, before: &str| {
        ctx.mark_compensated();
        outcome.status = "compensated".into();
        outcome.failed_step = Some("cancel".into());
        outcome.cause = Some(format!("cancelled before {before}"));
        outcome
    };
    if cancelled() {
        let outcome = cancel_early(outcome, "pricing");
        return finish(&ctx, &progress, outcome, &current.get(), None).await;
    }

    at("price");
    let invoice = loop {
        let priced = current.get();
        match ctx.activity(PriceOrder, &input("")).await {
            // A line added while the order was priced: price it again.
            Ok(_) if current.read(|o| o.items != priced.items) => continue,
            Ok(i) => break i,
            Err(f) => {
                let rejected = failures::is_rejection(f.error_type());
                outcome.status = if rejected { "rejected" } else { "failed" }.into();
                outcome.failed_step = Some("validate".into());
                outcome.cause = Some(cause(&f));
                return finish(&ctx, &progress, outcome, &current.get(), None).await;
            }
        }
    };
    progress.update(|p| p.total_cents = invoice.total_cents);
    // Operators find orders by customer and amount (`martix workflow list --query`); runs
    // recorded before this was added replay without it.
    if ctx.patched("search-attributes") {
        ctx.upsert_search_attributes([
            ("customer", SearchAttribute::keyword(&order.customer_id)),
            ("total_cents", SearchAttribute::Int(invoice.total_cents)),
        ]);
    }
    ctx.publish(events::ORDER_PRICED, &invoice);
    if cancelled() {
        let outcome = cancel_early(outcome, "reservation");
        return finish(&ctx, &progress, outcome, &current.get(), Some(&invoice)).await;
    }
    let mut saga = Saga::new();
    at("reserve");

    let reservation = match ctx.activity(ReserveInventory, &input("")).await {
        Ok(r) => r,
        Err(f) => {
            outcome.status = "failed".into();
            outcome.failed_step = Some("reserve".into());
            outcome.cause = Some(cause(&f));
            return finish(&ctx, &progress, outcome, &current.get(), Some(&invoice)).await;
        }
    };
    ctx.publish(
        events::INVENTORY_RESERVED,
        &InventoryReserved {
            reservation: reservation.clone(),
        },
    );
    saga.add_with_event(
        ReleaseInventory,
        &input(&reservation),
        events::INVENTORY_RELEASED,
        &InventoryReleased {
            reservation: reservation.clone(),
        },
    );

    let failed = if cancelled() {
        Some(("cancel", "cancelled before payment".to_owned()))
    } else {
        at("payment");
        match ctx.activity(ChargePayment, &input("")).await {
            Err(f) => {
                ctx.publish(
                    events::PAYMENT_DECLINED,
                    &PaymentDeclined { reason: cause(&f) },
                );
                Some(("payment", cause(&f)))
            }
            Ok(charge) => {
                progress.update(|p| p.charged_cents = charge.amount_cents);
                ctx.publish(
                    events::PAYMENT_CHARGED,
                    &PaymentCharged {
                        amount_cents: charge.amount_cents,
                        charge: charge.key.clone(),
                    },
                );
                saga.add_with_event(
                    RefundPayment,
                    &input(&charge.key),
                    events::PAYMENT_REFUNDED,
                    &PaymentRefunded {
                        amount_cents: charge.amount_cents,
                        charge: charge.key.clone(),
                    },
                );
                if cancelled() {
                    Some(("cancel", "cancelled before shipment".to_owned()))
                } else {
                    at("shipment");
                    match ctx.activity(CreateShipment, &input(&reservation)).await {
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
        outcome.failed_step = Some(step.into());
        outcome.cause = Some(why.to_string());
        progress.update(|p| {
            p.step = "compensate".into();
            p.failed_step = outcome.failed_step.clone();
            p.cause = outcome.cause.clone();
        });
        let registered = saga.activity_types();
        let failures = saga.compensate(&ctx).await;
        outcome.status = "compensated".into();
        let refund_failed =
            |f: &[CompensationFailure]| f.iter().any(|c| c.activity_type == RefundPayment::NAME);
        if !refund_failed(&failures) {
            // Refunded, or never charged.
            progress.update(|p| p.charged_cents = 0);
        }
        if !failures.is_empty() {
            until_resolved(&ctx, &progress, &mut outcome, failures, registered).await;
        }
        if outcome.status == "compensated" {
            ctx.mark_compensated();
        }
    }
    finish(&ctx, &progress, outcome, &current.get(), Some(&invoice)).await
}

/// The steps before which the shipping address may change.
const ADDRESS_CHANGES_UNTIL: [&str; 4] = ["validate", "price", "reserve", "payment"];
/// The steps before which a line may be added.
const ITEMS_ADDED_UNTIL: [&str; 2] = ["validate", "price"];

/// Registers the updates that change the order: each validator looks at the step the saga
/// is at and at the order as it would be after the change (`Order::validate`).
fn accept_changes(
    ctx: &WorkflowContext,
    progress: &WorkflowState<SagaStatus>,
    order: &WorkflowState<Order>,
) {
    let too_late = |step: &str, until: &[&str], what: &str| {
        if until.contains(&step) {
            Ok(())
        } else {
            Err(format!("the order is at step '{step}': {what}"))
        }
    };
    let seen = order.clone();
    let changed = order.clone();
    ctx.on_update(
        ChangeShippingAddress,
        progress,
        move |p, address| {
            too_late(
                &p.step,
                &ADDRESS_CHANGES_UNTIL,
                "its shipment is being created, or it is past that",
            )?;
            let mut o = seen.get();
            o.shipping_address = address.clone();
            o.validate().map_err(|e| e.to_string())
        },
        move |_ctx, _progress, address| {
            let order = changed.clone();
            async move {
                order.update(|o| o.shipping_address = address.clone());
                Ok(address)
            }
        },
    );
    let seen = order.clone();
    let changed = order.clone();
    ctx.on_update(
        AddItem,
        progress,
        move |p, item| {
            too_late(
                &p.step,
                &ITEMS_ADDED_UNTIL,
                "its stock is being reserved, or it is past that",
            )?;
            let mut o = seen.get();
            o.items.push(item.clone());
            o.validate().map_err(|e| e.to_string())
        },
        move |_ctx, _progress, item| {
            let order = changed.clone();
            async move {
                Ok(order.update(|o| {
                    o.items.push(item);
                    o.items.clone()
                }))
            }
        },
    );
}

/// A compensation failed for good: the order does not end as if it were undone. It says it
/// needs attention (event `order.needs_attention`, the run's attention note) and waits for an
/// operator's decision (signal `resolve`): `retry` runs the failed compensations again (and
/// waits again if one still fails), `done` records that they were done by hand (the order
/// ends compensated, the failures and the reason in its outcome), `fail` ends it failed.
async fn until_resolved(
    ctx: &WorkflowContext,
    progress: &WorkflowState<SagaStatus>,
    outcome: &mut OrderOutcome,
    mut failed: Vec<CompensationFailure>,
    registered: Vec<String>,
) {
    let mut decisions = ctx.signal(Resolve);
    loop {
        let what: Vec<String> = failed
            .iter()
            .map(|c| format!("{}: {}", c.activity_type, c.failure))
            .collect();
        let undone = registered
            .iter()
            .filter(|t| !failed.iter().any(|f| &f.activity_type == *t))
            .cloned()
            .collect();
        ctx.publish(
            events::ORDER_NEEDS_ATTENTION,
            &NeedsAttention {
                failed: what.clone(),
                undone,
            },
        );
        let attention = format!(
            "compensation failed: {}; decide with `martix order resolve`",
            what.join("; ")
        );
        progress.update(|p| {
            p.step = "resolve".into();
            p.attention = Some(attention.clone());
        });
        ctx.needs_attention(&attention);
        // A decision that is not one (not a decision's shape, an unknown action) is ignored:
        // the order keeps waiting (the signal stays in history for whoever looks).
        let decision = loop {
            match decisions.next().await {
                Some(Ok(d)) if Resolution::ACTIONS.contains(&d.action.as_str()) => break d,
                Some(_) => continue,
                // The signal stream never ends while the run is open.
                None => return,
            }
        };
        ctx.attention_resolved();
        progress.update(|p| {
            p.step = "compensate".into();
            p.attention = None;
        });
        match decision.action.as_str() {
            "retry" => {
                let mut still = Vec::new();
                for f in failed {
                    if let Err(again) = f.retry(ctx).await {
                        still.push(again);
                    }
                }
                if still.is_empty() {
                    return;
                }
                failed = still;
            }
            "done" => {
                outcome.compensation_failures = what
                    .into_iter()
                    .map(|w| format!("{w} (done by hand: {})", decision.reason))
                    .collect();
                return;
            }
            _ => {
                outcome.status = "failed".into();
                outcome.compensation_failures = what;
                outcome.cause = Some(format!(
                    "{}; compensation given up: {}",
                    outcome.cause.as_deref().unwrap_or("failed"),
                    decision.reason
                ));
                return;
            }
        }
    }
}

/// Sends the confirmation (a notification that keeps failing is recorded, never undoes),
/// then publishes the terminal event.
async fn finish(
    ctx: &WorkflowContext,
    progress: &WorkflowState<SagaStatus>,
    mut outcome: OrderOutcome,
    order: &Order,
    invoice: Option<&Invoice>,
) -> Result<OrderOutcome, WorkflowError> {
    let body = json!({
        "order_id": order.order_id,
        "customer_id": order.customer_id,
        "status": outcome.status,
        "failed_step": outcome.failed_step,
        "total_cents": invoice.map_or(0, |i| i.total_cents),
        "currency": order.currency,
    });
    progress.update(|p| p.step = "notify".into());
    let sent = ctx
        .activity(
            SendNotification,
            &NotificationInput {
                order_id: order.order_id.clone(),
                outcome: outcome.status.clone(),
                body,
            },
        )
        .await;
    if sent.is_err() {
        outcome.notification = "failed".into();
    }
    progress.update(|p| {
        p.step = "done".into();
        p.status = outcome.status.clone();
        // Kept and done: the order's; undone (by the saga or by hand): nothing. An order given
        // up while a refund failed keeps what it says was charged.
        match outcome.status.as_str() {
            "completed" => p.charged_cents = outcome.charged_cents,
            "compensated" => p.charged_cents = 0,
            _ => {}
        }
        p.failed_step = outcome.failed_step.clone();
        p.cause = outcome.cause.clone();
    });
    ctx.publish(outcome.terminal_event(), &OrderEnded::from(&outcome));
    Ok(outcome)
}
