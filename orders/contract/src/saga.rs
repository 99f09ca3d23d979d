//! The saga's steps, its workflow and its signals as typed SDK definitions (feature `sdk`):
//! the names, inputs and outputs of [`crate::names`], [`crate::StepInput`] and the rest, bound
//! together so that the saga schedules, the worker registers and clients start and signal
//! them checked at compile time, and with each step's retry policy.

use crate::{
    CANCEL_SIGNAL, Charge, Invoice, NotificationInput, ORDER_WORKFLOW_TYPE, Order, OrderOutcome,
    RESOLVE_SIGNAL, Resolution, SagaStatus, StepInput, names,
};
use martix_sdk::{Activity, ActivityOptions, Query, Signal, Update, Workflow};
use std::time::Duration;

/// Each step may take 10 s per attempt (an attempt lost with a crashed worker is retried after
/// that), retried from 200 ms doubling to 10 s, without limit for outages; business rejections
/// are non-retryable and end the step at once.
fn step_options() -> ActivityOptions {
    ActivityOptions::new(Duration::from_secs(10))
        .initial_interval(Duration::from_millis(200))
        .maximum_interval(Duration::from_secs(10))
}

/// A compensation is retried like a step, but not forever: after 10 attempts (about a minute)
/// an operator decides (the saga waits for [`Resolve`]).
fn compensation_options() -> ActivityOptions {
    step_options().maximum_attempts(10)
}

macro_rules! step {
    ($(#[$doc:meta])* $ty:ident, $name:expr, $input:ty => $output:ty, $options:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $ty;

        impl Activity for $ty {
            const NAME: &'static str = $name;
            type Input = $input;
            type Output = $output;
            fn options() -> ActivityOptions {
                $options
            }
        }
    };
}

step!(
    /// Prices the order and applies the fraud rules.
    PriceOrder, names::PRICE_ORDER, StepInput => Invoice, step_options()
);
step!(
    /// Reserves the order's stock; returns the reservation key.
    ReserveInventory, names::RESERVE_INVENTORY, StepInput => String, step_options()
);
step!(
    /// Gives a reservation's stock back (`undo_key`: the reservation).
    ReleaseInventory, names::RELEASE_INVENTORY, StepInput => (), compensation_options()
);
step!(
    /// Charges the customer.
    ChargePayment, names::CHARGE_PAYMENT, StepInput => Charge, step_options()
);
step!(
    /// Refunds a charge (`undo_key`: the charge's key).
    RefundPayment, names::REFUND_PAYMENT, StepInput => (), compensation_options()
);
step!(
    /// Ships the reserved stock (`undo_key`: the reservation); returns the shipment id.
    CreateShipment, names::CREATE_SHIPMENT, StepInput => String, step_options()
);
step!(
    /// Tells the customer how the order ended: 10 s an attempt, from 200 ms, 5 attempts (a
    /// notification that keeps failing is recorded, never undoes the order).
    SendNotification, names::SEND_NOTIFICATION, NotificationInput => (),
    ActivityOptions::new(Duration::from_secs(10))
        .initial_interval(Duration::from_millis(200))
        .maximum_attempts(5)
);

/// The order saga, workflow type [`ORDER_WORKFLOW_TYPE`].
#[derive(Clone, Copy, Debug)]
pub struct OrderSaga;

impl Workflow for OrderSaga {
    const NAME: &'static str = ORDER_WORKFLOW_TYPE;
    type Input = Order;
    type Output = OrderOutcome;
}

/// The saga's `status` query: the step it is at, the amounts, what failed
/// ([`SagaStatus`]). Answered by the saga on a worker, for open and closed orders alike.
#[derive(Clone, Copy, Debug)]
pub struct OrderStatus;

impl Query for OrderStatus {
    const NAME: &'static str = "status";
    type Args = ();
    type Output = SagaStatus;
}

/// The saga's `change_shipping_address` update: where the order goes, until its shipment is
/// being created (then the saga's validator refuses it and nothing is recorded). Answers the
/// address the order now goes to.
#[derive(Clone, Copy, Debug)]
pub struct ChangeShippingAddress;

impl Update for ChangeShippingAddress {
    const NAME: &'static str = "change_shipping_address";
    type Args = crate::Address;
    type Output = crate::Address;
}

/// The saga's `add_item` update: a line added to the order before its stock is reserved (the
/// saga prices the order again if the line came while it was being priced). Answers the
/// order's lines.
#[derive(Clone, Copy, Debug)]
pub struct AddItem;

impl Update for AddItem {
    const NAME: &'static str = "add_item";
    type Args = crate::Item;
    type Output = Vec<crate::Item>;
}

/// The nightly reconciliation of payments against orders
/// ([`crate::reconcile::Reconciliation`]), workflow type `reconcile_payments`: run it on a
/// schedule (`martix schedule create nightly-reconcile --cron '0 2 * * *' --type
/// reconcile_payments ...`).
#[derive(Clone, Copy, Debug)]
pub struct ReconcilePaymentsWorkflow;

impl Workflow for ReconcilePaymentsWorkflow {
    const NAME: &'static str = "reconcile_payments";
    type Input = crate::reconcile::ReconcileWindow;
    type Output = crate::reconcile::Reconciliation;
}

/// The reconciliation's one activity: the payment gateway's ledger against the shipments.
#[derive(Clone, Copy, Debug)]
pub struct ReconcilePayments;

impl Activity for ReconcilePayments {
    const NAME: &'static str = "reconcile_payments";
    type Input = crate::reconcile::ReconcileWindow;
    type Output = crate::reconcile::Reconciliation;
    fn options() -> ActivityOptions {
        ActivityOptions::new(Duration::from_secs(300)).maximum_attempts(5)
    }
}

/// Cancels an order like a cancel request does ([`CANCEL_SIGNAL`]); what it carries is not
/// read.
#[derive(Clone, Copy, Debug)]
pub struct CancelOrder;

impl Signal for CancelOrder {
    const NAME: &'static str = CANCEL_SIGNAL;
    type Payload = serde_json::Value;
}

/// An operator's decision on an order that needs attention ([`RESOLVE_SIGNAL`]).
#[derive(Clone, Copy, Debug)]
pub struct Resolve;

impl Signal for Resolve {
    const NAME: &'static str = RESOLVE_SIGNAL;
    type Payload = Resolution;
}
