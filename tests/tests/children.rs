//! Child workflows over the real engine and gRPC, on PostgreSQL and SQLite: a parent awaits a
//! child's start and result and history links them both ways, an id in use reaches the parent
//! as a typed error, a parent's close terminates or abandons its children by their policy, a
//! parent cancels a child, and a parent's cancellation reaches a child whose policy asks for it.

use futures::StreamExt;
use martix_engine::EngineConfig;
use martix_sdk::proto::history_event::Attributes as A;
use martix_sdk::{
    ChildWorkflowError, ChildWorkflowOptions, Client, ClientError, ParentClosePolicy, StartOptions,
    Worker, WorkerOptions, WorkflowContext, WorkflowError, WorkflowHandle, WorkflowStatus,
};
use martix_tests::{Backend, TestEngine, on_both_backends, unique};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Waits for a `go` signal and answers twice its input, or ends cancelled when asked to.
async fn child(ctx: WorkflowContext, n: u32) -> Result<u32, WorkflowError> {
    let mut go = ctx.signal_by_name::<()>("go");
    futures::select! {
        _ = go.next() => Ok(n * 2),
        () = ctx.cancelled() => Err(WorkflowError::Canceled),
    }
}

/// What the parent does with its children.
#[derive(Serialize, Deserialize)]
enum Plan {
    /// Starts child `id`, waits for it to run, then for its result.
    Await { id: String },
    /// Starts child `id`, whose id is in use: says "taken" when told so.
    Taken { id: String },
    /// Starts `<id>-a` (terminated if the parent closes first) and `<id>-b` (abandoned), then
    /// ends.
    CloseEarly { id: String },
    /// Starts child `id`, asks it to cancel, says how it ended.
    CancelChild { id: String },
    /// Starts child `id` (asked to cancel if the parent closes first), then waits to be
    /// cancelled.
    WaitForCancel { id: String },
}

async fn parent(ctx: WorkflowContext, plan: Plan) -> Result<String, WorkflowError> {
    let start = |id: &str, policy| {
        ctx.child_workflow_by_name::<_, u32>(
            "child",
            &21u32,
            ChildWorkflowOptions::default()
                .workflow_id(id)
                .parent_close_policy(policy),
        )
    };
    match plan {
        Plan::Await { id } => {
            let started = start(&id, ParentClosePolicy::Terminate).start().await?;
            assert_eq!(started.workflow_id(), id);
            Ok(started.result().await?.to_string())
        }
        Plan::Taken { id } => match start(&id, ParentClosePolicy::Terminate).await {
            Err(e) if e.is_already_running() => Ok("taken".into()),
            other => Ok(format!("{other:?}")),
        },
        Plan::CloseEarly { id } => {
            start(&format!("{id}-a"), ParentClosePolicy::Terminate)
                .start()
                .await?;
            start(&format!("{id}-b"), ParentClosePolicy::Abandon)
                .start()
                .await?;
            Ok("left".into())
        }
        Plan::CancelChild { id } => {
            let mut c = start(&id, ParentClosePolicy::Abandon).start().await?;
            c.cancel();
            match c.result().await {
                Err(ChildWorkflowError::Closed { status, .. }) => Ok(status),
                other => Ok(format!("{other:?}")),
            }
        }
        Plan::WaitForCancel { id } => {
            start(&id, ParentClosePolicy::RequestCancel).start().await?;
            ctx.cancelled().await;
            Err(WorkflowError::Canceled)
        }
    }
}

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.long_poll_timeout = Duration::from_secs(5);
    c.recheck_interval = Duration::from_millis(200);
    c
}

/// A worker of `queue` running `parent` and `child`, until the token is cancelled.
fn run_worker(engine: &TestEngine, queue: &str) -> CancellationToken {
    let mut w = Worker::new(&engine.endpoint, WorkerOptions::new(queue)).unwrap();
    w.register_workflow("parent", parent);
    w.register_workflow("child", child);
    let stop = CancellationToken::new();
    tokio::spawn(w.run(stop.clone()));
    stop
}

/// Waits until `id`'s latest run is running: a child the engine has started.
async fn running(client: &Client, id: &str) -> WorkflowHandle {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(d) = client.handle(id).describe().await
            && d.summary.status == WorkflowStatus::Running
        {
            return client.handle(id);
        }
        assert!(tokio::time::Instant::now() < deadline, "{id} never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The names of the child events in `run`'s history, in order.
async fn child_events(run: &WorkflowHandle) -> Vec<&'static str> {
    run.history()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.attributes? {
            A::StartChildWorkflowExecutionInitiated(_) => Some("initiated"),
            A::ChildWorkflowExecutionStarted(_) => Some("started"),
            A::StartChildWorkflowExecutionFailed(_) => Some("start failed"),
            A::ChildWorkflowExecutionClosed(_) => Some("closed"),
            A::ChildWorkflowExecutionCancelRequested(_) => Some("cancel requested"),
            _ => None,
        })
        .collect()
}

