//! The SDK against the real engine over gRPC, on PostgreSQL and SQLite: workflows with
//! activities, timers, signals, retries, continue-as-new; worker restarts; the replayer.

use futures::StreamExt;
use martix_engine::EngineConfig;
use martix_sdk::{
    ActivityContext, ActivityError, ActivityOptions, Client, Replayer, StartOptions, Worker,
    WorkerOptions, WorkflowContext, WorkflowError,
};
use martix_tests::{Backend, TestEngine, on_both_backends, unique};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.long_poll_timeout = Duration::from_secs(5);
    c.recheck_interval = Duration::from_millis(200);
    c.timer_poll_interval = Duration::from_millis(200);
    c
}

fn opts() -> ActivityOptions {
    ActivityOptions::new(Duration::from_secs(10)).initial_interval(Duration::from_millis(50))
}

/// A worker of queue `q` with what `register` adds, running, and a client of the engine.
async fn start_worker(
    engine: &TestEngine,
    q: &str,
    register: impl FnOnce(&mut Worker),
) -> (RunningWorker, Client) {
    start_worker_with(engine, WorkerOptions::new(q), register).await
}

/// `start_worker` with the worker's options.
async fn start_worker_with(
    engine: &TestEngine,
    options: WorkerOptions,
    register: impl FnOnce(&mut Worker),
) -> (RunningWorker, Client) {
    let mut w = Worker::new(&engine.endpoint, options).unwrap();
    register(&mut w);
    let running = RunningWorker::spawn(w);
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    (running, client)
}

/// A running worker; stopped (gracefully) when dropped or by `stop`.
struct RunningWorker {
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
    stats: Arc<martix_sdk::WorkerStats>,
}

