//! `martix bench`: the reference workload of `shared/BENCHMARK.md` against an in-process
//! engine (SQLite or PostgreSQL) with the order worker, measured from the outside: sagas per
//! second, start-to-result latency (HDR histogram), engine write transactions per saga, CPU
//! per saga of this process and of the PostgreSQL backends, peak RSS. Its latency histogram
//! (`Latencies`) and memory figures serve `martix dev --demo` and `--scale` too.

use anyhow::{Context, Result};
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use martix_order_contract::{Address, Item, ORDER_WORKFLOW_TYPE, Order, OrderOutcome};
use martix_sdk::{Client, StartOptions};
use std::time::{Duration, Instant};

/// The fixed workload: order `i` is declined iff `floor((i+1)*0.1) != floor(i*0.1)`, that is
/// iff `(i + 1)` is a multiple of 10 (integer arithmetic, so no float rounding can move it).
pub(crate) fn bench_order(run: &str, i: u64) -> Order {
    let declined = (i + 1).is_multiple_of(10);
    let lines = 1 + (i % 3) as usize;
    Order {
        order_id: format!("bench-{run}-{i}"),
        // One customer per saga and run: the fraud rules count orders per customer.
        customer_id: if declined {
            format!("declined-{run}-{i}")
        } else {
            format!("cust-{run}-{i}")
        },
        currency: "EUR".into(),
        items: (0..lines)
            .map(|l| Item {
                sku: format!("bench-sku-{l}"),
                qty: 1,
                unit_price_cents: 1000 + l as i64,
            })
            .collect(),
        shipping_address: Address {
            country: "FR".into(),
            ..Default::default()
        },
        discount_code: None,
        placed_by: None,
    }
}

/// CPU time (user + system) of a process in milliseconds, from /proc.
fn cpu_ms(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0) // USER_HZ is 100 on Linux
}

/// CPU of every process whose command is `postgres` (the server and its backends).
/// CPU used so far by this process and by PostgreSQL's backends, in milliseconds.
pub(crate) fn cpu_now() -> (f64, f64) {
    (cpu_ms("self").unwrap_or(0.0), postgres_cpu_ms())
}

/// CPU used since `before` (`cpu_now`), by this process and by PostgreSQL.
pub(crate) fn cpu_since(before: &(f64, f64)) -> (f64, f64) {
    let now = cpu_now();
    (now.0 - before.0, now.1 - before.1)
}

fn postgres_cpu_ms() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let pid = e.file_name().into_string().ok()?;
            pid.chars().all(|c| c.is_ascii_digit()).then_some(pid)
        })
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|pid| cpu_ms(&pid))
        .sum()
}

/// A memory figure of this process from `/proc/self/status` (`VmRSS:` now, `VmHWM:` peak),
/// in MiB; 0 where the system has no such file.
pub(crate) fn memory_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Latencies, kept in microseconds (HDR histogram, 3 significant figures), read in
/// milliseconds.
pub(crate) struct Latencies(Histogram<u64>);

impl Latencies {
    pub(crate) fn new() -> Self {
        Self(Histogram::new(3).expect("3 significant figures are within 0..=5"))
    }

    pub(crate) fn record(&mut self, took: Duration) {
        let _ = self.0.record(took.as_micros() as u64);
    }

    /// The latency at `quantile` (0.5: the median), in milliseconds.
    pub(crate) fn ms(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        let _ = self.0.add(&other.0);
    }

    pub(crate) fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }
}

/// One measured level.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Level {
    /// Closed loop: callers, each waiting for its saga before the next. Open loop: 0.
    pub concurrency: usize,
    /// Open loop: sagas started per second, on schedule whatever the engine does.
    pub rate: Option<f64>,
    pub sagas: u64,
    pub errors: u64,
    pub seconds: f64,
    pub sagas_per_second: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub write_transactions_per_saga: f64,
    /// PostgreSQL: every transaction the database committed or rolled back during the level
    /// (`pg_stat_database`: the engine's reads and writes, the relay's, the adapters'), per saga.
    pub database_transactions_per_saga: Option<f64>,
    pub process_cpu_ms_per_saga: f64,
    pub postgres_cpu_ms_per_saga: f64,
    pub peak_rss_mib: f64,
    pub completed: u64,
    pub compensated: u64,
}

/// What a level runs against.
pub(crate) struct Target<'a> {
    pub client: &'a Client,
    pub queue: &'a str,
    /// The engine's write transactions so far.
    pub writes: &'a dyn Fn() -> u64,
    pub progress: bool,
}