async fn start_parent(client: &Client, queue: &str, plan: Plan) -> WorkflowHandle {
    client
        .start_workflow(StartOptions::new("parent", unique("parent"), queue), &plan)
        .await
        .unwrap()
}

async fn a_parent_awaits_its_childs_start_and_result(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("family");
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let _worker = run_worker(&engine, &q).drop_guard();
    let kid = unique("kid");
    let parent = start_parent(&client, &q, Plan::Await { id: kid.clone() }).await;

    let child = running(&client, &kid).await;
    let d = child.describe().await.unwrap();
    let link = d.parent.expect("a child names its parent");
    assert_eq!(link.workflow_id, parent.workflow_id);
    let p = parent.describe().await.unwrap();
    assert_eq!(p.pending_children.len(), 1);
    assert_eq!(p.pending_children[0].workflow_id, kid);
    assert_eq!(link.run_id, p.summary.run_id);

    child.signal_by_name("go", &()).await.unwrap();
    assert_eq!(parent.result::<String>().await.unwrap(), "42");
    assert_eq!(child.result::<u32>().await.unwrap(), 42);
    assert_eq!(
        child_events(&parent).await,
        ["initiated", "started", "closed"]
    );
    let closed = parent
        .history()
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e.attributes? {
            A::ChildWorkflowExecutionClosed(c) => Some(c),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        closed.workflow_execution.unwrap().run_id,
        d.summary.run_id,
        "the close names the child's run"
    );
    assert!(parent.describe().await.unwrap().pending_children.is_empty());
}

on_both_backends!(a_parent_awaits_its_childs_start_and_result);

async fn a_child_id_in_use_reaches_the_parent_as_a_typed_error(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("family");
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let _worker = run_worker(&engine, &q).drop_guard();
    let taken = unique("taken");
    let other = client
        .start_workflow(StartOptions::new("child", &taken, &q), &1u32)
        .await
        .unwrap();
    let parent = start_parent(&client, &q, Plan::Taken { id: taken.clone() }).await;
    assert_eq!(parent.result::<String>().await.unwrap(), "taken");
    assert_eq!(child_events(&parent).await, ["initiated", "start failed"]);
    // The workflow that had the id runs on, untouched.
    assert_eq!(
        other.describe().await.unwrap().summary.status,
        WorkflowStatus::Running
    );
    assert!(other.describe().await.unwrap().parent.is_none());
}

on_both_backends!(a_child_id_in_use_reaches_the_parent_as_a_typed_error);

async fn a_parents_close_terminates_or_abandons_its_children_by_policy(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("family");
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let _worker = run_worker(&engine, &q).drop_guard();
    let id = unique("early");
    let parent = start_parent(&client, &q, Plan::CloseEarly { id: id.clone() }).await;
    assert_eq!(parent.result::<String>().await.unwrap(), "left");

    let terminated = client.handle(format!("{id}-a"));
    match terminated.result::<u32>().await {
        Err(ClientError::WorkflowFailed { status, failure }) => {
            assert_eq!(status, "terminated");
            assert!(failure.contains("parent workflow closed"), "{failure}");
        }
        other => panic!("the terminate-policy child: {other:?}"),
    }
    let abandoned = client.handle(format!("{id}-b"));
    assert_eq!(
        abandoned.describe().await.unwrap().summary.status,
        WorkflowStatus::Running,
        "an abandoned child runs on"
    );
    abandoned.signal_by_name("go", &()).await.unwrap();
    assert_eq!(abandoned.result::<u32>().await.unwrap(), 42);
    // The parent had closed (it awaited each start in turn): it hears nothing more.
    assert_eq!(
        child_events(&parent).await,
        ["initiated", "started", "initiated", "started"]
    );
}

on_both_backends!(a_parents_close_terminates_or_abandons_its_children_by_policy);

async fn cancellation_reaches_children(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("family");
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let _worker = run_worker(&engine, &q).drop_guard();

    // The parent asks its child to cancel, and hears how it ended.
    let kid = unique("kid");
    let parent = start_parent(&client, &q, Plan::CancelChild { id: kid.clone() }).await;
    assert_eq!(parent.result::<String>().await.unwrap(), "CANCELED");
    assert_eq!(
        child_events(&parent).await,
        ["initiated", "started", "cancel requested", "closed"]
    );

    // A cancelled parent asks the child whose policy says so.
    let kid = unique("kid");
    let parent = start_parent(&client, &q, Plan::WaitForCancel { id: kid.clone() }).await;
    let child = running(&client, &kid).await;
    // Wait for the parent to have seen the start, then cancel it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while child_events(&parent).await != ["initiated", "started"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the start never reached the parent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    parent
        .cancel("the customer changed their mind")
        .await
        .unwrap();
    match child.result::<u32>().await {
        Err(ClientError::WorkflowFailed { status, .. }) => assert_eq!(status, "canceled"),
        other => panic!("the child: {other:?}"),
    }
    assert_eq!(
        parent.describe().await.unwrap().summary.status,
        WorkflowStatus::Canceled
    );
}

on_both_backends!(cancellation_reaches_children);
