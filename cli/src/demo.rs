//! `martix dev --demo N`: places N random orders through the real engine and checks that
//! money and stock add up.

use anyhow::{Result, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use martix_activities::{Address, Item, Order, ReferenceAdapters};
use martix_sdk::{Client, StartOptions};
use martix_workflows::OrderOutcome;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SKUS: usize = 8;
const STOCK_PER_SKU: i64 = 1_000_000;

/// A random order: about 10% of customers are declined, about 5% of addresses unshippable.
pub(crate) fn random_order(rng: &mut impl Rng, prefix: &str, i: usize) -> Order {
    let items = (0..rng.random_range(1..=3))
        .map(|_| Item {
            sku: format!("{prefix}-sku-{}", rng.random_range(0..SKUS)),
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

/// Places `n` orders (16 at a time), prints the outcomes, latency and the ledger check.
/// Fails if money or stock do not add up.
pub(crate) async fn run(
    client: &Client,
    adapters: &ReferenceAdapters,
    task_queue: &str,
    n: usize,
) -> Result<()> {
    let prefix = format!("demo{}", uuid::Uuid::now_v7().simple());
    for s in 0..SKUS {
        adapters
            .seed_stock(&format!("{prefix}-sku-{s}"), STOCK_PER_SKU)
            .await?;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    let orders: Vec<Order> = (0..n).map(|i| random_order(&mut rng, &prefix, i)).collect();
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} orders  {per_sec}  eta {eta}")
            .expect("a valid template"),
    );
    let started = Instant::now();
    let results: Vec<(Order, Result<OrderOutcome, String>, Duration)> =
        futures::stream::iter(orders.into_iter().map(|order| {
            let client = client.clone();
            let bar = bar.clone();
            async move {
                let t = Instant::now();
                let outcome = async {
                    let run = client
                        .start_workflow(
                            StartOptions::new(martix_workflows::ORDER, &order.order_id, task_queue),
                            &order,
                        )
                        .await?;
                    run.result::<OrderOutcome>().await
                }
                .await
                .map_err(|e| e.to_string());
                bar.inc(1);
                (order, outcome, t.elapsed())
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await;
    let elapsed = started.elapsed();
    bar.finish_and_clear();

    let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    let mut latency = hdrhistogram::Histogram::<u64>::new(3).expect("valid histogram");
    let mut errors = 0;
    let mut expected_net = 0i64;
    let mut expected_shipped = 0i64;
    for (order, outcome, took) in &results {
        let _ = latency.record(took.as_micros() as u64);
        match outcome {
            Ok(o) => {
                let key = match &o.failed_step {
                    Some(step) => format!("{} ({step})", o.status),
                    None => o.status.clone(),
                };
                *by_outcome.entry(key).or_default() += 1;
                if o.status == "completed" {
                    expected_net += order.total_cents();
                    expected_shipped += order.items.iter().map(|i| i.qty).sum::<i64>();
                }
            }
            Err(e) => {
                errors += 1;
                eprintln!("order {} failed to run: {e}", order.order_id);
            }
        }
    }
    println!();
    println!("{:<28} {:>8}", "outcome", "orders");
    for (k, v) in &by_outcome {
        println!("{k:<28} {v:>8}");
    }
    println!("{:<28} {:>8}", "errors", errors);
    println!();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{n} orders in {:.2} s: {:.1} orders/s; latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        ms(0.50),
        ms(0.95),
        ms(0.99),
        latency.max() as f64 / 1000.0
    );

    let ledger = adapters.ledger(&prefix).await?;
    let net: i64 = ledger.values().map(|(net, _)| net).sum();
    let double_charged = ledger.values().filter(|(_, charges)| *charges > 1).count();
    let stock = adapters.stock(&format!("{prefix}-sku")).await?;
    println!();
    println!("ledger check");
    let checks = [
        (
            "charges - refunds = value of completed orders",
            format!("{net} = {expected_net}"),
            net == expected_net,
        ),
        (
            "no order charged twice",
            format!("{double_charged} double charges"),
            double_charged == 0,
        ),
        (
            "available + reserved + shipped = initial stock",
            format!(
                "{} + {} + {} = {}",
                stock.available, stock.reserved, stock.shipped, stock.initial
            ),
            stock.available + stock.reserved + stock.shipped == stock.initial,
        ),
        (
            "nothing left reserved",
            format!("{} reserved", stock.reserved),
            stock.reserved == 0,
        ),
        (
            "shipped = items of completed orders",
            format!("{} = {expected_shipped}", stock.shipped),
            stock.shipped == expected_shipped,
        ),
    ];
    let mut ok = errors == 0;
    for (what, figures, good) in &checks {
        println!(
            "  {} {what}: {figures}",
            if *good { "ok  " } else { "FAIL" }
        );
        ok &= good;
    }
    if !ok {
        bail!("the demo's orders do not add up");
    }
    println!("\nall orders terminal, money and stock add up");
    Ok(())
}
