//! Random orders for demos, tests and benchmarks (the CLI's `demo` and `bench`, the
//! end-to-end tests): plausible orders with a known share of declines, unshippable addresses
//! and discount codes.

use martix_order_contract::{Address, Item, Order};

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
        let codes = martix_order_contract::pricing::DISCOUNT_CODES;
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
        placed_by: None,
    }
}
