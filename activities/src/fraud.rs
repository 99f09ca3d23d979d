//! The fraud rules of the saga's first step (`price_order`): whether a priced order may be
//! charged at all. An invoice total above `max_total_cents` is refused (`AmountLimit`), and
//! so is an order beyond `max_orders_per_minute` orders in the minute ending with it of its
//! customer, as the authenticated subject that placed it (`Order::placed_by`) names it when
//! there is one (`TooManyOrders`; counted by the `FraudCheck` adapter under
//! `Order::velocity_key`). Pure; what an order costs is `martix_order_contract::pricing`.

use crate::reference::AdapterError;
use martix_order_contract::{Invoice, failures};

/// Limits of the fraud rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FraudRules {
    /// The largest invoice total accepted, in cents.
    pub max_total_cents: i64,
    /// How many orders one placer (subject, else customer) may place in a minute.
    pub max_orders_per_minute: i64,
}

impl Default for FraudRules {
    /// 10 000.00 per order, 5 orders a minute per placer.
    fn default() -> Self {
        Self {
            max_total_cents: 1_000_000,
            max_orders_per_minute: 5,
        }
    }
}

/// Why the fraud rules refuse an order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Rejection {
    /// The activity failure type: `failures::AMOUNT_LIMIT` or `failures::TOO_MANY_ORDERS`.
    pub kind: &'static str,
    /// What was over which limit.
    pub message: String,
}

impl From<Rejection> for AdapterError {
    fn from(r: Rejection) -> Self {
        AdapterError::Rejected {
            kind: r.kind,
            message: r.message,
        }
    }
}

/// Refuses an invoice whose total is above `rules.max_total_cents` (`AmountLimit`).
pub fn check_amount(rules: &FraudRules, invoice: &Invoice) -> Result<(), Rejection> {
    if invoice.total_cents > rules.max_total_cents {
        return Err(Rejection {
            kind: failures::AMOUNT_LIMIT,
            message: format!(
                "order total {} cents is above the limit of {} cents",
                invoice.total_cents, rules.max_total_cents
            ),
        });
    }
    Ok(())
}

/// Refuses an order that is its placer's `recent`-th in a minute when that is more than
/// `rules.max_orders_per_minute` (`TooManyOrders`).
pub fn check_velocity(rules: &FraudRules, recent: i64) -> Result<(), Rejection> {
    if recent > rules.max_orders_per_minute {
        return Err(Rejection {
            kind: failures::TOO_MANY_ORDERS,
            message: format!(
                "{recent} orders within a minute from whoever placed this one, at most {} allowed",
                rules.max_orders_per_minute
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use martix_order_contract::{Address, Item, Order, invoice};

    /// An order of `subtotal` cents (one line) to `country`, with `code`.
    fn order(subtotal: i64, country: &str, code: Option<&str>) -> Order {
        Order {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            currency: "EUR".into(),
            items: vec![Item {
                sku: "sku".into(),
                qty: 1,
                unit_price_cents: subtotal,
            }],
            shipping_address: Address {
                country: country.into(),
                ..Default::default()
            },
            discount_code: code.map(str::to_owned),
            placed_by: None,
        }
    }

    #[test]
    fn amount_limit() {
        let rules = FraudRules::default();
        assert_eq!(rules.max_total_cents, 1_000_000);
        assert_eq!(rules.max_orders_per_minute, 5);
        let with_total = |total_cents| Invoice {
            total_cents,
            ..invoice(&order(1, "US", None))
        };
        // (total, accepted)
        for (total, ok) in [
            (0, true),
            (999_999, true),
            (1_000_000, true),
            (1_000_001, false),
            (i64::MAX, false),
        ] {
            let r = check_amount(&rules, &with_total(total));
            assert_eq!(r.is_ok(), ok, "{total}");
            if let Err(e) = r {
                assert_eq!(e.kind, "AmountLimit");
            }
        }
        // Through the invoice: 11 111.11 less 10% (1 111.111 -> 1 111.11) is the limit.
        let at_limit = invoice(&order(1_111_111, "US", None));
        assert_eq!(at_limit.total_cents, 1_000_000);
        assert!(check_amount(&rules, &at_limit).is_ok());
        let above = invoice(&order(1_111_112, "US", None));
        assert_eq!(above.total_cents, 1_000_001);
        assert_eq!(
            check_amount(&rules, &above).unwrap_err().kind,
            "AmountLimit"
        );
        let rules = FraudRules {
            max_total_cents: 100,
            ..rules
        };
        let e = check_amount(&rules, &invoice(&order(100, "FR", None))).unwrap_err();
        assert_eq!(e.kind, "AmountLimit");
        assert!(e.message.contains("120 cents"), "{}", e.message);
    }

    #[test]
    fn velocity() {
        let rules = FraudRules::default();
        for (recent, ok) in [(1, true), (5, true), (6, false), (100, false)] {
            let r = check_velocity(&rules, recent);
            assert_eq!(r.is_ok(), ok, "{recent}");
            if let Err(e) = r {
                assert_eq!(e.kind, "TooManyOrders");
            }
        }
    }
}
