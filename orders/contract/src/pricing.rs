//! Pricing: what an order costs. Pure code on integer cents, no floats, no I/O; the
//! `price_order` activity computes the invoice with it and the saga publishes it as
//! `order.priced`. Whether an order may be charged at all (the fraud rules) is the
//! activity's business, not this module's.
//!
//! The invoice of an order:
//!
//! - `subtotal` = sum of `qty * unit_price_cents` over the items;
//! - `discount` = the single best (largest) of: volume 5% when the subtotal is at least
//!   500.00 (50 000 cents), volume 10% from 2 000.00 (200 000 cents), and the order's
//!   discount code (`WELCOME10` 10%, `SPRING5` 5%). Discounts never add up; on a tie the
//!   volume discount wins (the code is then not recorded as used);
//! - `tax` = the destination country's rate (`shipping_address.country`, see
//!   [`TAX_RATES_BP`], case-insensitive; any other country 0) of `subtotal - discount`;
//! - `total` = `subtotal - discount + tax`.
//!
//! Rates are in basis points (1 bp = 0.01%, 10 000 bp = 100%).
//!
//! **Rounding** — one rule for every percentage amount (discounts and tax alike): the exact
//! amount `amount * bp / 10 000` is rounded to the nearest cent, halves away from zero (so
//! half up for the non-negative amounts of an order), computed in `i64` as
//! `(amount * bp + 5_000) / 10_000` ([`percentage`]). Each amount is rounded once, and the
//! total is the sum of the rounded amounts, so `subtotal - discount + tax = total` holds to
//! the cent. No overflow: `Order::validate` bounds a subtotal by 100 items x 10 000 x
//! 100 000 000 cents = 10^14 cents, and `10^14 * 10 000 + 5 000 < i64::MAX` (checked at
//! compile time below); orders are validated before they are priced.

pub use crate::order::{DISCOUNT_CODES, MAX_UNIT_PRICE_CENTS, discount_code_bp, is_known_code};
use crate::order::{MAX_ITEMS, MAX_QTY, Order};
use serde::{Deserialize, Serialize};

/// 100%, in basis points.
pub const FULL_BP: i64 = 10_000;

/// The largest subtotal a valid order can have, in cents.
const MAX_SUBTOTAL_CENTS: i64 = MAX_ITEMS as i64 * MAX_QTY * MAX_UNIT_PRICE_CENTS;

// `percentage` of any valid subtotal at any rate up to 100% stays inside `i64`.
const _: () = assert!(MAX_SUBTOTAL_CENTS <= (i64::MAX - FULL_BP / 2) / FULL_BP);

/// Volume discounts: (minimum subtotal in cents, rate in bp, label), best first.
pub const VOLUME_DISCOUNTS: &[(i64, i64, &str)] =
    &[(200_000, 1_000, "volume 10%"), (50_000, 500, "volume 5%")];

/// Tax rates by destination country (ISO 3166 alpha-2), in basis points. Any other country: 0.
pub const TAX_RATES_BP: &[(&str, i64)] = &[
    ("FR", 2_000),
    ("DE", 1_900),
    ("IT", 2_200),
    ("ES", 2_100),
    ("NL", 2_100),
    ("BE", 2_100),
    ("GB", 2_000),
    ("CH", 810),
    ("US", 0),
];

/// What an order costs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// Sum of `qty * unit_price_cents`.
    pub subtotal_cents: i64,
    /// The discount taken off the subtotal.
    pub discount_cents: i64,
    /// The discount rule applied (`volume 10%`, `code WELCOME10`), if any.
    pub discount: Option<String>,
    /// The destination country the tax rate is for, upper case.
    pub country: String,
    /// Tax rate in basis points (2000 = 20%).
    pub tax_rate_bp: i64,
    /// The tax on `subtotal - discount`.
    pub tax_cents: i64,
    /// `subtotal - discount + tax`: what is charged.
    pub total_cents: i64,
}

/// `bp` basis points of `amount` cents, rounded to the nearest cent, halves away from zero.
pub fn percentage(amount_cents: i64, bp: i64) -> i64 {
    let exact = amount_cents * bp;
    if exact >= 0 {
        (exact + FULL_BP / 2) / FULL_BP
    } else {
        -((-exact + FULL_BP / 2) / FULL_BP)
    }
}

/// An amount in cents as people read it: `1234, "EUR"` is `12.34 EUR`.
pub fn money(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", abs / 100, abs % 100)
}

/// The tax rate of a destination country in basis points (0 if not in [`TAX_RATES_BP`]).
pub fn tax_rate_bp(country: &str) -> i64 {
    TAX_RATES_BP
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(country))
        .map_or(0, |(_, bp)| *bp)
}

