//! Updates over the real engine and gRPC, on PostgreSQL and SQLite: a validated update is
//! recorded and answered with its handler's result (the handler runs an activity), a rejected
//! one leaves no trace, an update id asked again is the same update, updates racing signals
//! are each applied once, and update-with-start starts the run or updates the running one.

use futures::StreamExt;
use martix_engine::EngineConfig;
use martix_sdk::proto::history_event::Attributes as A;
use martix_sdk::{
    ActivityContext, ActivityError, ActivityOptions, Client, ClientError, StartOptions, Update,
    Worker, WorkerOptions, Workflow, WorkflowContext, WorkflowError, WorkflowHandle, WorkflowState,
};
use martix_tests::{Backend, TestEngine, on_both_backends, unique};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Account;
impl Workflow for Account {
    const NAME: &'static str = "account";
    type Input = ();
    type Output = i64;
}

/// Adds a positive amount, after activity `audit` saw it; answers the new balance.
struct Deposit;
impl Update for Deposit {
    const NAME: &'static str = "deposit";
    type Args = i64;
    type Output = i64;
}

/// Keeps a balance that only `deposit` changes; `noise` signals change nothing, `close` ends
/// it with the balance.
async fn account(ctx: WorkflowContext, (): ()) -> Result<i64, WorkflowError> {
    let balance = WorkflowState::new(0i64);
    ctx.on_update(
        Deposit,
        &balance,
        |_, n| {
            if *n > 0 {
                Ok(())
            } else {
                Err(format!("{n} is not a positive amount"))
            }
        },
        |ctx, balance, n| async move {
            let seen: i64 = ctx
                .activity_by_name("audit", &n, ActivityOptions::new(Duration::from_secs(10)))
                .await?;
            Ok(balance.update(|b| {
                *b += seen;
                *b
            }))
        },
    );
    let mut noise = ctx.signal_by_name::<()>("noise");
    let mut close = ctx.signal_by_name::<()>("close");
    loop {
        futures::select! {
            _ = noise.next() => {}
            _ = close.next() => break,
        }
    }
    Ok(balance.get())
}

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.long_poll_timeout = Duration::from_secs(5);
    c.recheck_interval = Duration::from_millis(200);
    c
}

