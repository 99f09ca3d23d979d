//! The order: what a customer asks for (the input of the `order` workflow) and the one check
//! that decides whether it can be accepted at all.
//!
//! [`Order::validate`] bounds every number so that pricing cannot overflow `i64` cents (see
//! `crate::pricing`); the saga and the REST gateway both call it, so an order refused at the
//! edge is refused for the same reason by the saga.

use serde::{Deserialize, Serialize};

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Item {
    /// The stock keeping unit.
    pub sku: String,
    /// How many, 1 to 10 000.
    pub qty: i64,
    /// Price of one, in cents, 0 to 100 000 000.
    pub unit_price_cents: i64,
}

/// Where an order goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Address {
    /// Who receives it.
    #[serde(default)]
    pub name: String,
    /// Street and number.
    #[serde(default)]
    pub line1: String,
    /// City.
    #[serde(default)]
    pub city: String,
    /// ISO country code; the reference shipper does not ship to `ZZ`.
    #[serde(default)]
    pub country: String,
}

/// The input of the `order` workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order's id, also the workflow id of its saga.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// ISO 4217, upper case (`EUR`).
    pub currency: String,
    /// The order's lines, at least one.
    pub items: Vec<Item>,
    /// Where it goes; its country decides the tax rate.
    #[serde(default)]
    pub shipping_address: Address,
    /// A discount code (`WELCOME10`, `SPRING5`); see `crate::pricing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_code: Option<String>,
    /// The authenticated subject that placed the order, set by the order service from the
    /// caller's token (whatever the client sent here is overwritten); `None` when
    /// authentication is off or the order came from a message. The fraud velocity rule
    /// counts orders per `placed_by` when there is one, else per `customer_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_by: Option<String>,
}

impl Order {
    /// Whom the fraud velocity rule counts this order against: the customer as the
    /// authenticated subject that placed it names it (`<subject>/<customer>`), else the
    /// customer. So no caller can make another caller's orders of a customer count (a client
    /// naming a victim's customer id fills only its own count), and a service placing orders
    /// for many customers with one token is held per customer, not as one; a caller that
    /// invents customer ids is bounded by the edge's rate limit per subject.
    pub fn velocity_key(&self) -> String {
        match &self.placed_by {
            Some(by) => format!("{by}/{}", self.customer_id),
            None => self.customer_id.clone(),
        }
    }

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
            && !is_known_code(code)
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
/// The highest unit price of an item, in cents (one million).
pub const MAX_UNIT_PRICE_CENTS: i64 = 100_000_000;

/// Why an order was refused: the field at fault and what is wrong with it. Displays as
/// `{field} {message}` (`currency is not an ISO 4217 code`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidOrder {
    /// The field at fault, as a path (`items[2].qty`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for InvalidOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.field, self.message)
    }
}

impl std::error::Error for InvalidOrder {}

/// Discount codes an order may carry and their rates in basis points (the pricing applies
/// them).
pub const DISCOUNT_CODES: &[(&str, i64)] = &[("WELCOME10", 1_000), ("SPRING5", 500)];

/// The rate of a discount code in basis points, if the code is known (exact, upper case).
pub fn discount_code_bp(code: &str) -> Option<i64> {
    DISCOUNT_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, bp)| *bp)
}

/// Whether `code` is a discount code.
pub fn is_known_code(code: &str) -> bool {
    discount_code_bp(code).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Order {
        Order {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            currency: "EUR".into(),
            items: vec![Item {
                sku: "sku".into(),
                qty: 1,
                unit_price_cents: 100,
            }],
            shipping_address: Address::default(),
            discount_code: None,
            placed_by: None,
        }
    }

    #[test]
    fn the_first_field_at_fault_is_named() {
        assert_eq!(order().validate(), Ok(()));
        let mut o = order();
        o.currency = "eur".into();
        o.items[0].qty = 0;
        let e = o.validate().unwrap_err();
        assert_eq!(e.to_string(), "currency is not an ISO 4217 code");
        o.currency = "EUR".into();
        assert_eq!(
            o.validate().unwrap_err().to_string(),
            "items[0].qty must be 1 to 10000"
        );
    }

    #[test]
    fn an_order_without_placed_by_reads_and_writes_as_before() {
        let before = r#"{"order_id":"o-1","customer_id":"c-1","currency":"EUR","items":[{"sku":"sku","qty":1,"unit_price_cents":100}],"shipping_address":{"name":"","line1":"","city":"","country":""}}"#;
        let o: Order = serde_json::from_str(before).unwrap();
        assert_eq!(o, order());
        assert_eq!(serde_json::to_string(&o).unwrap(), before);
        assert_eq!(o.velocity_key(), "c-1");
        let by = Order {
            placed_by: Some("svc-shop".into()),
            ..order()
        };
        assert_eq!(by.velocity_key(), format!("svc-shop/{}", by.customer_id));
        let json = serde_json::to_value(&by).unwrap();
        assert_eq!(json["placed_by"], "svc-shop");
    }
}
