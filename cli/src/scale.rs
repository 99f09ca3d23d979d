//! `martix bench --scale`: the scale checks of the performance issue, against the same
//! in-process engine as the benchmark, each printing its figures.
//!
//! - `history`: one run builds a history of about 10,000 events (2,500 sequential activities),
//!   then a fresh worker (nothing cached) replays all of it to finish the run;
//! - `queues`: 10 task queues with 8 workers each run order sagas side by side;
//! - `timers`: N workflows (default 100,000) wait on a one-hour timer; a new saga's latency and
//!   the process's memory before and after.

use crate::bench::Latencies;
use anyhow::{Context, Result, ensure};
use martix_order_contract::{ORDER_WORKFLOW_TYPE, OrderOutcome};
use martix_sdk::{ActivityContext, ActivityError, ActivityOptions, Client, StartOptions, Worker};
use martix_sdk::{WorkerOptions, WorkflowContext, WorkflowError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

async fn step(_ctx: ActivityContext, i: u32) -> Result<u32, ActivityError> {
    Ok(i)
}

/// `n` sequential activities, then waits for signal `finish`.
async fn long_history(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
    let opts = ActivityOptions::new(Duration::from_secs(30));
    let mut sum = 0u32;
    for i in 0..n {
        sum = sum.wrapping_add(
            ctx.activity_by_name::<_, u32>("step", &i, opts.clone())
                .await?,
        );
    }
    use futures::StreamExt;
    let _ = ctx.signal_by_name::<()>("finish").next().await;
    Ok(sum)
}

/// Waits an hour.
async fn sleeper(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    ctx.sleep(Duration::from_secs(3600)).await;
    Ok(())
}

fn spawn(worker: Worker, stop: &CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(worker.run(stop.clone()))
}

/// One run of ~4 events per activity, replayed whole by a worker that never saw it.
pub(crate) async fn history(address: &str, client: &Client, activities: u32) -> Result<()> {
    let queue = format!("scale-history-{}", uuid::Uuid::now_v7().simple());
    let make = |cache: usize| -> Result<Worker> {
        let mut w = Worker::new(
            address,
            WorkerOptions::new(&queue).max_cached_workflows(cache),
        )?;
        w.register_workflow("long_history", long_history)
            .register_activity("step", step);
        Ok(w)
    };
    let stop = CancellationToken::new();
    let first = spawn(make(10)?, &stop);
    let id = format!("scale-history-{}", uuid::Uuid::now_v7().simple());
    let started = Instant::now();
    let run = client
        .start_workflow(StartOptions::new("long_history", &id, &queue), &activities)
        .await?;
    // Built when the run waits for the signal: its last event is a completed workflow task.
    loop {
        let d = run.describe().await?;
        if d.pending_activities.is_empty()
            && d.pending_workflow_task.is_none()
            && d.summary.history_length >= i64::from(activities) * 4
        {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "the history was not built within 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let built = started.elapsed();
    stop.cancel();
    first.await.ok();
    let len = run.history().await?.len();
    // A worker that never saw the run: it reads and replays every event to go on.
    let stop = CancellationToken::new();
    let fresh = make(10)?;
    let stats = fresh.stats();
    let second = spawn(fresh, &stop);
    let replay = Instant::now();
    run.signal_by_name("finish", &()).await?;
    let sum: u32 = tokio::time::timeout(Duration::from_secs(600), run.result())
        .await
        .context("the replayed run did not finish within 10 minutes")??;
    let replayed = replay.elapsed();
    stop.cancel();
    second.await.ok();
    let expected = (0..activities).fold(0u32, u32::wrapping_add);
    ensure!(
        sum == expected,
        "the replayed run returned {sum}, not {expected}"
    );
    // The whole closed history, replayed offline against the workflow code.
    let full = run.history().await?;
    let mut replayer = martix_sdk::Replayer::new();
    replayer.register_workflow("long_history", long_history);
    let offline = Instant::now();
    replayer
        .replay(&full)
        .map_err(|e| anyhow::anyhow!("offline replay: {e}"))?;
    let offline = offline.elapsed();
    println!(
        "history: {len} events ({activities} activities) built in {:.1} s; a fresh worker \
         (cache misses: {}) read and replayed them and completed the run {:.2} s after the \
         signal (of which up to 5 s is the task waiting on the stopped worker's sticky queue); \
         the closed history of {} events replays offline in {:.0} ms",
        built.as_secs_f64(),
        stats
            .cache_misses
            .load(std::sync::atomic::Ordering::Relaxed),
        replayed.as_secs_f64(),
        full.len(),
        offline.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// `queues` task queues with `per_queue` workers each, `sagas` order sagas spread over them.
pub(crate) async fn queues(
    address: &str,
    client: &Client,
    activities: Arc<martix_activities::OrderActivities>,
    queues: usize,
    per_queue: usize,
    sagas: u64,
) -> Result<()> {
    let stop = CancellationToken::new();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let names: Vec<String> = (0..queues).map(|q| format!("scale-q{q}-{run}")).collect();
    let mut handles = Vec::new();
    for name in &names {
        for _ in 0..per_queue {
            let mut w = Worker::new(address, WorkerOptions::new(name))?;
            w.workflow(martix_workflows::OrderSaga, martix_workflows::order);
            activities.register(&mut w);
            handles.push(spawn(w, &stop));
        }
    }
    let started = Instant::now();
    let mut latencies = Latencies::new();
    let mut errors = 0u64;
    use futures::StreamExt;
    let results: Vec<(Duration, bool)> = futures::stream::iter(0..sagas)
        .map(|i| {
            let queue = names[i as usize % names.len()].clone();
            let order = crate::bench::bench_order(&run, i);
            async move {
                let t = Instant::now();
                let ok = async {
                    let h = client
                        .start_workflow(
                            StartOptions::new(ORDER_WORKFLOW_TYPE, &order.order_id, &queue),
                            &order,
                        )
                        .await?;
                    h.result::<OrderOutcome>().await
                }
                .await
                .is_ok();
                (t.elapsed(), ok)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    for (took, ok) in &results {
        latencies.record(*took);
        if !ok {
            errors += 1;
        }
    }
    stop.cancel();
    for h in handles {
        h.await.ok();
    }
    println!(
        "queues: {queues} task queues x {per_queue} workers: {sagas} sagas at C=64 in {secs:.1} s \
         ({:.0}/s), p50 {:.0} ms, p99 {:.0} ms, {errors} errors",
        sagas as f64 / secs,
        latencies.ms(0.5),
        latencies.ms(0.99)
    );
    ensure!(errors == 0, "{errors} sagas failed");
    Ok(())
}

/// `n` workflows waiting on a one-hour timer; a saga's latency and memory before and after.
pub(crate) async fn timers(address: &str, client: &Client, saga_queue: &str, n: u64) -> Result<()> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let probe = |label: &'static str| {
        let run = run.clone();
        async move {
            let mut latencies = Latencies::new();
            for i in 0..50u64 {
                let order = crate::bench::bench_order(&format!("{run}-{label}"), i);
                let t = Instant::now();
                let h = client
                    .start_workflow(
                        StartOptions::new(ORDER_WORKFLOW_TYPE, &order.order_id, saga_queue),
                        &order,
                    )
                    .await?;
                h.result::<OrderOutcome>().await?;
                latencies.record(t.elapsed());
            }
            anyhow::Ok(latencies.ms(0.5))
        }
    };
    let before_ms = probe("before").await?;
    let before_rss = crate::bench::memory_mib("VmRSS:");
    let queue = format!("scale-timers-{run}");
    let stop = CancellationToken::new();
    let mut w = Worker::new(
        address,
        WorkerOptions::new(&queue).max_cached_workflows(1000),
    )?;
    w.register_workflow("sleeper", sleeper);
    let stats = w.stats();
    let worker = spawn(w, &stop);
    let started = Instant::now();
    use futures::StreamExt;
    let failed = futures::stream::iter(0..n)
        .map(|i| {
            let (queue, run) = (queue.clone(), run.clone());
            async move {
                client
                    .start_workflow(
                        StartOptions::new("sleeper", format!("sleeper-{run}-{i}"), &queue),
                        &(),
                    )
                    .await
                    .is_err()
            }
        })
        .buffer_unordered(256)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    ensure!(failed == 0, "{failed} starts failed");
    // Every sleeper has run its one workflow task (its timer is written).
    let store_wait = Instant::now();
    loop {
        let tasks = stats.cache_hits.load(std::sync::atomic::Ordering::Relaxed)
            + stats
                .cache_misses
                .load(std::sync::atomic::Ordering::Relaxed);
        if tasks >= n {
            break;
        }
        ensure!(
            store_wait.elapsed() < Duration::from_secs(1800),
            "sleepers still waiting for their first task"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let loaded = started.elapsed();
    let after_rss = crate::bench::memory_mib("VmRSS:");
    let after_ms = probe("after").await?;
    stop.cancel();
    worker.await.ok();
    println!(
        "timers: {n} workflows waiting on a timer (started and their first task done in \
         {:.0} s); process RSS {before_rss:.0} -> {after_rss:.0} MiB; a new saga's p50 \
         {before_ms:.1} -> {after_ms:.1} ms",
        loaded.as_secs_f64()
    );
    Ok(())
}
