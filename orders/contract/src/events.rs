//! The events the order saga publishes: one constant per event type and one type per body.
//! The saga publishes these types; the read model folds by these constants (reading the
//! bodies leniently, so bodies of older runs still fold); outside consumers get the bodies
//! as JSON objects through the outbox.
//!
//! The bodies are the wire format: field names, and the order of the fields as serialized
//! (alphabetical, as the saga published them when it built them as JSON maps), stay as they
//! are. Amounts are integer cents. In the order a saga may publish them:
//!
//! | type | body |
//! |---|---|
//! | `order.placed` | [`OrderPlaced`] |
//! | `order.priced` | [`Invoice`](crate::Invoice) |
//! | `inventory.reserved` | [`InventoryReserved`] |
//! | `payment.charged` / `payment.declined` | [`PaymentCharged`] / [`PaymentDeclined`] |
//! | `shipment.created` | [`ShipmentCreated`] |
//! | `payment.refunded`, `inventory.released` (compensations) | [`PaymentRefunded`], [`InventoryReleased`] |
//! | `order.needs_attention` (a compensation failed for good; the order waits for an operator, maybe more than once) | [`NeedsAttention`] |
//! | `order.completed`, `order.compensated`, `order.canceled`, `order.failed`, `order.rejected` (terminal, exactly one) | [`OrderEnded`] |

use crate::order::{Address, Item, Order};
use serde::{Deserialize, Serialize, Serializer};

/// The saga started; body [`OrderPlaced`].
pub const ORDER_PLACED: &str = "order.placed";
/// The order was priced; body [`Invoice`](crate::Invoice).
pub const ORDER_PRICED: &str = "order.priced";
/// The order's stock was reserved; body [`InventoryReserved`].
pub const INVENTORY_RESERVED: &str = "inventory.reserved";
/// A reservation was given back (compensation); body [`InventoryReleased`].
pub const INVENTORY_RELEASED: &str = "inventory.released";
/// The customer was charged; body [`PaymentCharged`].
pub const PAYMENT_CHARGED: &str = "payment.charged";
/// The charge failed; body [`PaymentDeclined`].
pub const PAYMENT_DECLINED: &str = "payment.declined";
/// A charge was refunded (compensation); body [`PaymentRefunded`].
pub const PAYMENT_REFUNDED: &str = "payment.refunded";
/// The order was shipped; body [`ShipmentCreated`].
pub const SHIPMENT_CREATED: &str = "shipment.created";
/// A compensation failed for good: the order waits for an operator's decision (retry the
/// compensation, mark it done by hand, or give up as failed); body [`NeedsAttention`].
pub const ORDER_NEEDS_ATTENTION: &str = "order.needs_attention";
/// Terminal: the order completed; body [`OrderEnded`].
pub const ORDER_COMPLETED: &str = "order.completed";
/// Terminal: a step failed and the order was undone; body [`OrderEnded`].
pub const ORDER_COMPENSATED: &str = "order.compensated";
/// Terminal: the order was cancelled before shipment and undone; body [`OrderEnded`].
pub const ORDER_CANCELED: &str = "order.canceled";
/// Terminal: the order failed with nothing to undo (invalid, no stock); body [`OrderEnded`].
pub const ORDER_FAILED: &str = "order.failed";
/// Terminal: the fraud rules refused the order; body [`OrderEnded`].
pub const ORDER_REJECTED: &str = "order.rejected";

/// Body of `order.placed`: the order as placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// ISO 4217 code.
    pub currency: String,
    /// Who ordered.
    pub customer_id: String,
    /// The discount code given, `null` if none.
    pub discount_code: Option<String>,
    /// The order's lines (keys in alphabetical order).
    #[serde(serialize_with = "keys_sorted")]
    pub items: Vec<Item>,
    /// The order's id.
    pub order_id: String,
    /// Where it goes (keys in alphabetical order).
    #[serde(default, serialize_with = "keys_sorted")]
    pub shipping_address: Address,
}

impl From<&Order> for OrderPlaced {
    fn from(o: &Order) -> Self {
        Self {
            currency: o.currency.clone(),
            customer_id: o.customer_id.clone(),
            discount_code: o.discount_code.clone(),
            items: o.items.clone(),
            order_id: o.order_id.clone(),
            shipping_address: o.shipping_address.clone(),
        }
    }
}

/// Body of `inventory.reserved`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReserved {
    /// The reservation's key.
    pub reservation: String,
}

/// Body of `inventory.released`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReleased {
    /// The key of the reservation given back.
    pub reservation: String,
}

/// Body of `payment.charged`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCharged {
    /// What was charged.
    pub amount_cents: i64,
    /// The charge's key.
    pub charge: String,
}

/// Body of `payment.declined`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    /// Why: `{failure type}: {message}`, or the message alone.
    pub reason: String,
}

/// Body of `payment.refunded`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    /// What was refunded: the whole charge.
    pub amount_cents: i64,
    /// The key of the charge refunded.
    pub charge: String,
}

