//! Queries over the real engine and gRPC, on PostgreSQL and SQLite: a run's handler answers
//! from its state while it runs and after it closed, a worker that never saw the run answers by
//! replaying it, nothing is written, and every way a query can fail says why.

use futures::StreamExt;
use martix_engine::EngineConfig;
use martix_sdk::{
    Client, ClientError, Query, StartOptions, Worker, WorkerOptions, WorkflowContext,
    WorkflowError, WorkflowHandle, WorkflowState,
};
use martix_tests::{Backend, TestEngine, on_both_backends, unique};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many `add` signals the tally took, times the multiplier asked.
struct Count;
impl Query for Count {
    const NAME: &'static str = "count";
    type Args = u32;
    type Output = u32;
}

/// Counts `add` signals until `n` came, then completes with the count. Its handler `sneaky`
/// tries to publish an event (refused), `broken` panics.
async fn tally(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
    let count = WorkflowState::new(0u32);
    ctx.on_query(Count, &count, |c, times| c * times);
    let sneaky = ctx.clone();
    ctx.on_query_by_name("sneaky", &count, move |_, ()| {
        sneaky.publish("tally.asked", &());
        0u32
    });
    ctx.on_query_by_name("broken", &count, |_, ()| -> u32 {
        panic!("no answer today")
    });
    let mut adds = ctx.signal_by_name::<()>("add");
    while count.get() < n {
        adds.next().await;
        count.update(|c| *c += 1);
    }
    Ok(count.get())
}

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.long_poll_timeout = Duration::from_secs(5);
    c.recheck_interval = Duration::from_millis(200);
    c.query_timeout = Duration::from_secs(2);
    c
}

/// A worker of `queue` running `tally`, until the token is cancelled.
fn run_worker(engine: &TestEngine, queue: &str) -> CancellationToken {
    let mut w = Worker::new(&engine.endpoint, WorkerOptions::new(queue)).unwrap();
    w.register_workflow("tally", tally);
    let stop = CancellationToken::new();
    tokio::spawn(w.run(stop.clone()));
    stop
}

fn code(e: &ClientError) -> tonic::Code {
    match e {
        ClientError::Status(s) => s.code(),
        other => panic!("expected a status, got {other:?}"),
    }
}

/// Asks `count` (times 1) until it answers `want`: the signals' workflow task completes a
/// moment after the signal.
async fn count_reaches(run: &WorkflowHandle, want: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match run.query(Count, &1).await {
            Ok(n) if n == want => return,
            Ok(_) => {}
            Err(e)
                if e.to_string()
                    .contains("has not completed a workflow task yet") => {}
            Err(e) => panic!("query failed: {e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "count never reached {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_query_answers_from_the_runs_state_open_and_closed(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("tally");
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let id = unique("tally");

    // No workflow task completed yet (no worker): no handler can be registered.
    let run = client
        .start_workflow(StartOptions::new("tally", &id, &q), &3u32)
        .await
        .unwrap();
    let e = run.query(Count, &1).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::FailedPrecondition, "{e}");
    assert!(
        e.to_string().contains("has not completed a workflow task"),
        "{e}"
    );

    let worker = run_worker(&engine, &q);
    count_reaches(&run, 0).await;
    run.signal_by_name("add", &()).await.unwrap();
    run.signal_by_name("add", &()).await.unwrap();
    count_reaches(&run, 2).await;
    assert_eq!(
        run.query(Count, &10).await.unwrap(),
        20,
        "the arguments reach the handler"
    );
    // A paused run answers: a query leases nothing.
    assert!(run.pause("looking at it").await.unwrap());
    assert_eq!(run.query(Count, &1).await.unwrap(), 2);
    assert!(run.resume("seen").await.unwrap());

    // Nothing a query does is written.
    let before = run.history().await.unwrap().len();
    let bad_args = run
        .query_by_name::<_, u32>("count", &"ten")
        .await
        .unwrap_err();
    assert_eq!(code(&bad_args), tonic::Code::InvalidArgument, "{bad_args}");
    assert!(bad_args.to_string().contains("do not decode"), "{bad_args}");
    let unknown = run.query_by_name::<_, u32>("total", &()).await.unwrap_err();
    assert_eq!(code(&unknown), tonic::Code::InvalidArgument, "{unknown}");
    assert!(
        unknown
            .to_string()
            .contains("it answers: broken, count, sneaky"),
        "{unknown}"
    );
    let sneaky = run
        .query_by_name::<_, u32>("sneaky", &())
        .await
        .unwrap_err();
    assert_eq!(code(&sneaky), tonic::Code::FailedPrecondition, "{sneaky}");
    assert!(
        sneaky
            .to_string()
            .contains("issued PublishEvent(tally.asked)"),
        "{sneaky}"
    );
    let broken = run
        .query_by_name::<_, u32>("broken", &())
        .await
        .unwrap_err();
    assert_eq!(code(&broken), tonic::Code::FailedPrecondition, "{broken}");
    assert!(broken.to_string().contains("no answer today"), "{broken}");
    assert_eq!(
        run.history().await.unwrap().len(),
        before,
        "queries wrote nothing"
    );

    run.signal_by_name("add", &()).await.unwrap();
    let out: u32 = tokio::time::timeout(Duration::from_secs(20), run.result())
        .await
        .expect("the tally completes")
        .unwrap();
    assert_eq!(out, 3);
    assert_eq!(
        run.query(Count, &1).await.unwrap(),
        3,
        "a closed run answers"
    );

    // Without a worker of the queue nobody answers: the caller hears it within the timeout.
    worker.cancel();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let e = run.query(Count, &1).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::DeadlineExceeded, "{e}");
    assert!(
        e.to_string()
            .contains(&format!("no worker polling task queue '{q}' on this node")),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // A worker that never ran the run answers by replaying it.
    let _fresh = run_worker(&engine, &q).drop_guard();
    assert_eq!(run.query(Count, &2).await.unwrap(), 6);
    let missing = client
        .handle(unique("nobody"))
        .query(Count, &1)
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ClientError::WorkflowNotFound { .. }),
        "{missing}"
    );
}

on_both_backends!(a_query_answers_from_the_runs_state_open_and_closed);
