//! `martix dev --demo N`: places N random orders through the real engine and checks that
//! money and stock add up.

use crate::bench::Latencies;
use anyhow::{Result, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use martix_activities::{ReferenceAdapters, random_order};
use martix_order_contract::{ORDER_WORKFLOW_TYPE, Order, OrderOutcome};
use martix_sdk::{Client, StartOptions};
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SKUS: usize = 8;
const STOCK_PER_SKU: i64 = 1_000_000;

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
    let orders: Vec<Order> = (0..n)
        .map(|i| random_order(&mut rng, &prefix, i, SKUS))
        .collect();
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
                            StartOptions::new(ORDER_WORKFLOW_TYPE, &order.order_id, task_queue),
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
    let mut latency = Latencies::new();
    let mut errors = 0;
    let mut completed: Vec<&Order> = Vec::new();
    for (order, outcome, took) in &results {
        latency.record(*took);
        match outcome {
            Ok(o) => {
                let key = match &o.failed_step {
                    Some(step) => format!("{} ({step})", o.status),
                    None => o.status.clone(),
                };
                *by_outcome.entry(key).or_default() += 1;
                if o.status == "completed" {
                    completed.push(order);
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
    println!(
        "{n} orders in {:.2} s: {:.1} orders/s; latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        latency.ms(0.50),
        latency.ms(0.95),
        latency.ms(0.99),
        latency.max_ms()
    );

    let checks = adapters.check_ledger(&prefix, &completed).await?;
    println!();
    println!("ledger check");
    let mut ok = errors == 0;
    for c in &checks {
        println!(
            "  {} {}: {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.what,
            c.figures
        );
        ok &= c.ok;
    }
    if !ok {
        bail!("the demo's orders do not add up");
    }
    println!("\nall orders terminal, money and stock add up");
    Ok(())
}
