//! Pausing and resuming runs, on PostgreSQL and SQLite: while paused nothing of a run is handed
//! out (no workflow task, no activity attempt), what was running finishes and is recorded,
//! timers coming due and signals are recorded; resumed, every run completes.

use futures::StreamExt;
use martix_engine::EngineConfig;
use martix_proto::v1::history_event::Attributes as A;
use martix_sdk::{
    ActivityContext, ActivityError, ActivityOptions, Client, StartOptions, Worker, WorkerOptions,
    WorkflowContext, WorkflowError, WorkflowStatus,
};
use martix_tests::{Backend, TestEngine, on_both_backends, unique};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.long_poll_timeout = Duration::from_secs(5);
    c.recheck_interval = Duration::from_millis(200);
    c.timer_poll_interval = Duration::from_millis(100);
    c
}

fn opts() -> ActivityOptions {
    ActivityOptions::new(Duration::from_secs(10)).initial_interval(Duration::from_millis(50))
}

/// When each activity ran, by name.
#[derive(Default)]
struct Calls(Mutex<Vec<(String, Instant)>>);

impl Calls {
    fn record(&self, name: &str) {
        self.0
            .lock()
            .unwrap()
            .push((name.to_owned(), Instant::now()));
    }
    fn count(&self, name: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == name)
            .count()
    }
    fn first(&self, name: &str) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == name)
            .map(|c| c.1)
            .min()
    }
}

/// Step one, a durable sleep, a signal if one came, step two.
async fn paced(ctx: WorkflowContext, sleep_ms: u64) -> Result<String, WorkflowError> {
    let one: String = ctx.activity_by_name("one", &(), opts()).await?;
    ctx.sleep(Duration::from_millis(sleep_ms)).await;
    let note = if ctx.has_signal("note") {
        ctx.signal_by_name::<String>("note")
            .next()
            .await
            .expect("a signal arrived")?
    } else {
        String::new()
    };
    let two: String = ctx.activity_by_name("two", &(), opts()).await?;
    Ok(format!("{one}+{two}{note}"))
}

