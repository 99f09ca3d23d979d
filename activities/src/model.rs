//! The order saga's data: what the workflow sends its activities and gets back. Shared by
//! `martix-workflows` (which names these activities) and the adapters here.

use serde::{Deserialize, Serialize};

/// Activity type names of the order saga.
pub mod names {
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub qty: i64,
    pub unit_price_cents: i64,
}

/// Where an order goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub customer_id: String,
    pub currency: String,
    pub items: Vec<Item>,
    #[serde(default)]
    pub shipping_address: Address,
}

impl Order {
    /// The order's value in cents.
    pub fn total_cents(&self) -> i64 {
        self.items.iter().map(|i| i.qty * i.unit_price_cents).sum()
    }

    /// Why the order cannot be accepted, if it cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.order_id.is_empty() || self.order_id.len() > 200 {
            return Err("order_id must be 1 to 200 bytes".into());
        }
        if self.customer_id.is_empty() {
            return Err("customer_id must not be empty".into());
        }
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "currency '{}' is not an ISO 4217 code",
                self.currency
            ));
        }
        if self.items.is_empty() {
            return Err("an order needs at least one item".into());
        }
        for (i, item) in self.items.iter().enumerate() {
            if item.sku.is_empty() {
                return Err(format!("items[{i}].sku must not be empty"));
            }
            if item.qty <= 0 {
                return Err(format!("items[{i}].qty must be positive"));
            }
            if item.unit_price_cents < 0 {
                return Err(format!("items[{i}].unit_price_cents must not be negative"));
            }
        }
        Ok(())
    }
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
/// `{prefix}-sku-{n}`; about 10% of customers are declined (`declined-...`) and about 5% of
/// addresses unshippable (country `ZZ`).
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
    Order {
        order_id: format!("{prefix}-order-{i}"),
        customer_id: if declined {
            format!("declined-{i}")
        } else {
            format!("cust-{i}")
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
    }
}