/// The invoice of an order (see the module doc for the rules). An unknown discount code is
/// ignored here; `Order::validate` refuses it.
pub fn invoice(order: &Order) -> Invoice {
    let subtotal = order.total_cents();
    let volume = VOLUME_DISCOUNTS
        .iter()
        .find(|(min, _, _)| subtotal >= *min)
        .map(|(_, bp, label)| (percentage(subtotal, *bp), (*label).to_owned()));
    let code = order.discount_code.as_deref().and_then(|c| {
        discount_code_bp(c).map(|bp| (percentage(subtotal, bp), format!("code {c}")))
    });
    // The largest discount; on a tie the first candidate (volume) stays.
    let best =
        [volume, code]
            .into_iter()
            .flatten()
            .fold(None::<(i64, String)>, |best, c| match best {
                Some(b) if b.0 >= c.0 => Some(b),
                _ => Some(c),
            });
    let (discount_cents, discount) = match best {
        Some((cents, label)) => (cents, Some(label)),
        None => (0, None),
    };
    let country = order.shipping_address.country.to_ascii_uppercase();
    let tax_rate_bp = tax_rate_bp(&country);
    let taxed = subtotal - discount_cents;
    let tax_cents = percentage(taxed, tax_rate_bp);
    Invoice {
        subtotal_cents: subtotal,
        discount_cents,
        discount,
        country,
        tax_rate_bp,
        tax_cents,
        total_cents: taxed + tax_cents,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{Address, Item};

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
    fn money_reads_as_units_and_cents() {
        assert_eq!(money(1_500, "EUR"), "15.00 EUR");
        assert_eq!(money(5, "USD"), "0.05 USD");
        assert_eq!(money(-1_234, "EUR"), "-12.34 EUR");
        assert_eq!(money(-5, "EUR"), "-0.05 EUR");
    }

    #[test]
    fn percentage_rounds_halves_away_from_zero() {
        // (amount, bp, expected): exact halves, just below and just above.
        let cases = [
            (0, 2_000, 0),
            (4_999, 1, 0),   // 0.4999
            (5_000, 1, 1),   // 0.5 exactly
            (5_001, 1, 1),   // 0.5001
            (14_999, 1, 1),  // 1.4999
            (15_000, 1, 2),  // 1.5 exactly
            (10, 500, 1),    // 5% of 0.10 = 0.005 -> 0.01
            (30, 500, 2),    // 0.015 -> 0.02
            (5, 1_000, 1),   // 10% of 0.05 = 0.005 -> 0.01
            (15, 1_000, 2),  // 0.015 -> 0.02
            (50, 2_100, 11), // 21%: 10.5 -> 11
            (49, 2_100, 10), // 10.29
            (51, 2_100, 11), // 10.71
            (50, 1_900, 10), // 19%: 9.5 -> 10
            (25, 2_200, 6),  // 22%: 5.5 -> 6
            (500, 810, 41),  // 8.1%: 40.5 -> 41
            (499, 810, 40),  // 40.419
            (12_345, 2_000, 2_469),
            (-50, 2_100, -11), // away from zero
            (-49, 2_100, -10),
            (MAX_SUBTOTAL_CENTS, FULL_BP, MAX_SUBTOTAL_CENTS),
        ];
        for (amount, bp, want) in cases {
            assert_eq!(percentage(amount, bp), want, "{bp} bp of {amount}");
        }
    }

    #[test]
    fn discounts() {
        // (subtotal, code, expected discount, expected rule)
        let cases: &[(i64, Option<&str>, i64, Option<&str>)] = &[
            (10_000, None, 0, None),
            (0, None, 0, None),
            (49_999, None, 0, None),
            (50_000, None, 2_500, Some("volume 5%")),
            (50_001, None, 2_500, Some("volume 5%")), // 2500.05
            (50_010, None, 2_501, Some("volume 5%")), // 2500.5 -> 2501
            (199_999, None, 10_000, Some("volume 5%")), // 9999.95
            (200_000, None, 20_000, Some("volume 10%")),
            (200_001, None, 20_000, Some("volume 10%")),
            (10_000, Some("WELCOME10"), 1_000, Some("code WELCOME10")),
            (10_000, Some("SPRING5"), 500, Some("code SPRING5")),
            (10, Some("SPRING5"), 1, Some("code SPRING5")), // 0.5 -> 1
            (9, Some("SPRING5"), 0, Some("code SPRING5")),  // 0.45 -> 0
            (10_000, Some("NOPE"), 0, None),                // unknown: ignored
            (10_000, Some("welcome10"), 0, None),           // codes are exact
            // Best of volume and code.
            (50_000, Some("WELCOME10"), 5_000, Some("code WELCOME10")),
            (50_000, Some("SPRING5"), 2_500, Some("volume 5%")), // tie: volume
            (200_000, Some("SPRING5"), 20_000, Some("volume 10%")),
            (200_000, Some("WELCOME10"), 20_000, Some("volume 10%")), // tie: volume
            (199_999, Some("WELCOME10"), 20_000, Some("code WELCOME10")),
        ];
        for (subtotal, code, cents, rule) in cases {
            let inv = invoice(&order(*subtotal, "US", *code));
            assert_eq!(
                (inv.discount_cents, inv.discount.as_deref()),
                (*cents, *rule),
                "subtotal {subtotal} code {code:?}"
            );
            assert_eq!(inv.subtotal_cents, *subtotal);
            assert_eq!(inv.total_cents, subtotal - cents, "no tax in the US");
        }
    }

    #[test]
    fn tax_per_country() {
        let cases = [
            ("FR", 2_000, 2_000),
            ("DE", 1_900, 1_900),
            ("IT", 2_200, 2_200),
            ("ES", 2_100, 2_100),
            ("NL", 2_100, 2_100),
            ("BE", 2_100, 2_100),
            ("GB", 2_000, 2_000),
            ("CH", 810, 810),
            ("US", 0, 0),
            ("ZZ", 0, 0),
            ("JP", 0, 0),
            ("", 0, 0),
            ("fr", 2_000, 2_000), // case-insensitive
        ];
        for (country, bp, tax) in cases {
            let inv = invoice(&order(10_000, country, None));
            assert_eq!((inv.tax_rate_bp, inv.tax_cents), (bp, tax), "{country}");
            assert_eq!(inv.country, country.to_ascii_uppercase());
            assert_eq!(inv.total_cents, 10_000 + tax);
        }
    }

    #[test]
    fn totals() {
        /// (subtotal, country, code, discount, tax, total)
        type Case = (i64, &'static str, Option<&'static str>, i64, i64, i64);
        let cases: &[Case] = &[
            // The saga test's order: 2 x 12.50 + 4.99 to France.
            (2_999, "FR", None, 0, 600, 3_599), // 599.8 -> 600
            (50, "ES", None, 0, 11, 61),        // 10.5 -> 11: a half rounds up
            (49, "ES", None, 0, 10, 59),
            (10, "FR", Some("SPRING5"), 1, 2, 11), // base 9, 1.8 -> 2
            (250_000, "DE", None, 25_000, 42_750, 267_750),
            (50_000, "CH", Some("WELCOME10"), 5_000, 3_645, 48_645),
            (100_000, "IT", Some("SPRING5"), 5_000, 20_900, 115_900),
            (1_000, "US", Some("WELCOME10"), 100, 0, 900),
        ];
        for (subtotal, country, code, discount, tax, total) in cases {
            let inv = invoice(&order(*subtotal, country, *code));
            assert_eq!(
                (inv.discount_cents, inv.tax_cents, inv.total_cents),
                (*discount, *tax, *total),
                "{subtotal} to {country} with {code:?}"
            );
            assert_eq!(
                inv.subtotal_cents - inv.discount_cents + inv.tax_cents,
                inv.total_cents
            );
        }
    }

    #[test]
    fn subtotal_sums_lines() {
        let mut o = order(1_250, "US", None);
        o.items[0].qty = 2;
        o.items.push(Item {
            sku: "other".into(),
            qty: 3,
            unit_price_cents: 499,
        });
        assert_eq!(invoice(&o).subtotal_cents, 2 * 1_250 + 3 * 499);
    }

    #[test]
    fn the_largest_valid_order_does_not_overflow() {
        let o = Order {
            items: (0..MAX_ITEMS)
                .map(|i| Item {
                    sku: format!("sku-{i}"),
                    qty: MAX_QTY,
                    unit_price_cents: MAX_UNIT_PRICE_CENTS,
                })
                .collect(),
            ..order(1, "IT", Some("WELCOME10"))
        };
        assert_eq!(o.validate(), Ok(()));
        let inv = invoice(&o);
        assert_eq!(inv.subtotal_cents, MAX_SUBTOTAL_CENTS);
        assert_eq!(inv.discount_cents, MAX_SUBTOTAL_CENTS / 10);
        assert_eq!(inv.total_cents, MAX_SUBTOTAL_CENTS / 10 * 9 / 100 * 122);
    }

    #[test]
    fn validate_refuses_unknown_codes() {
        assert_eq!(order(1, "FR", Some("WELCOME10")).validate(), Ok(()));
        assert_eq!(order(1, "FR", Some("SPRING5")).validate(), Ok(()));
        assert_eq!(order(1, "FR", None).validate(), Ok(()));
        for code in ["NOPE", "", "welcome10", " SPRING5"] {
            let e = order(1, "FR", Some(code)).validate().unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.message.as_str()),
                ("discount_code", "is not a known discount code"),
                "{code:?}"
            );
        }
    }

    #[test]
    fn the_code_is_optional_in_json() {
        let o = order(1, "FR", None);
        let json = serde_json::to_value(&o).unwrap();
        assert!(json.get("discount_code").is_none());
        let back: Order = serde_json::from_value(json).unwrap();
        assert_eq!(back, o);
        let with = order(1, "FR", Some("SPRING5"));
        let json = serde_json::to_value(&with).unwrap();
        assert_eq!(json["discount_code"], "SPRING5");
        assert_eq!(serde_json::from_value::<Order>(json).unwrap(), with);
    }
}