struct Running {
    client: Client,
    calls: Arc<Calls>,
    /// Step one waits for this once told to (`hold_one`).
    release_one: Arc<Notify>,
    one_started: Arc<Notify>,
    hold_one: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(engine: &TestEngine, q: &str) -> Running {
    let calls = Arc::new(Calls::default());
    let release_one = Arc::new(Notify::new());
    let one_started = Arc::new(Notify::new());
    let hold_one = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut w = Worker::new(&engine.endpoint, WorkerOptions::new(q)).unwrap();
    let (c1, c2) = (calls.clone(), calls.clone());
    let (release, started, hold) = (release_one.clone(), one_started.clone(), hold_one.clone());
    w.register_workflow("paced", paced)
        .register_activity("one", move |_: ActivityContext, (): ()| {
            let (calls, release, started, hold) =
                (c1.clone(), release.clone(), started.clone(), hold.clone());
            async move {
                calls.record("one");
                if hold.load(std::sync::atomic::Ordering::SeqCst) {
                    started.notify_one();
                    release.notified().await;
                }
                Ok::<_, ActivityError>("1".to_owned())
            }
        })
        .register_activity("two", move |_: ActivityContext, (): ()| {
            let calls = c2.clone();
            async move {
                calls.record("two");
                Ok::<_, ActivityError>("2".to_owned())
            }
        });
    let shutdown = CancellationToken::new();
    tokio::spawn(w.run(shutdown.clone()));
    Running {
        client: Client::connect(engine.endpoint.clone()).await.unwrap(),
        calls,
        release_one,
        one_started,
        hold_one,
        shutdown,
    }
}

/// Workflow tasks completed in a run's history.
async fn completed_tasks(client: &Client, id: &str) -> usize {
    let history = client.handle(id).history().await.unwrap();
    history
        .iter()
        .filter(|e| matches!(e.attributes, Some(A::WorkflowTaskCompleted(_))))
        .count()
}

async fn fifty_paused_runs_wait_out_their_timers_and_complete_when_resumed(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("paced");
    let r = start(&engine, &q).await;
    let prefix = unique("p");
    let ids: Vec<String> = (0..50).map(|i| format!("{prefix}-{i}")).collect();
    for id in &ids {
        r.client
            .start_workflow(StartOptions::new("paced", id, &q), &5_000u64)
            .await
            .unwrap();
    }
    assert!(
        !r.client.handle(&ids[0]).resume("early").await.unwrap(),
        "resuming a run not paused changes nothing"
    );
    // Each run is paused once it sleeps (its first step ran and was taken in), its timer 5 s
    // away.
    let mut tasks_at_pause = vec![None; ids.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while tasks_at_pause.iter().any(Option::is_none) {
        for (id, at_pause) in ids.iter().zip(&mut tasks_at_pause) {
            if at_pause.is_some() {
                continue;
            }
            let d = r.client.handle(id).describe().await.unwrap();
            if !d.pending_timers.is_empty() {
                assert!(r.client.handle(id).pause("stock count").await.unwrap());
                *at_pause = Some(completed_tasks(&r.client, id).await);
            }
        }
        assert!(Instant::now() < deadline, "runs never reached their sleep");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !r.client.handle(&ids[0]).pause("again").await.unwrap(),
        "pausing a paused run changes nothing"
    );
    r.client
        .handle(&ids[0])
        .signal_by_name("note", &" noted")
        .await
        .unwrap();
    // The timers come due while paused and are recorded.
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let history = r.client.handle(id).history().await.unwrap();
            if history
                .iter()
                .any(|e| matches!(e.attributes, Some(A::TimerFired(_))))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the timer of {id} never came due"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tasks_at_pause: Vec<usize> = tasks_at_pause.into_iter().map(Option::unwrap).collect();
    assert_eq!(r.calls.count("two"), 0, "no activity ran while paused");
    for (id, before) in ids.iter().zip(&tasks_at_pause) {
        assert_eq!(
            completed_tasks(&r.client, id).await,
            *before,
            "no workflow task of {id} ran while paused"
        );
    }
    let d = r.client.handle(&ids[0]).describe().await.unwrap();
    let info = d.summary;
    assert_eq!(info.status, WorkflowStatus::Running);
    let pause = info.paused.expect("paused");
    assert_eq!(pause.reason, "stock count");
    assert!(pause.since.is_some() && !pause.by.is_empty());
    let listed = r
        .client
        .list_all_workflows(
            &martix_sdk::ListOptions::new()
                .status(WorkflowStatus::Running)
                .workflow_id_prefix(&prefix),
        )
        .await
        .unwrap();
    assert_eq!(
        listed.iter().filter(|w| w.paused.is_some()).count(),
        50,
        "list shows every paused run"
    );

    let resumed_at = Instant::now();
    for id in &ids {
        assert!(r.client.handle(id).resume("counted").await.unwrap());
    }
    for (i, id) in ids.iter().enumerate() {
        let out: String = r.client.handle(id).result().await.unwrap();
        let expected = if i == 0 { "1+2 noted" } else { "1+2" };
        assert_eq!(out, expected);
    }
    assert_eq!(r.calls.count("two"), 50);
    assert!(r.calls.first("two").unwrap() >= resumed_at);
}

async fn a_task_running_when_paused_finishes_and_nothing_follows_until_resumed(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("paced");
    let r = start(&engine, &q).await;
    r.hold_one.store(true, std::sync::atomic::Ordering::SeqCst);
    let id = unique("held");
    let handle = r
        .client
        .start_workflow(StartOptions::new("paced", &id, &q), &10u64)
        .await
        .unwrap();
    r.one_started.notified().await;
    assert!(r.client.handle(&id).pause("audit").await.unwrap());
    r.release_one.notify_one();
    // The result is recorded; the workflow task that would deliver it waits.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let history = r.client.handle(&id).history().await.unwrap();
        if history
            .iter()
            .any(|e| matches!(e.attributes, Some(A::ActivityTaskCompleted(_))))
        {
            assert!(
                matches!(
                    history.last().and_then(|e| e.attributes.as_ref()),
                    Some(A::WorkflowTaskScheduled(_))
                ),
                "nothing after the result but the parked workflow task"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the running step's result is recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(completed_tasks(&r.client, &id).await, 1, "only the first");
    assert_eq!(r.calls.count("two"), 0);
    assert!(r.client.handle(&id).resume("").await.unwrap());
    let out: String = handle.result().await.unwrap();
    assert_eq!(out, "1+2");
    let err = r.client.handle(&id).pause("late").await.unwrap_err();
    assert!(
        err.to_string().contains("closed"),
        "a closed run cannot be paused: {err}"
    );
}

async fn a_pause_needs_a_reason(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("paced");
    let r = start(&engine, &q).await;
    let id = unique("r");
    r.client
        .start_workflow(StartOptions::new("paced", &id, &q), &10u64)
        .await
        .unwrap();
    let err = r.client.handle(&id).pause("  ").await.unwrap_err();
    assert!(err.to_string().contains("reason"), "{err}");
    let d = r.client.handle(&id).describe().await.unwrap();
    assert!(d.summary.paused.is_none(), "nothing changed");
}

/// A reset of a paused workflow keeps it paused: the new run's tasks wait for a resume.
async fn a_paused_workflow_reset_stays_paused(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("paced");
    let r = start(&engine, &q).await;
    let id = unique("reset");
    r.client
        .start_workflow(StartOptions::new("paced", &id, &q), &60_000u64)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while r
        .client
        .handle(&id)
        .describe()
        .await
        .unwrap()
        .pending_timers
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the run never sleeps");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(r.client.handle(&id).pause("investigating").await.unwrap());
    let new = r
        .client
        .handle(&id)
        .reset(martix_sdk::ResetPoint::First, "replay from the start")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let d = new.describe().await.unwrap();
    let pause = d.summary.paused.as_ref().expect("still paused");
    assert_eq!(pause.reason, "investigating");
    assert!(
        d.pending_workflow_task.as_ref().is_some_and(|t| !t.started),
        "its first workflow task waits"
    );
    assert_eq!(r.calls.count("one"), 1, "the new run ran nothing");
    assert!(new.resume("done").await.unwrap());
    tokio::time::timeout(Duration::from_secs(30), async {
        while new.describe().await.unwrap().pending_timers.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("resumed, it runs to its sleep");
}

on_both_backends!(
    fifty_paused_runs_wait_out_their_timers_and_complete_when_resumed,
    a_task_running_when_paused_finishes_and_nothing_follows_until_resumed,
    a_pause_needs_a_reason,
    a_paused_workflow_reset_stays_paused,
);