fn run_worker(engine: &TestEngine, queue: &str) -> CancellationToken {
    let mut w = Worker::new(&engine.endpoint, WorkerOptions::new(queue)).unwrap();
    w.workflow(Account, account);
    w.register_activity("audit", |_: ActivityContext, n: i64| async move {
        Ok::<_, ActivityError>(n)
    });
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

/// Updates `run` until its first workflow task completed (its handler registered).
async fn first_deposit(run: &WorkflowHandle, n: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match run.update(Deposit, &n).await {
            Ok(b) => return b,
            Err(e)
                if e.to_string()
                    .contains("has not completed a workflow task yet") => {}
            Err(e) => panic!("update failed: {e}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "no task completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(events: &[martix_sdk::proto::HistoryEvent], accepted: bool) -> usize {
    events
        .iter()
        .filter(|e| match &e.attributes {
            Some(A::WorkflowUpdateAccepted(_)) => accepted,
            Some(A::WorkflowUpdateCompleted(_)) => !accepted,
            _ => false,
        })
        .count()
}

async fn an_update_is_validated_recorded_and_answered(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("acct");
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let _worker = run_worker(&engine, &q).drop_guard();
    let run = client
        .start(Account, StartOptions::for_id(unique("acct"), &q), &())
        .await
        .unwrap();
    assert_eq!(first_deposit(&run, 5).await, 5);
    assert_eq!(run.update(Deposit, &7).await.unwrap(), 12);

    // Refused by the validator: nothing written.
    let before = run.history().await.unwrap().len();
    let no = run.update(Deposit, &-1).await.unwrap_err();
    assert_eq!(code(&no), tonic::Code::FailedPrecondition, "{no}");
    assert!(
        no.to_string()
            .contains("update 'deposit' rejected: -1 is not a positive amount"),
        "{no}"
    );
    let unknown = run
        .update_by_name::<_, i64>("withdraw", &1)
        .await
        .unwrap_err();
    assert_eq!(code(&unknown), tonic::Code::InvalidArgument, "{unknown}");
    assert!(
        unknown.to_string().contains("(it handles: deposit)"),
        "{unknown}"
    );
    assert_eq!(run.history().await.unwrap().len(), before, "no trace");

    // The same id again is the same update: answered, not applied twice.
    assert_eq!(
        run.update_with_id::<_, i64>("once", "deposit", &3)
            .await
            .unwrap(),
        15
    );
    assert_eq!(
        run.update_with_id::<_, i64>("once", "deposit", &3)
            .await
            .unwrap(),
        15
    );
    let reused = run
        .update_with_id::<_, i64>("once", "deposit", &4)
        .await
        .unwrap_err();
    assert_eq!(code(&reused), tonic::Code::AlreadyExists, "{reused}");
    let events = run.history().await.unwrap();
    assert_eq!((count(&events, true), count(&events, false)), (3, 3));

    run.signal_by_name("close", &()).await.unwrap();
    assert_eq!(run.result::<i64>().await.unwrap(), 15);
    let closed = run.update(Deposit, &1).await.unwrap_err();
    assert_eq!(code(&closed), tonic::Code::FailedPrecondition, "{closed}");
    assert!(closed.to_string().contains("is closed"), "{closed}");
}

on_both_backends!(an_update_is_validated_recorded_and_answered);

async fn updates_racing_signals_are_each_applied_once(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("acct");
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let _worker = run_worker(&engine, &q).drop_guard();
    let run = client
        .start(Account, StartOptions::for_id(unique("acct"), &q), &())
        .await
        .unwrap();
    first_deposit(&run, 1).await;
    let updates = (1..=8).map(|n| {
        let run = run.clone();
        async move { run.update(Deposit, &n).await.unwrap() }
    });
    let signals = (0..8).map(|_| {
        let run = run.clone();
        async move { run.signal_by_name("noise", &()).await.unwrap() }
    });
    let (answers, _) = futures::join!(
        futures::future::join_all(updates),
        futures::future::join_all(signals)
    );
    assert_eq!(answers.iter().max(), Some(&37), "1 + (1 + ... + 8)");
    run.signal_by_name("close", &()).await.unwrap();
    assert_eq!(run.result::<i64>().await.unwrap(), 37);
    assert_eq!(count(&run.history().await.unwrap(), true), 9);
}

on_both_backends!(updates_racing_signals_are_each_applied_once);

async fn update_with_start_starts_the_run_or_updates_the_running_one(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("acct");
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let _worker = run_worker(&engine, &q).drop_guard();
    let id = unique("acct");
    let (run, balance) = client
        .update_with_start(Account, StartOptions::for_id(&id, &q), &(), Deposit, &4)
        .await
        .unwrap();
    assert!(run.started);
    assert_eq!(balance, 4);
    let (again, balance) = client
        .update_with_start(Account, StartOptions::for_id(&id, &q), &(), Deposit, &6)
        .await
        .unwrap();
    assert!(!again.started, "it was running: updated");
    assert_eq!(balance, 10);
    assert_eq!(again.run_id, run.run_id);

    // Sent with a start, an update the validator refuses is recorded as refused: the run
    // started all the same.
    let other = unique("acct");
    let e = client
        .update_with_start(Account, StartOptions::for_id(&other, &q), &(), Deposit, &-2)
        .await;
    match e.map(|(_, balance)| balance) {
        Ok(balance) => panic!("accepted, balance {balance}"),
        Err(e) => match e {
            ClientError::UpdateFailed { name, failure } => {
                assert_eq!(name, "deposit");
                assert_eq!(failure.error_type, "Rejected");
                assert!(failure.message.contains("-2 is not a positive amount"));
            }
            other => panic!("{other:?}"),
        },
    }
    let started = client.handle(&other);
    assert_eq!(started.update(Deposit, &1).await.unwrap(), 1);
}

on_both_backends!(update_with_start_starts_the_run_or_updates_the_running_one);