/// Body of `shipment.created`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentCreated {
    /// The shipment's id.
    pub shipment: String,
}

/// Body of `order.needs_attention`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeedsAttention {
    /// The compensations that failed, each `activity type: why`.
    pub failed: Vec<String>,
    /// The compensations that succeeded (activity types): what is already undone.
    pub undone: Vec<String>,
}

/// Body of every terminal event (`order.completed`, `order.compensated`, `order.canceled`,
/// `order.failed`, `order.rejected`): the [`OrderOutcome`] less its order id and
/// compensation failures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEnded {
    /// Why it failed, `null` if it completed.
    pub cause: Option<String>,
    /// Money taken and kept.
    pub charged_cents: i64,
    /// The step that failed, `null` if none did.
    pub failed_step: Option<String>,
    /// `sent` or `failed`.
    pub notification: String,
    /// The same as `cause` (readers of `order.rejected` read this name).
    pub reason: Option<String>,
    /// `completed`, `compensated`, `failed` or `rejected`.
    pub status: String,
}

/// Serializes through a `serde_json::Value`, whose maps keep their keys sorted: the nested
/// objects of `order.placed` keep the bytes they had when the body was built as a JSON map.
fn keys_sorted<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(value)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::OrderOutcome;
    use serde_json::json;

    fn order() -> Order {
        Order {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            currency: "EUR".into(),
            items: vec![Item {
                sku: "sku-1".into(),
                qty: 2,
                unit_price_cents: 1_250,
            }],
            shipping_address: Address {
                name: "Ada".into(),
                line1: "1 Rue".into(),
                city: "Lyon".into(),
                country: "FR".into(),
            },
            discount_code: None,
            placed_by: None,
        }
    }

    /// Each typed body serializes to the very bytes the saga published when it built the body
    /// with `json!` (these `json!` bodies are copied from it).
    #[test]
    fn typed_bodies_keep_the_bytes_of_the_json_bodies() {
        let same = |typed: String, old: serde_json::Value| assert_eq!(typed, old.to_string());
        let o = order();
        for code in [None, Some("SPRING5".to_owned())] {
            let o = Order {
                discount_code: code,
                ..o.clone()
            };
            same(
                serde_json::to_string(&OrderPlaced::from(&o)).unwrap(),
                json!({
                    "order_id": o.order_id,
                    "customer_id": o.customer_id,
                    "currency": o.currency,
                    "items": o.items,
                    "shipping_address": o.shipping_address,
                    "discount_code": o.discount_code,
                }),
            );
        }
        let reservation = "r-1".to_owned();
        same(
            serde_json::to_string(&InventoryReserved {
                reservation: reservation.clone(),
            })
            .unwrap(),
            json!({ "reservation": reservation }),
        );
        same(
            serde_json::to_string(&InventoryReleased {
                reservation: reservation.clone(),
            })
            .unwrap(),
            json!({ "reservation": reservation }),
        );
        let (key, amount) = ("k-1".to_owned(), 2_500_i64);
        same(
            serde_json::to_string(&PaymentCharged {
                amount_cents: amount,
                charge: key.clone(),
            })
            .unwrap(),
            json!({ "charge": key, "amount_cents": amount }),
        );
        same(
            serde_json::to_string(&PaymentRefunded {
                amount_cents: amount,
                charge: key.clone(),
            })
            .unwrap(),
            json!({ "charge": key, "amount_cents": amount }),
        );
        same(
            serde_json::to_string(&PaymentDeclined {
                reason: "Declined: no".into(),
            })
            .unwrap(),
            json!({ "reason": "Declined: no" }),
        );
        same(
            serde_json::to_string(&ShipmentCreated {
                shipment: "s-1".into(),
            })
            .unwrap(),
            json!({ "shipment": "s-1" }),
        );
        for (status, step, cause) in [
            ("completed", None, None),
            (
                "compensated",
                Some("cancel"),
                Some("cancelled before shipment"),
            ),
        ] {
            let outcome = OrderOutcome {
                order_id: "o-1".into(),
                status: status.into(),
                failed_step: step.map(str::to_owned),
                cause: cause.map(str::to_owned),
                charged_cents: 3_000,
                notification: "sent".into(),
                compensation_failures: vec!["refund_payment: down".into()],
            };
            same(
                serde_json::to_string(&OrderEnded::from(&outcome)).unwrap(),
                json!({
                    "status": outcome.status,
                    "failed_step": outcome.failed_step,
                    "cause": outcome.cause,
                    "reason": outcome.cause,
                    "charged_cents": outcome.charged_cents,
                    "notification": outcome.notification,
                }),
            );
        }
    }

    #[test]
    fn bodies_read_back() {
        let placed = OrderPlaced::from(&order());
        let back: OrderPlaced =
            serde_json::from_str(&serde_json::to_string(&placed).unwrap()).unwrap();
        assert_eq!(back, placed);
    }
}
