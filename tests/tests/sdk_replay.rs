//! One replay, two callers: a run's exported history replays in the `Replayer` exactly as the
//! worker ran it (same `ctx.info()`, same `ctx.random()`), across continue-as-new, against the
//! real engine on PostgreSQL and SQLite; a changed workflow still reports the divergence.

use martix_engine::EngineConfig;
use martix_sdk::proto::history_event::Attributes as A;
use martix_sdk::{
    Client, Replayer, StartOptions, Worker, WorkerOptions, WorkflowContext, WorkflowError,
    WorkflowHistory,
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

/// The event type the workflow publishes with what it read of its run: its ids and a random
/// number. Event types are command keys, so a replay that gave the code other values would
/// issue another command than history holds.
fn what_it_saw(ctx: &WorkflowContext, n: u32) -> String {
    let info = ctx.info();
    format!(
        "seen.{n}.{}.{}.{}.{}.{}.{}",
        info.namespace,
        info.workflow_id,
        info.run_id,
        info.first_run_id,
        info.continued_from_run_id.as_deref().unwrap_or("none"),
        ctx.random() % 1_000_000
    )
}

/// Renews `n` more times, each renewal a new run.
async fn renewing(ctx: WorkflowContext, n: u32) -> Result<String, WorkflowError> {
    let seen = what_it_saw(&ctx, n);
    ctx.publish(&seen, &serde_json::json!({ "uuid": ctx.uuid() }));
    ctx.sleep(Duration::from_millis(10)).await;
    if n == 0 {
        return Ok(seen);
    }
    Err(ctx.continue_as_new(&(n - 1)))
}

/// `renewing`, changed incompatibly: it draws one more random number before publishing.
async fn renewing_changed(ctx: WorkflowContext, n: u32) -> Result<String, WorkflowError> {
    let _ = ctx.random();
    renewing(ctx, n).await
}

/// The type of the event the run published.
fn published(history: &WorkflowHistory) -> String {
    history
        .events
        .iter()
        .find_map(|e| match &e.attributes {
            Some(A::EventPublished(p)) => Some(p.event_type.clone()),
            _ => None,
        })
        .expect("the run published what it saw")
}

async fn a_continued_run_replays_clean_from_its_exported_history(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("q");
    let mut w = Worker::new(&engine.endpoint, WorkerOptions::new(&q)).unwrap();
    w.register_workflow("renewing", renewing);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(w.run(shutdown));
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let id = unique("renew");
    let first = client
        .start_workflow(StartOptions::new("renewing", &id, &q), &2u32)
        .await
        .unwrap();
    let last_seen: String = tokio::time::timeout(Duration::from_secs(30), first.result())
        .await
        .expect("the third run completes")
        .unwrap();

    // The latest run, exported as the CLI exports it, names its run and the runs before it.
    let last = client.handle(&id).export_history().await.unwrap();
    assert_eq!(last.namespace, "default");
    assert_eq!(last.workflow_id, id);
    assert_eq!(last.first_run_id, first.run_id);
    assert!(!last.run_id.is_empty() && last.run_id != first.run_id);
    let middle_id = last
        .continued_from_run_id
        .clone()
        .expect("the last run continues the middle one");
    // What the worker gave the code: the run's true ids.
    assert_eq!(published(&last), last_seen);
    assert!(
        last_seen.starts_with(&format!(
            "seen.0.default.{id}.{}.{}.{middle_id}.",
            last.run_id, first.run_id
        )),
        "{last_seen}"
    );

    let mut same = Replayer::new();
    same.register_workflow("renewing", renewing);
    let json = serde_json::to_string_pretty(&last).unwrap();
    same.replay_json(&json)
        .expect("the unchanged code replays the continued run from its export");
    same.replay_history(&last).unwrap();
    let middle = client
        .run_handle(&id, &middle_id)
        .export_history()
        .await
        .unwrap();
    assert_eq!(
        middle.continued_from_run_id.as_deref(),
        Some(&*first.run_id)
    );
    same.replay_history(&middle)
        .expect("and the middle run from its own");
    let opening = client
        .run_handle(&id, &first.run_id)
        .export_history()
        .await
        .unwrap();
    assert_eq!(opening.continued_from_run_id, None);
    same.replay_history(&opening).unwrap();
    // Events without their run's ids (an older export) of a run that continues no other:
    // the fallbacks are its own ids but for the workflow id, which the code reads.
    let err = same.replay(&opening.events).unwrap_err().to_string();
    assert!(err.contains("non-determinism"), "{err}");

    // Without its ids, the continued run cannot be replayed as it ran, and the report says why.
    let err = same.replay(&last.events).unwrap_err().to_string();
    assert!(
        err.contains("non-determinism") && err.contains("does not name its run"),
        "{err}"
    );

    // A changed workflow still diverges, and the report names the event.
    let mut changed = Replayer::new();
    changed.register_workflow("renewing", renewing_changed);
    let err = changed.replay_json(&json).unwrap_err().to_string();
    assert!(
        err.contains("non-determinism") && err.contains("PublishEvent(seen.0."),
        "{err}"
    );
}

on_both_backends!(a_continued_run_replays_clean_from_its_exported_history);
