//! Workflows that await many durable futures through combinators that poll only what was
//! woken (`join_all` over more than 30 futures, `FuturesUnordered`, `select_all`), against the
//! real engine on PostgreSQL and SQLite; and a workflow blocked on something that is not
//! Martix's, which must fail its workflow task visibly instead of waiting in silence.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use martix_engine::EngineConfig;
use martix_sdk::proto::history_event::Attributes as A;
use martix_sdk::{
    ActivityContext, ActivityError, ActivityOptions, Client, StartOptions, Worker, WorkerOptions,
    WorkflowContext, WorkflowError,
};
use martix_tests::{Backend, TestEngine, on_both_backends, unique};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.long_poll_timeout = Duration::from_secs(5);
    c.recheck_interval = Duration::from_millis(200);
    c.timer_poll_interval = Duration::from_millis(100);
    c
}

fn opts() -> ActivityOptions {
    ActivityOptions::new(Duration::from_secs(30)).initial_interval(Duration::from_millis(50))
}

/// A worker of a fresh queue with what `register` adds, running until the guard drops, and a
/// client of the engine.
async fn start_worker(
    engine: &TestEngine,
    register: impl FnOnce(&mut Worker),
) -> (String, CancelOnDrop, Client) {
    let q = unique("q");
    let mut w = Worker::new(&engine.endpoint, WorkerOptions::new(&q)).unwrap();
    register(&mut w);
    let shutdown = CancellationToken::new();
    tokio::spawn(w.run(shutdown.clone()));
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    (q, CancelOnDrop(shutdown), client)
}