/// Runs one closed-loop level: `concurrency` callers, each starting a saga and waiting for
/// its result, until `sagas` are done or `max_time` passes.
pub(crate) async fn closed_loop(
    target: &Target<'_>,
    run_id: &str,
    concurrency: usize,
    sagas: u64,
    max_time: Duration,
) -> Result<Level> {
    let Target {
        client,
        queue,
        writes,
        progress,
    } = *target;
    let bar = if progress {
        ProgressBar::new(sagas)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("  C={msg} {bar:30} {pos}/{len} sagas {per_sec}")
            .context("progress template")?,
    );
    bar.set_message(concurrency.to_string());
    let writes_before = writes();
    let cpu_before = cpu_ms("self").unwrap_or(0.0);
    let pg_before = postgres_cpu_ms();
    let started = Instant::now();
    let deadline = started + max_time;
    let next = std::sync::atomic::AtomicU64::new(0);
    let results: Vec<Vec<(Duration, Option<OrderOutcome>)>> = futures::stream::iter(0..concurrency)
        .map(|_| {
            let bar = bar.clone();
            let next = &next;
            async move {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= sagas || Instant::now() > deadline {
                        return mine;
                    }
                    let order = bench_order(run_id, i);
                    let t = Instant::now();
                    let outcome = async {
                        let run = client
                            .start_workflow(
                                StartOptions::new(ORDER_WORKFLOW_TYPE, &order.order_id, queue),
                                &order,
                            )
                            .await?;
                        run.result::<OrderOutcome>().await
                    }
                    .await
                    .ok();
                    mine.push((t.elapsed(), outcome));
                    bar.inc(1);
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    summarize(
        Measure {
            concurrency,
            rate: None,
            seconds,
            writes: writes() - writes_before,
            cpu_ms: cpu_ms("self").unwrap_or(0.0) - cpu_before,
            pg_cpu_ms: postgres_cpu_ms() - pg_before,
        },
        results.into_iter().flatten(),
    )
}

/// What a level measured besides the sagas' outcomes.
struct Measure {
    concurrency: usize,
    rate: Option<f64>,
    seconds: f64,
    writes: u64,
    cpu_ms: f64,
    pg_cpu_ms: f64,
}

fn summarize(
    m: Measure,
    results: impl Iterator<Item = (Duration, Option<OrderOutcome>)>,
) -> Result<Level> {
    let mut latencies = Latencies::new();
    let (mut done, mut errors, mut completed, mut compensated) = (0u64, 0u64, 0u64, 0u64);
    for (took, outcome) in results {
        latencies.record(took);
        match outcome {
            Some(o) => {
                done += 1;
                match o.status.as_str() {
                    "completed" => completed += 1,
                    "compensated" => compensated += 1,
                    _ => {}
                }
            }
            None => errors += 1,
        }
    }
    let n = done.max(1) as f64;
    Ok(Level {
        concurrency: m.concurrency,
        rate: m.rate,
        sagas: done,
        errors,
        seconds: m.seconds,
        sagas_per_second: done as f64 / m.seconds,
        p50_ms: latencies.ms(0.5),
        p95_ms: latencies.ms(0.95),
        p99_ms: latencies.ms(0.99),
        max_ms: latencies.max_ms(),
        write_transactions_per_saga: m.writes as f64 / n,
        database_transactions_per_saga: None,
        process_cpu_ms_per_saga: m.cpu_ms / n,
        postgres_cpu_ms_per_saga: m.pg_cpu_ms / n,
        peak_rss_mib: memory_mib("VmHWM:"),
        completed,
        compensated,
    })
}

/// Runs one open-loop level: saga `i` starts at `i / rate` seconds whether or not earlier ones
/// finished, and its latency counts from that intended start, so a slow engine cannot hide
/// its queueing (no coordinated omission).
pub(crate) async fn open_loop(
    target: &Target<'_>,
    run_id: &str,
    rate: f64,
    sagas: u64,
    max_time: Duration,
) -> Result<Level> {
    anyhow::ensure!(
        rate > 0.0 && rate.is_finite(),
        "--rate must be a positive number"
    );
    let Target {
        client,
        queue,
        writes,
        ..
    } = *target;
    let writes_before = writes();
    let cpu_before = cpu_ms("self").unwrap_or(0.0);
    let pg_before = postgres_cpu_ms();
    let started = tokio::time::Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for i in 0..sagas {
        let intended = started + Duration::from_secs_f64(i as f64 / rate);
        if intended.duration_since(started) > max_time {
            break;
        }
        tokio::time::sleep_until(intended).await;
        let (client, queue) = (client.clone(), queue.to_owned());
        let order = bench_order(run_id, i);
        running.spawn(async move {
            let outcome = async {
                let run = client
                    .start_workflow(
                        StartOptions::new(ORDER_WORKFLOW_TYPE, &order.order_id, &queue),
                        &order,
                    )
                    .await?;
                run.result::<OrderOutcome>().await
            }
            .await
            .ok();
            (intended.elapsed(), outcome)
        });
    }
    let mut results = Vec::new();
    while let Some(r) = running.join_next().await {
        results.push(r.context("a bench task")?);
    }
    summarize(
        Measure {
            concurrency: 0,
            rate: Some(rate),
            seconds: started.elapsed().as_secs_f64(),
            writes: writes() - writes_before,
            cpu_ms: cpu_ms("self").unwrap_or(0.0) - cpu_before,
            pg_cpu_ms: postgres_cpu_ms() - pg_before,
        },
        results.into_iter(),
    )
}

/// Prints levels as a table.
pub(crate) fn print_table(backend: &str, levels: &[Level]) {
    println!(
        "martix bench: order saga (pricing + 4 activities + 7 events, noop adapters, 10% declined), {backend}, durable settings"
    );
    println!("engine, worker, bench client and the database share this machine's cores");
    println!(
        "{:>4} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>6}",
        "C/R",
        "sagas",
        "sagas/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "writes/sg",
        "db xact/sg",
        "cpu ms/sg",
        "pg ms/sg",
        "RSS MiB",
        "errors"
    );
    for l in levels {
        let level = match l.rate {
            Some(r) => format!("{r}/s"),
            None => l.concurrency.to_string(),
        };
        println!(
            "{:>4} {:>7} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>10.2} {:>10} {:>10.2} {:>10.2} {:>8.0} {:>6}",
            level,
            l.sagas,
            l.sagas_per_second,
            l.p50_ms,
            l.p95_ms,
            l.p99_ms,
            l.max_ms,
            l.write_transactions_per_saga,
            l.database_transactions_per_saga
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}")),
            l.process_cpu_ms_per_saga,
            l.postgres_cpu_ms_per_saga,
            l.peak_rss_mib,
            l.errors
        );
    }
}
