//! The order saga's data: what the workflow sends its activities and gets back. Shared by
//! `martix-workflows` (which names these activities) and the adapters here.

use serde::{Deserialize, Serialize};

/// Activity type names of the order saga.
pub mod names {
    /// Price the order and apply the fraud rules (returns the `Invoice`).
    pub const PRICE_ORDER: &str = "price_order";
    /// Reserve the order's stock.
    pub const RESERVE_INVENTORY: &str = "reserve_inventory";
    /// Give a reservation's stock back.
    pub const RELEASE_INVENTORY: &str = "release_inventory";
    /// Charge the customer.
    pub const CHARGE_PAYMENT: &str = "charge_payment";
    /// Refund a charge.
    pub const REFUND_PAYMENT: &str = "refund_payment";
    /// Ship the reserved stock.
    pub const CREATE_SHIPMENT: &str = "create_shipment";
    /// Tell the customer how the order ended.
    pub const SEND_NOTIFICATION: &str = "send_notification";
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Item {
    pub sku: String,
    pub qty: i64,
    pub unit_price_cents: i64,
}

/// Where an order goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Address {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub line1: String,
    #[serde(default)]
    pub city: String,
    /// ISO country code; the reference shipper does not ship to `ZZ`.
    #[serde(default)]
    pub country: String,
}

/// The input of the `order` workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    pub order_id: String,
    pub customer_id: String,
    pub currency: String,
    pub items: Vec<Item>,
    #[serde(default)]
    pub shipping_address: Address,
    /// A discount code (`WELCOME10`, `SPRING5`); see `crate::pricing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_code: Option<String>,
}

impl Order {
    /// The order's value in cents, before discount and tax (what is charged is
    /// `crate::pricing::invoice(order).total_cents`).
    pub fn total_cents(&self) -> i64 {
        self.items.iter().map(|i| i.qty * i.unit_price_cents).sum()
    }

    /// Why the order cannot be accepted, if it cannot: the first field at fault.
    pub fn validate(&self) -> Result<(), InvalidOrder> {
        let bad = |field: String, message: &str| {
            Err(InvalidOrder {
                field,
                message: message.to_owned(),
            })
        };
        let text = |field: &str, value: &str, required: bool| {
            if required && value.is_empty() {
                return bad(field.to_owned(), "must not be empty");
            }
            if value.len() > MAX_TEXT {
                return bad(field.to_owned(), "is longer than 200 bytes");
            }
            if value.chars().any(char::is_control) {
                return bad(field.to_owned(), "must not hold control characters");
            }
            Ok(())
        };
        text("order_id", &self.order_id, true)?;
        text("customer_id", &self.customer_id, true)?;
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return bad("currency".into(), "is not an ISO 4217 code");
        }
        if self.items.is_empty() {
            return bad("items".into(), "an order needs at least one item");
        }
        if self.items.len() > MAX_ITEMS {
            return bad("items".into(), "an order has at most 100 items");
        }
        for (i, item) in self.items.iter().enumerate() {
            text(&format!("items[{i}].sku"), &item.sku, true)?;
            if !(1..=MAX_QTY).contains(&item.qty) {
                return bad(format!("items[{i}].qty"), "must be 1 to 10000");
            }
            if !(0..=MAX_UNIT_PRICE_CENTS).contains(&item.unit_price_cents) {
                return bad(
                    format!("items[{i}].unit_price_cents"),
                    "must be 0 to 100000000 (one million in cents)",
                );
            }
        }
        let a = &self.shipping_address;
        text("shipping_address.name", &a.name, false)?;
        text("shipping_address.line1", &a.line1, false)?;
        text("shipping_address.city", &a.city, false)?;
        text("shipping_address.country", &a.country, false)?;
        if let Some(code) = &self.discount_code
            && !crate::pricing::is_known_code(code)
        {
            return bad("discount_code".into(), "is not a known discount code");
        }
        Ok(())
    }
}

/// Bounds that keep every total well inside `i64` cents.
const MAX_TEXT: usize = 200;
pub(crate) const MAX_ITEMS: usize = 100;
pub(crate) const MAX_QTY: i64 = 10_000;
pub(crate) const MAX_UNIT_PRICE_CENTS: i64 = 100_000_000;

/// Why an order was refused: the field at fault and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct InvalidOrder {
    pub field: String,
    pub message: String,
}

/// Input of every step: the order and the step's idempotency key (stable across retries).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepInput {
    pub order: Order,
    /// For compensations: the key of the step being undone.
    #[serde(default)]
    pub undo_key: String,
}

/// A charge that was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub key: String,
    pub amount_cents: i64,
}

/// A random order for demos, tests and benchmarks: one to three lines over `skus` SKUs named
/// `{prefix}-sku-{n}`, for customer `{prefix}-cust-{i}` (so runs under different prefixes do
/// not share customers for the velocity rule); about 10% of customers are declined
/// (`declined-{prefix}-{i}`), about 5% of addresses unshippable (country `ZZ`) and about 20%
/// of orders carry a discount code.
pub fn random_order(rng: &mut impl rand::Rng, prefix: &str, i: usize, skus: usize) -> Order {
    let items = (0..rng.random_range(1..=3))
        .map(|_| Item {
            sku: format!("{prefix}-sku-{}", rng.random_range(0..skus)),
            qty: rng.random_range(1..=3),
            unit_price_cents: rng.random_range(100..=5_000),
        })
        .collect();
    let declined = rng.random_bool(0.10);
    let unshippable = rng.random_bool(0.05);
    let discount_code = rng.random_bool(0.20).then(|| {
        let codes = crate::pricing::DISCOUNT_CODES;
        codes[rng.random_range(0..codes.len())].0.to_owned()
    });
    Order {
        order_id: format!("{prefix}-order-{i}"),
        customer_id: if declined {
            format!("declined-{prefix}-{i}")
        } else {
            format!("{prefix}-cust-{i}")
        },
        currency: "EUR".into(),
        items,
        shipping_address: Address {
            name: format!("Customer {i}"),
            line1: "1 Demo Street".into(),
            city: "Lyon".into(),
            country: if unshippable {
                "ZZ".into()
            } else {
                "FR".into()
            },
        },
        discount_code,
    }
}
