//! The saga's steps as the saga and its activities both see them: the activity type names,
//! what each activity takes and gives back, and the failure types that end an order without
//! retrying. The saga schedules by these names and the worker registers by them, so a
//! renamed step is one edit here.

use crate::order::Order;
use serde::{Deserialize, Serialize};

/// Activity type names of the order saga.
pub mod names {
    /// Price the order and apply the fraud rules (takes a `StepInput`, returns the `Invoice`).
    pub const PRICE_ORDER: &str = "price_order";
    /// Reserve the order's stock (returns the reservation key).
    pub const RESERVE_INVENTORY: &str = "reserve_inventory";
    /// Give a reservation's stock back (`undo_key`: the reservation).
    pub const RELEASE_INVENTORY: &str = "release_inventory";
    /// Charge the customer (returns the `Charge`).
    pub const CHARGE_PAYMENT: &str = "charge_payment";
    /// Refund a charge (`undo_key`: the charge's key).
    pub const REFUND_PAYMENT: &str = "refund_payment";
    /// Ship the reserved stock (`undo_key`: the reservation; returns the shipment id).
    pub const CREATE_SHIPMENT: &str = "create_shipment";
    /// Tell the customer how the order ended (takes a `NotificationInput`).
    pub const SEND_NOTIFICATION: &str = "send_notification";
}

/// Activity failure types the saga tells apart; each is non-retryable.
pub mod failures {
    /// `price_order`: the order fails `Order::validate`; the order ends `failed`.
    pub const INVALID_ORDER: &str = "InvalidOrder";
    /// `price_order`: the invoice total is above the fraud limit; the order ends `rejected`.
    pub const AMOUNT_LIMIT: &str = "AmountLimit";
    /// `price_order`: the customer placed too many orders in a minute; the order ends
    /// `rejected`.
    pub const TOO_MANY_ORDERS: &str = "TooManyOrders";
    /// `price_order`: an item's unit price or the order's currency differs from the
    /// catalogue's; the order ends `rejected`.
    pub const PRICE_MISMATCH: &str = "PriceMismatch";
    /// `price_order`: with a closed catalogue, an item's SKU is not in it; the order ends
    /// `rejected`.
    pub const UNKNOWN_SKU: &str = "UnknownSku";

    /// Whether a failure of this type rejects the order (the fraud rules or the catalogue
    /// said no) rather than fails it.
    pub fn is_rejection(error_type: &str) -> bool {
        [AMOUNT_LIMIT, TOO_MANY_ORDERS, PRICE_MISMATCH, UNKNOWN_SKU].contains(&error_type)
    }
}

/// Input of every step but the notification: the order and, for a compensation, the key of
/// the step being undone. The step's own idempotency key comes from the engine (stable
/// across retries), not from here.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepInput {
    /// The order the step is for.
    pub order: Order,
    /// For compensations: the key of the step being undone.
    #[serde(default)]
    pub undo_key: String,
}

/// A charge that was made: what `charge_payment` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// The charge's key (what a refund names).
    pub key: String,
    /// What was charged, in cents.
    pub amount_cents: i64,
}

/// Input of `send_notification`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NotificationInput {
    /// The order the notification is about.
    pub order_id: String,
    /// How it ended (`completed`, `compensated`, `failed`, `rejected`); the message's
    /// routing.
    pub outcome: String,
    /// The message sent as is.
    pub body: serde_json::Value,
}