impl RunningWorker {
    fn spawn(worker: Worker) -> Self {
        let shutdown = CancellationToken::new();
        let stats = worker.stats();
        let handle = tokio::spawn(worker.run(shutdown.clone()));
        Self {
            shutdown,
            handle: Some(handle),
            stats,
        }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn order(ctx: WorkflowContext, sku: String) -> Result<String, WorkflowError> {
    let (a, b) = futures::join!(
        ctx.activity_by_name::<_, String>("reserve", &sku, opts()),
        ctx.activity_by_name::<_, u32>("price", &sku, opts())
    );
    let (a, b) = (a?, b?);
    ctx.sleep(Duration::from_millis(300)).await;
    let mut approvals = ctx.signal_by_name::<String>("approve");
    let by = approvals.next().await.expect("signals never end")?;
    Ok(format!("{a}/{b}/approved by {by}"))
}

async fn reserve(_ctx: ActivityContext, sku: String) -> Result<String, ActivityError> {
    Ok(format!("reserved {sku}"))
}

async fn price(_ctx: ActivityContext, _sku: String) -> Result<u32, ActivityError> {
    Ok(1299)
}

fn worker(engine: &TestEngine, queue: &str, cache: usize) -> Worker {
    let mut w = Worker::new(
        &engine.endpoint,
        WorkerOptions::new(queue).max_cached_workflows(cache),
    )
    .unwrap();
    w.register_workflow("order", order)
        .register_activity("reserve", reserve)
        .register_activity("price", price);
    w
}

async fn activities_timers_and_signals(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("orders");
    let running = RunningWorker::spawn(worker(&engine, &q, 100));
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let id = unique("order");
    let run = client
        .start_workflow(StartOptions::new("order", &id, &q), &"sku-1")
        .await
        .unwrap();
    run.signal_by_name("approve", &"alice").await.unwrap();
    let out: String = tokio::time::timeout(Duration::from_secs(30), run.result())
        .await
        .expect("the order completes")
        .unwrap();
    assert_eq!(out, "reserved sku-1/1299/approved by alice");
    let stats = running.stats.clone();
    running.stop().await;
    assert!(
        stats.cache_hits.load(Ordering::Relaxed) >= 1,
        "later tasks hit the cache"
    );
    assert_eq!(
        stats.eager_activities.load(Ordering::Relaxed),
        2,
        "both activities came back with the workflow task's completion"
    );
}

async fn chain(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
    let mut total = 0;
    for i in 0..n {
        total += ctx.activity_by_name::<_, u32>("step", &i, opts()).await?;
    }
    Ok(total)
}

async fn step(_ctx: ActivityContext, i: u32) -> Result<u32, ActivityError> {
    Ok(i + 1)
}

#[tokio::test]
async fn signal_with_start_starts_once_and_then_signals() {
    let engine = TestEngine::start(Backend::Sqlite, config()).await;
    let q = unique("orders");
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let id = unique("sws");
    // No worker yet: the run exists with the signal right after its start.
    let first = client
        .signal_with_start_by_name(
            StartOptions::new("order", &id, &q),
            &"sku-3",
            "approve",
            &"carol",
        )
        .await
        .unwrap();
    assert!(first.started);
    let again = client
        .signal_with_start_by_name(
            StartOptions::new("order", &id, &q),
            &"sku-3",
            "approve",
            &"dave",
        )
        .await
        .unwrap();
    assert!(!again.started);
    assert_eq!(again.run_id, first.run_id);
    let kinds: Vec<&'static str> = first
        .history()
        .await
        .unwrap()
        .iter()
        .map(|e| match &e.attributes {
            Some(martix_proto::v1::history_event::Attributes::WorkflowExecutionStarted(_)) => {
                "started"
            }
            Some(martix_proto::v1::history_event::Attributes::WorkflowExecutionSignaled(_)) => {
                "signaled"
            }
            Some(martix_proto::v1::history_event::Attributes::WorkflowTaskScheduled(_)) => "task",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["started", "signaled", "task", "signaled"]);
    // The workflow sees the first signal.
    let running = RunningWorker::spawn(worker(&engine, &q, 100));
    let out: String = tokio::time::timeout(Duration::from_secs(30), first.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, "reserved sku-3/1299/approved by carol");
    running.stop().await;
}

/// Runs a chain of three steps on one worker; its stats and the engine's write transactions.
async fn run_chain(decide_ahead: bool) -> (Arc<martix_sdk::WorkerStats>, u64) {
    let engine = TestEngine::start(Backend::Sqlite, config()).await;
    let q = unique("chain");
    let mut options = WorkerOptions::new(&q);
    options.decide_ahead = decide_ahead;
    let (running, client) = start_worker_with(&engine, options, |w| {
        w.register_workflow("chain", chain)
            .register_activity("step", step);
    })
    .await;
    // A chain of none first: once it is done, the worker's pollers wait on the engine, so
    // the measured run's first task is handed over, not claimed from the store.
    let warmup = client
        .start_workflow(StartOptions::new("chain", unique("chain"), &q), &0u32)
        .await
        .unwrap();
    let _: u32 = warmup.result().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let writes = engine.engine.store().write_transactions();
    let run = client
        .start_workflow(StartOptions::new("chain", unique("chain"), &q), &3u32)
        .await
        .unwrap();
    let out: u32 = tokio::time::timeout(Duration::from_secs(30), run.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, 6);
    let writes = engine.engine.store().write_transactions() - writes;
    let mut replayer = Replayer::new();
    replayer.register_workflow("chain", chain);
    replayer
        .replay(&run.history().await.unwrap())
        .expect("the history replays");
    let stats = running.stats.clone();
    running.stop().await;
    (stats, writes)
}

#[tokio::test]
async fn each_step_of_a_chain_is_one_request_and_one_transaction() {
    let (stats, writes) = run_chain(true).await;
    // Each activity's result came with the workflow's next decision, recorded with it, and
    // the activity that decision scheduled came back in the answer: nothing was polled
    // after the first workflow task.
    assert_eq!(stats.decisions_recorded.load(Ordering::Relaxed), 3);
    assert_eq!(stats.decisions_refused.load(Ordering::Relaxed), 0);
    assert_eq!(stats.eager_activities.load(Ordering::Relaxed), 3);
    assert_eq!(stats.eager_workflow_tasks.load(Ordering::Relaxed), 0);
    assert_eq!(writes, 5, "start, first workflow task, one per step");
}

/// The decision's time keeps up with the engine's clock over a long chain: no decision is
/// refused for a time drifting behind it (each would cost a replay).
#[tokio::test]
async fn a_long_chain_is_decided_ahead_step_after_step() {
    let engine = TestEngine::start(Backend::Sqlite, config()).await;
    let q = unique("chain");
    let (running, client) = start_worker(&engine, &q, |w| {
        w.register_workflow("chain", chain)
            .register_activity("step", step);
    })
    .await;
    let run = client
        .start_workflow(StartOptions::new("chain", unique("chain"), &q), &1500u32)
        .await
        .unwrap();
    let out: u32 = tokio::time::timeout(Duration::from_secs(120), run.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, 1500 * 1501 / 2);
    let stats = running.stats.clone();
    running.stop().await;
    assert_eq!(stats.decisions_refused.load(Ordering::Relaxed), 0);
    assert_eq!(stats.decisions_recorded.load(Ordering::Relaxed), 1500);
}

#[tokio::test]
async fn without_deciding_ahead_each_step_comes_back_eagerly() {
    let (stats, writes) = run_chain(false).await;
    // Each workflow task's activity came back with its completion, and each activity's
    // result brought back the next workflow task: nothing was polled after the start.
    assert_eq!(stats.decisions_recorded.load(Ordering::Relaxed), 0);
    assert_eq!(stats.eager_activities.load(Ordering::Relaxed), 3);
    assert_eq!(stats.eager_workflow_tasks.load(Ordering::Relaxed), 3);
    assert_eq!(
        writes, 8,
        "start, then a result and a workflow task per step"
    );
}

async fn clocked(ctx: WorkflowContext, n: u32) -> Result<Vec<u64>, WorkflowError> {
    let mut seen = Vec::new();
    for i in 0..n {
        ctx.activity_by_name::<_, u32>("step", &i, opts()).await?;
        let t = ctx.now().duration_since(std::time::UNIX_EPOCH).unwrap();
        seen.push(t.as_millis() as u64);
    }
    Ok(seen)
}

/// The workflow's time in a decision made ahead is the time history records for it.
async fn a_decision_made_ahead_sees_the_time_history_records(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("clocked");
    let (running, client) = start_worker(&engine, &q, |w| {
        w.register_workflow("clocked", clocked)
            .register_activity("step", step);
    })
    .await;
    let run = client
        .start_workflow(StartOptions::new("clocked", unique("c"), &q), &3u32)
        .await
        .unwrap();
    let seen: Vec<u64> = tokio::time::timeout(Duration::from_secs(30), run.result())
        .await
        .unwrap()
        .unwrap();
    let history = run.history().await.unwrap();
    let recorded: Vec<u64> = history
        .iter()
        .filter(|e| {
            matches!(
                e.attributes,
                Some(martix_sdk::proto::history_event::Attributes::ActivityTaskCompleted(_))
            )
        })
        .map(|e| {
            let t = e.event_time.unwrap();
            t.seconds as u64 * 1000 + t.nanos as u64 / 1_000_000
        })
        .collect();
    assert_eq!(
        seen, recorded,
        "now() after each result is the result's time"
    );
    let stats = running.stats.clone();
    running.stop().await;
    assert_eq!(stats.decisions_recorded.load(Ordering::Relaxed), 3);
    let mut replayer = Replayer::new();
    replayer.register_workflow("clocked", clocked);
    replayer.replay(&history).expect("the history replays");
}

async fn stepping_down(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
    let done: u32 = ctx.activity_by_name("step", &n, opts()).await?;
    if n == 0 {
        return Ok(done);
    }
    ctx.publish("step.done", &serde_json::json!({ "n": n }));
    Err(ctx.continue_as_new(&(n - 1)))
}

/// A decision made ahead that continues as new: the result, the workflow task, the published
/// event and the next run are one transaction, and the chain runs to its end.
async fn a_decision_made_ahead_can_continue_as_new(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("down");
    let (running, client) = start_worker(&engine, &q, |w| {
        w.register_workflow("stepping_down", stepping_down)
            .register_activity("step", step);
    })
    .await;
    let id = unique("down");
    client
        .start_workflow(StartOptions::new("stepping_down", &id, &q), &3u32)
        .await
        .unwrap();
    let out: u32 = tokio::time::timeout(Duration::from_secs(30), client.handle(&id).result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, 1, "the last run's step");
    let stats = running.stats.clone();
    running.stop().await;
    assert_eq!(
        stats.decisions_recorded.load(Ordering::Relaxed),
        4,
        "each run's result came with its decision"
    );
    let runs = engine
        .engine
        .store()
        .list_runs(&martix_engine::store::ListQuery {
            workflow_id_prefix: Some(id.clone()),
            ..martix_engine::store::ListQuery::new(
                martix_engine::ids::Namespace::parse("default").unwrap(),
                10,
            )
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 4, "four runs of the chain");
    let published: u32 = {
        let mut n = 0;
        for r in &runs {
            let events = engine
                .engine
                .store()
                .history(r.run_id, 1, 100)
                .await
                .unwrap();
            n += events
                .iter()
                .filter(|e| {
                    matches!(
                        e.attributes,
                        Some(martix_sdk::proto::history_event::Attributes::EventPublished(_))
                    )
                })
                .count() as u32;
        }
        n
    };
    assert_eq!(published, 3, "one event per run that continued");
    let mut replayer = Replayer::new();
    replayer.register_workflow("stepping_down", stepping_down);
    replayer
        .replay(&client.handle(&id).history().await.unwrap())
        .expect("the last run replays");
}

async fn publishes_badly(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    ctx.activity_by_name::<_, u32>("step", &1u32, opts())
        .await?;
    ctx.publish("not a routing key!", &serde_json::json!({}));
    Ok(())
}

/// The engine refuses a decision made ahead whose commands it would refuse in a workflow
/// task: the worker drops its copy, and the workflow task that follows fails as usual.
async fn a_decision_the_engine_refuses_is_made_again_in_a_workflow_task(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("bad");
    let (running, client) = start_worker(&engine, &q, |w| {
        w.register_workflow("publishes_badly", publishes_badly)
            .register_activity("step", step);
    })
    .await;
    let run = client
        .start_workflow(StartOptions::new("publishes_badly", unique("b"), &q), &())
        .await
        .unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let history = run.history().await.unwrap();
            if let Some(f) = history.iter().find_map(|e| match &e.attributes {
                Some(martix_sdk::proto::history_event::Attributes::WorkflowTaskFailed(f)) => {
                    Some(f.clone())
                }
                _ => None,
            }) {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the workflow task fails");
    assert!(
        failed
            .failure
            .as_ref()
            .is_some_and(|f| f.message.contains("event_type")),
        "{failed:?}"
    );
    let stats = running.stats.clone();
    running.stop().await;
    assert_eq!(stats.decisions_refused.load(Ordering::Relaxed), 1);
    assert_eq!(stats.decisions_recorded.load(Ordering::Relaxed), 0);
    assert!(
        stats.cache_misses.load(Ordering::Relaxed) >= 2,
        "the dropped copy is replayed from history"
    );
}

/// Signals its own workflow (through the engine at `endpoint`) before it returns: the result
/// is not the run's only new event.
async fn signal_own_run(ctx: ActivityContext, endpoint: String) -> Result<u32, ActivityError> {
    let client = Client::connect(endpoint).await.unwrap();
    client
        .handle(ctx.workflow_id())
        .signal_by_name("ping", &"from the activity")
        .await
        .map_err(|e| ActivityError::retryable("Signal", e.to_string()))?;
    Ok(7)
}

async fn pinged(ctx: WorkflowContext, endpoint: String) -> Result<String, WorkflowError> {
    let n: u32 = ctx
        .activity_by_name("signal_own_run", &endpoint, opts())
        .await?;
    let mut pings = ctx.signal_by_name::<String>("ping");
    let ping = pings.next().await.expect("signals never end")?;
    let m: u32 = ctx.activity_by_name("step", &n, opts()).await?;
    Ok(format!("{m} {ping}"))
}

/// A signal that arrives while an activity runs reaches the workflow whichever comes first:
/// the workflow task the signal schedules, or the decision made ahead with the result (then
/// refused, the engine has an event the decision did not see).
async fn a_signal_during_an_activity_reaches_a_workflow_that_decides_ahead(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("pinged");
    let (running, client) = start_worker(&engine, &q, |w| {
        w.register_workflow("pinged", pinged)
            .register_activity("signal_own_run", signal_own_run)
            .register_activity("step", step);
    })
    .await;
    let run = client
        .start_workflow(
            StartOptions::new("pinged", unique("p"), &q),
            &engine.endpoint,
        )
        .await
        .unwrap();
    let out: String = tokio::time::timeout(Duration::from_secs(30), run.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, "8 from the activity");
    let stats = running.stats.clone();
    running.stop().await;
    assert_eq!(
        stats.decisions_recorded.load(Ordering::Relaxed),
        1,
        "the last step is decided ahead"
    );
    let mut replayer = Replayer::new();
    replayer.register_workflow("pinged", pinged);
    replayer
        .replay(&run.history().await.unwrap())
        .expect("the history replays");
}

#[tokio::test]
async fn without_eager_dispatch_activities_are_polled() {
    let engine = TestEngine::start(Backend::Sqlite, config()).await;
    let q = unique("orders");
    let mut options = WorkerOptions::new(&q);
    options.max_eager_activities = 0;
    let (running, client) = start_worker_with(&engine, options, |w| {
        w.register_workflow("order", order)
            .register_activity("reserve", reserve)
            .register_activity("price", price);
    })
    .await;
    let run = client
        .start_workflow(StartOptions::new("order", unique("order"), &q), &"sku-2")
        .await
        .unwrap();
    run.signal_by_name("approve", &"bob").await.unwrap();
    let out: String = tokio::time::timeout(Duration::from_secs(30), run.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, "reserved sku-2/1299/approved by bob");
    let stats = running.stats.clone();
    running.stop().await;
    assert_eq!(stats.eager_activities.load(Ordering::Relaxed), 0);
    assert_eq!(stats.eager_workflow_tasks.load(Ordering::Relaxed), 0);
}

static ATTEMPTS: AtomicU32 = AtomicU32::new(0);

async fn flaky(ctx: ActivityContext, _: ()) -> Result<i32, ActivityError> {
    ATTEMPTS.fetch_add(1, Ordering::SeqCst);
    if ctx.attempt() < 3 {
        return Err(ActivityError::retryable("GatewayTimeout", "try again"));
    }
    Ok(ctx.attempt())
}

async fn declining(_ctx: ActivityContext, _: ()) -> Result<(), ActivityError> {
    Err(ActivityError::non_retryable("Declined", "card declined"))
}

async fn retrying(ctx: WorkflowContext, _: ()) -> Result<i32, WorkflowError> {
    let attempt: i32 = ctx.activity_by_name("flaky", &(), opts()).await?;
    match ctx
        .activity_by_name::<_, ()>("declining", &(), opts())
        .await
    {
        Err(f) if f.error_type() == "Declined" => Ok(attempt),
        other => Err(WorkflowError::failed("Unexpected", format!("{other:?}"))),
    }
}

async fn retries_reach_the_workflow_only_as_a_final_outcome(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("q");
    let (_running, client) = start_worker(&engine, &q, |w| {
        w.register_workflow("retrying", retrying)
            .register_activity("flaky", flaky)
            .register_activity("declining", declining);
    })
    .await;
    let id = unique("retry");
    let before = ATTEMPTS.load(Ordering::SeqCst);
    let run = client
        .start_workflow(StartOptions::new("retrying", &id, &q), &())
        .await
        .unwrap();
    let attempt: i32 = tokio::time::timeout(Duration::from_secs(30), run.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt, 3);
    assert!(ATTEMPTS.load(Ordering::SeqCst) - before >= 3);
    let history = run.history().await.unwrap();
    use martix_sdk::proto::history_event::Attributes as A;
    let failed = history
        .iter()
        .filter(|e| matches!(e.attributes, Some(A::ActivityTaskFailed(_))))
        .count();
    assert_eq!(failed, 1, "only the non-retryable failure is in history");
}

async fn countdown(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
    if n == 0 {
        return Ok(42);
    }
    ctx.sleep(Duration::from_millis(10)).await;
    Err(ctx.continue_as_new(&(n - 1)))
}

async fn continue_as_new_runs_to_the_last_run(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("q");
    let (_running, client) = start_worker(&engine, &q, |w| {
        w.register_workflow("countdown", countdown);
    })
    .await;
    let run = client
        .start_workflow(StartOptions::new("countdown", unique("cd"), &q), &3u32)
        .await
        .unwrap();
    let out: u32 = tokio::time::timeout(Duration::from_secs(30), run.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, 42);
}

async fn ticking(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
    ctx.publish("tick.counted", &serde_json::json!({ "n": n }));
    if n == 0 {
        return Ok(0);
    }
    Err(ctx.continue_as_new(&(n - 1)))
}

async fn publishes_a_number(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    ctx.publish("tick.broken", &5);
    Ok(())
}

async fn event_sequences_go_on_across_continue_as_new_and_a_reused_id(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("q");
    let (_running, client) = start_worker(&engine, &q, |w| {
        w.register_workflow("ticking", ticking)
            .register_workflow("broken", publishes_a_number);
    })
    .await;
    let id = unique("tick");
    for input in [2u32, 0] {
        let run = client
            .start_workflow(StartOptions::new("ticking", &id, &q), &input)
            .await
            .unwrap();
        let _: u32 = tokio::time::timeout(Duration::from_secs(30), run.result())
            .await
            .unwrap()
            .unwrap();
    }
    let events = outbox_of(&engine, &id).await;
    let seen: Vec<(i64, String)> = events
        .iter()
        .map(|e| (e.sequence, e.body.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, r#"{"n":2}"#.to_owned()),
            (2, r#"{"n":1}"#.to_owned()),
            (3, r#"{"n":0}"#.to_owned()),
            (4, r#"{"n":0}"#.to_owned())
        ],
        "three runs of one chain, then a new run of the id"
    );
    let runs: HashSet<&str> = events.iter().map(|e| e.run_id.as_str()).collect();
    assert_eq!(runs.len(), 4, "each event from its own run");

    // A body that is not a JSON object is refused: the task fails, nothing is published.
    let broken = unique("broken");
    client
        .start_workflow(StartOptions::new("broken", &broken, &q), &())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = client.handle(&broken).describe().await.unwrap();
        if let Some(f) = d.pending_workflow_task.and_then(|t| t.last_failure) {
            assert!(f.message.contains("must be a JSON object"), "{f:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bad command is refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(outbox_of(&engine, &broken).await.is_empty());
}

/// The outbox rows of `subject` in namespace `default`, read page by page: the test database
/// keeps the rows of earlier runs, so a subject's rows may lie past any one page.
async fn outbox_of(
    engine: &TestEngine,
    subject: &str,
) -> Vec<martix_engine::store::events::StoredEvent> {
    let mut rows = Vec::new();
    let mut after = 0;
    loop {
        let page = engine
            .engine
            .store()
            .list_outbox(Some("default"), after, 10_000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        rows.extend(page.into_iter().filter(|e| e.subject == subject));
    }
    rows
}

/// How often step one ran, by workflow id (tests run in parallel).
static STEP_ONE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

async fn step_one(ctx: ActivityContext, _: ()) -> Result<(), ActivityError> {
    STEP_ONE.lock().unwrap().push(ctx.workflow_id().to_owned());
    Ok(())
}

async fn noop(_ctx: ActivityContext, _: ()) -> Result<(), ActivityError> {
    Ok(())
}

async fn two_steps(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    ctx.activity_by_name::<_, ()>("step_one", &(), opts())
        .await?;
    ctx.sleep(Duration::from_millis(800)).await;
    ctx.activity_by_name::<_, ()>("step_two", &(), opts())
        .await?;
    Ok(())
}

async fn a_new_worker_resumes_without_rerunning_completed_steps(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("q");
    let make = || {
        let mut w = Worker::new(&engine.endpoint, WorkerOptions::new(&q)).unwrap();
        w.register_workflow("two_steps", two_steps)
            .register_activity("step_one", step_one)
            .register_activity("step_two", noop);
        w
    };
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let id = unique("resume");
    let first = RunningWorker::spawn(make());
    let run = client
        .start_workflow(StartOptions::new("two_steps", &id, &q), &())
        .await
        .unwrap();
    // Wait until step one is done and the workflow sleeps, then stop this worker.
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let d = run.describe().await.unwrap();
            if !d.pending_timers.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the workflow reaches its timer");
    first.stop().await;
    let _second = RunningWorker::spawn(make());
    tokio::time::timeout(Duration::from_secs(30), run.result::<()>())
        .await
        .unwrap()
        .unwrap();
    let runs = STEP_ONE
        .lock()
        .unwrap()
        .iter()
        .filter(|w| **w == id)
        .count();
    assert_eq!(runs, 1, "step one ran once");
}

async fn sticky_runs_get_only_new_events_and_evicted_ones_still_complete(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    for cache in [100, 0] {
        let q = unique("q");
        let running = RunningWorker::spawn(worker(&engine, &q, cache));
        let run = client
            .start_workflow(StartOptions::new("order", unique("o"), &q), &"sku")
            .await
            .unwrap();
        run.signal_by_name("approve", &"bob").await.unwrap();
        let out: String = tokio::time::timeout(Duration::from_secs(30), run.result())
            .await
            .unwrap()
            .unwrap();
        assert!(out.ends_with("approved by bob"));
        let history_len = run.history().await.unwrap().len() as u64;
        let stats = running.stats.clone();
        running.stop().await;
        let received = stats.events_received.load(Ordering::Relaxed);
        let hits = stats.cache_hits.load(Ordering::Relaxed);
        let misses = stats.cache_misses.load(Ordering::Relaxed);
        let refused = stats.decisions_refused.load(Ordering::Relaxed);
        if cache > 0 {
            // Both activities run at once: a decision made ahead with one result is refused
            // when the other result was recorded first, and that copy is dropped.
            assert_eq!(
                misses,
                1 + refused,
                "only the first task, and one after a refused decision, replay"
            );
            assert!(hits >= 1);
            assert!(
                received < history_len,
                "a cached run is sent only new events: received {received}, history {history_len}"
            );
        } else {
            assert_eq!(hits, 0);
            assert!(misses >= 3);
            assert!(
                received > history_len,
                "every task carried the full history"
            );
        }
    }
}

async fn runs_evicted_from_a_small_cache_still_complete(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let q = unique("q");
    // One cached run for three interleaved ones: sticky tasks keep finding their run evicted.
    let running = RunningWorker::spawn(worker(&engine, &q, 1));
    let mut runs = Vec::new();
    for i in 0..3 {
        let run = client
            .start_workflow(
                StartOptions::new("order", unique("o"), &q),
                &format!("sku-{i}"),
            )
            .await
            .unwrap();
        runs.push(run);
    }
    for run in &runs {
        run.signal_by_name("approve", &"dave").await.unwrap();
    }
    for (i, run) in runs.iter().enumerate() {
        let out: String = tokio::time::timeout(Duration::from_secs(60), run.result())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out, format!("reserved sku-{i}/1299/approved by dave"));
    }
    let stats = running.stats.clone();
    running.stop().await;
    assert!(
        stats.cache_misses.load(Ordering::Relaxed) > 3,
        "runs were evicted and replayed"
    );
}

/// What the saga's activities did, by workflow id (tests run in parallel).
static SAGA_LOG: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn saga_step(
    name: &'static str,
) -> impl Fn(ActivityContext, String) -> std::future::Ready<Result<String, ActivityError>> {
    move |ctx: ActivityContext, input: String| {
        SAGA_LOG
            .lock()
            .unwrap()
            .push((ctx.workflow_id().to_owned(), format!("{name}({input})")));
        std::future::ready(if name == "charge" {
            Err(ActivityError::non_retryable("Declined", "card declined"))
        } else {
            Ok(format!("{name}-ok"))
        })
    }
}

async fn saga_order(ctx: WorkflowContext, order_id: String) -> Result<String, WorkflowError> {
    let mut saga = martix_sdk::Saga::new();
    let r: String = ctx.activity_by_name("reserve", &order_id, opts()).await?;
    saga.add_by_name("release", &r, opts());
    let h: String = ctx.activity_by_name("hold", &order_id, opts()).await?;
    saga.add_by_name("unhold", &h, opts());
    match ctx
        .activity_by_name::<_, String>("charge", &order_id, opts())
        .await
    {
        Ok(_) => Ok("completed".into()),
        Err(cause) => {
            let failed = saga.compensate(&ctx).await;
            assert!(failed.is_empty(), "compensations succeed: {failed:?}");
            Ok(format!("compensated: {}", cause.failure.message))
        }
    }
}

async fn a_saga_compensates_in_reverse_order(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("q");
    let (_running, client) = start_worker(&engine, &q, |w| {
        w.register_workflow("saga_order", saga_order);
        for name in ["reserve", "hold", "charge", "release", "unhold"] {
            w.register_activity(name, saga_step(name));
        }
    })
    .await;
    let id = unique("saga");
    let run = client
        .start_workflow(StartOptions::new("saga_order", &id, &q), &"o-1")
        .await
        .unwrap();
    let out: String = tokio::time::timeout(Duration::from_secs(30), run.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, "compensated: card declined");
    let log: Vec<String> = SAGA_LOG
        .lock()
        .unwrap()
        .iter()
        .filter(|(w, _)| *w == id)
        .map(|(_, s)| s.clone())
        .collect();
    assert_eq!(
        log,
        [
            "reserve(o-1)",
            "hold(o-1)",
            "charge(o-1)",
            "unhold(hold-ok)",
            "release(reserve-ok)"
        ]
    );
}

static CANCELLED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

async fn long_running(ctx: ActivityContext, _: ()) -> Result<(), ActivityError> {
    for i in 0..600 {
        if ctx
            .heartbeat(&i)
            .await
            .map_err(|e| ActivityError::retryable("Heartbeat", e.to_string()))?
        {
            CANCELLED.lock().unwrap().push(ctx.workflow_id().to_owned());
            return Err(ActivityError::non_retryable("Canceled", "cancelled"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn with_deadline(ctx: WorkflowContext, _: ()) -> Result<&'static str, WorkflowError> {
    let mut work = ctx.activity_by_name::<_, ()>(
        "long_running",
        &(),
        opts().heartbeat_timeout(Duration::from_secs(5)),
    );
    let mut deadline = ctx.sleep(Duration::from_millis(300));
    let winner = futures::select! {
        _ = work => "work",
        () = deadline => "deadline",
    };
    Ok(winner)
}

async fn a_cancelled_activity_learns_it_at_its_heartbeat(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("q");
    let (_running, client) = start_worker(&engine, &q, |w| {
        w.register_workflow("with_deadline", with_deadline)
            .register_activity("long_running", long_running);
    })
    .await;
    let id = unique("deadline");
    let run = client
        .start_workflow(StartOptions::new("with_deadline", &id, &q), &())
        .await
        .unwrap();
    let out: String = tokio::time::timeout(Duration::from_secs(30), run.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, "deadline");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !CANCELLED.lock().unwrap().contains(&id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the activity saw its cancellation at a heartbeat");
}

async fn changed_order(ctx: WorkflowContext, sku: String) -> Result<String, WorkflowError> {
    // Changed incompatibly: checks stock before reserving.
    let _: String = ctx.activity_by_name("check_stock", &sku, opts()).await?;
    order(ctx, sku).await
}

async fn patched_order(ctx: WorkflowContext, sku: String) -> Result<String, WorkflowError> {
    if ctx.patched("check-stock") {
        let _: String = ctx.activity_by_name("check_stock", &sku, opts()).await?;
    }
    order(ctx, sku).await
}

async fn the_replayer_checks_changes_against_real_histories(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("q");
    let _running = RunningWorker::spawn(worker(&engine, &q, 100));
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let run = client
        .start_workflow(StartOptions::new("order", unique("o"), &q), &"sku")
        .await
        .unwrap();
    run.signal_by_name("approve", &"carol").await.unwrap();
    let _: String = tokio::time::timeout(Duration::from_secs(30), run.result())
        .await
        .unwrap()
        .unwrap();
    let history = run.history().await.unwrap();

    let mut same = Replayer::new();
    same.register_workflow("order", order);
    same.replay(&history)
        .expect("the code that made it replays it");
    // The same history as the JSON operators export (proto3 JSON of GetWorkflowHistory).
    let json = serde_json::to_string_pretty(&martix_sdk::proto::GetWorkflowHistoryResponse {
        events: history.clone(),
        next_page_token: Vec::new(),
    })
    .unwrap();
    assert!(
        json.contains("\"workflowExecutionStarted\""),
        "proto3 JSON names"
    );
    same.replay_json(&json).expect("replays from JSON");
    let err = same.replay_json("{\"events\": 3}").unwrap_err().to_string();
    assert!(err.contains("bad history"), "{err}");

    let mut changed = Replayer::new();
    changed.register_workflow("order", changed_order);
    let err = changed.replay(&history).unwrap_err().to_string();
    assert!(
        err.contains("non-determinism") && err.contains("check_stock"),
        "{err}"
    );

    let mut patched = Replayer::new();
    patched.register_workflow("order", patched_order);
    patched
        .replay(&history)
        .expect("the change behind patched() is accepted");
}

/// The workflow ids of runs, in order.
fn ids(runs: &[martix_sdk::WorkflowSummary]) -> Vec<String> {
    runs.iter().map(|r| r.workflow_id.clone()).collect()
}

async fn the_client_lists_in_pages_and_steers_runs_by_handle(backend: Backend) {
    use futures::TryStreamExt;
    use martix_sdk::proto::history_event::Attributes as A;
    use martix_sdk::{ClientError, ListOptions, PageToken, WorkflowStatus};
    let engine = TestEngine::start(backend, config()).await;
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let prefix = unique("listed");
    let q = unique("nobody");
    for i in 0..3 {
        client
            .start_workflow(StartOptions::new("idle", format!("{prefix}-{i}"), &q), &())
            .await
            .unwrap();
    }
    // Pages of two: every run once across them, the token kept as bytes in between.
    let options = ListOptions::new()
        .workflow_id_prefix(&prefix)
        .status(WorkflowStatus::Running)
        .page_size(2);
    let first = client.list_workflows(&options).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let kept = first
        .next_page_token
        .expect("a second page")
        .as_bytes()
        .to_vec();
    let second = client
        .list_workflows(&options.clone().page_token(PageToken::from_bytes(kept)))
        .await
        .unwrap();
    assert_eq!(second.items.len(), 1);
    assert!(second.next_page_token.is_none(), "the last page");
    let all = client.list_all_workflows(&options).await.unwrap();
    assert_eq!(ids(&all), [ids(&first.items), ids(&second.items)].concat());
    let mut sorted = ids(&all);
    sorted.sort();
    assert_eq!(
        sorted,
        (0..3).map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>()
    );
    // Filters: all must hold.
    let by_queue = ListOptions::new().task_queue(&q).workflow_type("idle");
    assert_eq!(client.list_all_workflows(&by_queue).await.unwrap().len(), 3);
    let later = by_queue
        .clone()
        .started_from(std::time::SystemTime::now() + Duration::from_secs(3600));
    assert!(client.list_all_workflows(&later).await.unwrap().is_empty());
    let other_type = ListOptions::new().task_queue(&q).workflow_type("busy");
    assert!(
        client
            .list_all_workflows(&other_type)
            .await
            .unwrap()
            .is_empty()
    );

    // One run steered by its handle, its history followed until it closes.
    let run = client.handle(format!("{prefix}-0"));
    let r = run.poll_result(Duration::ZERO).await.unwrap();
    assert!(!r.closed);
    assert_eq!(r.status, WorkflowStatus::Running);
    run.cancel("changed my mind").await.unwrap();
    assert!(run.describe().await.unwrap().cancel_requested);
    let follower = tokio::spawn({
        let run = run.clone();
        async move { run.follow_history().try_collect::<Vec<_>>().await }
    });
    run.signal_by_name("poke", &1).await.unwrap();
    run.terminate("done").await.unwrap();
    let followed = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the stream ends when the run closes")
        .unwrap()
        .unwrap();
    assert_eq!(followed, run.history().await.unwrap());
    assert!(matches!(
        followed.last().and_then(|e| e.attributes.as_ref()),
        Some(A::WorkflowExecutionTerminated(_))
    ));
    let r = run.poll_result(Duration::from_secs(5)).await.unwrap();
    assert!(r.closed);
    assert_eq!(r.status, WorkflowStatus::Terminated);
    let page = run.history_page(None).await.unwrap();
    assert_eq!(page.items, followed);
    assert!(page.next_page_token.is_none());

    // A workflow that does not exist is named, with the namespace asked in.
    let missing = client
        .handle("no-such-workflow")
        .describe()
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, ClientError::WorkflowNotFound { workflow_id, namespace, run_id }
            if workflow_id == "no-such-workflow" && namespace == "default" && run_id.is_empty()),
        "{missing:?}"
    );
    assert_eq!(
        missing.to_string(),
        "workflow 'no-such-workflow' not found in namespace 'default'"
    );

    // Namespaces: created once, listed, and a run of one is not in another.
    let ns = unique("ns");
    assert!(client.create_namespace(&ns).await.unwrap());
    assert!(
        !client.create_namespace(&ns).await.unwrap(),
        "exists already"
    );
    assert!(client.list_namespaces().await.unwrap().contains(&ns));
    let shop = client.clone().with_namespace(&ns);
    assert_eq!(shop.namespace(), ns);
    let elsewhere = shop
        .handle(format!("{prefix}-1"))
        .terminate("wrong namespace")
        .await
        .unwrap_err();
    assert_eq!(
        elsewhere.to_string(),
        format!("workflow '{prefix}-1' not found in namespace '{ns}'")
    );
}

async fn succeeds_second(ctx: ActivityContext, _: ()) -> Result<i32, ActivityError> {
    if ctx.attempt() < 2 {
        return Err(ActivityError::retryable("NotYet", "not yet"));
    }
    Ok(ctx.attempt())
}

/// An activity that fails its first attempt and would wait an hour for the next.
async fn patient(ctx: WorkflowContext, _: ()) -> Result<i32, WorkflowError> {
    let opts =
        ActivityOptions::new(Duration::from_secs(10)).initial_interval(Duration::from_secs(3600));
    Ok(ctx.activity_by_name("succeeds_second", &(), opts).await?)
}

/// Waits until the latest run of `run`'s id has an activity waiting for its next attempt.
async fn backing_off(run: &martix_sdk::WorkflowHandle) -> martix_sdk::WorkflowDescription {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = run.describe().await.unwrap();
        if d.pending_activities
            .iter()
            .any(|a| a.state == martix_sdk::client::PendingActivityState::BackingOff)
        {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the activity never waited for its next attempt: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_operator_resets_a_run_and_retries_its_activity_now(backend: Backend) {
    use martix_sdk::{ClientError, ResetPoint, WorkflowStatus};
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("patient");
    let (_running, client) = start_worker(&engine, &q, |w| {
        w.register_workflow("patient", patient)
            .register_activity("succeeds_second", succeeds_second);
    })
    .await;
    let id = unique("patient");
    let first = client
        .start_workflow(StartOptions::new("patient", &id, &q), &())
        .await
        .unwrap();
    backing_off(&first).await;
    // A new run from the first workflow task: the old one is terminated.
    let second = first
        .reset(ResetPoint::First, "try from scratch")
        .await
        .unwrap();
    assert_eq!(second.workflow_id, id);
    assert_ne!(second.run_id, first.run_id);
    let old = client
        .run_handle(&id, &first.run_id)
        .poll_result(Duration::ZERO)
        .await
        .unwrap();
    assert!(old.closed);
    assert_eq!(old.status, WorkflowStatus::Terminated);
    let latest = client.handle(&id);
    backing_off(&latest).await;
    // An activity id that does not wait is the engine's message, not a missing workflow.
    let none = latest
        .retry_activities(Some("no-such-activity"), false)
        .await
        .unwrap_err();
    assert!(
        matches!(&none, ClientError::Status(s) if s.code() == tonic::Code::NotFound),
        "{none:?}"
    );
    // Run now instead of in an hour.
    let retried = latest.retry_activities(None, false).await.unwrap();
    assert_eq!(retried.len(), 1, "{retried:?}");
    let attempt: i32 = tokio::time::timeout(Duration::from_secs(30), second.result())
        .await
        .expect("the retried activity completes the new run")
        .unwrap();
    assert_eq!(attempt, 2);
}

on_both_backends!(
    the_client_lists_in_pages_and_steers_runs_by_handle,
    an_operator_resets_a_run_and_retries_its_activity_now,
    a_decision_made_ahead_sees_the_time_history_records,
    a_signal_during_an_activity_reaches_a_workflow_that_decides_ahead,
    a_decision_the_engine_refuses_is_made_again_in_a_workflow_task,
    a_decision_made_ahead_can_continue_as_new,
    event_sequences_go_on_across_continue_as_new_and_a_reused_id,
    activities_timers_and_signals,
    retries_reach_the_workflow_only_as_a_final_outcome,
    continue_as_new_runs_to_the_last_run,
    a_new_worker_resumes_without_rerunning_completed_steps,
    sticky_runs_get_only_new_events_and_evicted_ones_still_complete,
    runs_evicted_from_a_small_cache_still_complete,
    a_saga_compensates_in_reverse_order,
    a_cancelled_activity_learns_it_at_its_heartbeat,
    the_replayer_checks_changes_against_real_histories,
);