/// Stops the worker when the test ends, passed or failed.
struct CancelOnDrop(CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

async fn forty_timers(ctx: WorkflowContext, _: ()) -> Result<u64, WorkflowError> {
    // Different durations, so they fire across several workflow tasks.
    let timers = (0..40u64).map(|i| {
        let ctx = ctx.clone();
        async move {
            ctx.sleep(Duration::from_millis(10 * (i + 1))).await;
            i
        }
    });
    Ok(futures::future::join_all(timers).await.into_iter().sum())
}

async fn join_all_over_forty_timers_completes(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let (q, _worker, client) = start_worker(&engine, |w| {
        w.register_workflow("forty_timers", forty_timers);
    })
    .await;
    let run = client
        .start_workflow(StartOptions::new("forty_timers", unique("t"), &q), &())
        .await
        .unwrap();
    let sum: u64 = tokio::time::timeout(Duration::from_secs(60), run.result())
        .await
        .expect("the workflow completes once its 40 timers fired")
        .unwrap();
    assert_eq!(sum, (0..40).sum::<u64>());
    let fired = run
        .history()
        .await
        .unwrap()
        .iter()
        .filter(|e| matches!(e.attributes, Some(A::TimerFired(_))))
        .count();
    assert_eq!(fired, 40);
}

async fn square(_ctx: ActivityContext, n: u64) -> Result<u64, ActivityError> {
    Ok(n * n)
}

async fn squares(ctx: WorkflowContext, n: u64) -> Result<u64, WorkflowError> {
    let mut running: FuturesUnordered<_> = (0..n)
        .map(|i| ctx.activity_by_name::<_, u64>("square", &i, opts()))
        .collect();
    let mut sum = 0;
    while let Some(r) = running.next().await {
        sum += r?;
    }
    Ok(sum)
}

/// 500 on PostgreSQL; 100 on SQLite, where the engine's checkpoint of a run with hundreds of
/// activities in flight, decoded and encoded at each commit, makes 500 take from 6 to 90 s
/// in a debug build (the SDK's share is small either way).
async fn futures_unordered_over_500_activities_sums_every_result(backend: Backend) {
    let n: u64 = match backend {
        Backend::Postgres => 500,
        Backend::Sqlite => 100,
    };
    let engine = TestEngine::start(backend, config()).await;
    let (q, _worker, client) = start_worker(&engine, |w| {
        w.register_workflow("squares", squares)
            .register_activity("square", square);
    })
    .await;
    let run = client
        .start_workflow(StartOptions::new("squares", unique("s"), &q), &n)
        .await
        .unwrap();
    let sum: u64 = tokio::time::timeout(Duration::from_secs(120), run.result())
        .await
        .expect("the workflow completes once all its activities did")
        .unwrap();
    assert_eq!(sum, (0..n).map(|i| i * i).sum::<u64>());
}

fn slow_opts() -> ActivityOptions {
    opts().heartbeat_timeout(Duration::from_secs(5))
}

async fn slow(ctx: ActivityContext, _: ()) -> Result<String, ActivityError> {
    // Long enough to lose the race, heartbeating so it learns it was cancelled.
    for i in 0..300 {
        if ctx
            .heartbeat(&i)
            .await
            .map_err(|e| ActivityError::retryable("Heartbeat", e.to_string()))?
        {
            return Err(ActivityError::non_retryable("Canceled", "cancelled"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok("slow".into())
}

async fn fast(_ctx: ActivityContext, _: ()) -> Result<String, ActivityError> {
    Ok("fast".into())
}

async fn first_of_three(ctx: WorkflowContext, _: ()) -> Result<(usize, String), WorkflowError> {
    let racers = vec![
        ctx.activity_by_name::<_, String>("slow", &(), slow_opts()),
        ctx.activity_by_name::<_, String>("fast", &(), opts()),
        ctx.activity_by_name::<_, String>("slow", &(), slow_opts()),
    ];
    let (won, index, rest) = futures::future::select_all(racers).await;
    // The losers are cancelled when dropped; a timer after shows the workflow goes on.
    drop(rest);
    ctx.sleep(Duration::from_millis(10)).await;
    Ok((index, won?))
}

async fn select_all_takes_the_first_and_cancels_the_others(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let (q, _worker, client) = start_worker(&engine, |w| {
        w.register_workflow("first_of_three", first_of_three)
            .register_activity("slow", slow)
            .register_activity("fast", fast);
    })
    .await;
    let run = client
        .start_workflow(StartOptions::new("first_of_three", unique("r"), &q), &())
        .await
        .unwrap();
    let out: (usize, String) = tokio::time::timeout(Duration::from_secs(60), run.result())
        .await
        .expect("the race ends")
        .unwrap();
    assert_eq!(out, (1, "fast".to_owned()));
    let cancel_requests = run
        .history()
        .await
        .unwrap()
        .iter()
        .filter(|e| matches!(e.attributes, Some(A::ActivityTaskCancelRequested(_))))
        .count();
    assert_eq!(cancel_requests, 2, "both slow activities are cancelled");
}

/// Awaits a durable timer, then a channel nothing will ever send on: blocked on nothing the
/// engine can deliver.
async fn stuck(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    ctx.sleep(Duration::from_millis(10)).await;
    let (_tx, rx) = futures::channel::oneshot::channel::<()>();
    let _ = rx.await;
    Ok(())
}

async fn a_workflow_blocked_on_nothing_durable_is_reported_not_silent(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let (q, _worker, client) = start_worker(&engine, |w| {
        w.register_workflow("stuck", stuck);
    })
    .await;
    let run = client
        .start_workflow(StartOptions::new("stuck", unique("b"), &q), &())
        .await
        .unwrap();
    let failure = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let d = run.describe().await.unwrap();
            if let Some(f) = d.pending_workflow_task.and_then(|t| t.last_failure) {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("describe shows the failing workflow task");
    assert!(
        failure.message.contains("blocked on nothing durable"),
        "{failure:?}"
    );
    let history = run.history().await.unwrap();
    assert!(
        history
            .iter()
            .any(|e| matches!(e.attributes, Some(A::WorkflowTaskFailed(_)))),
        "the failed task is in history"
    );
}

on_both_backends!(
    join_all_over_forty_timers_completes,
    futures_unordered_over_500_activities_sums_every_result,
    select_all_takes_the_first_and_cancels_the_others,
    a_workflow_blocked_on_nothing_durable_is_reported_not_silent,
);
