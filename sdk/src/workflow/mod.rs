//! Workflows: plain async Rust, replayed deterministically from history.
//!
//! A workflow function takes a [`WorkflowContext`] and its input and returns its result. It may
//! await activities, timers and signals, in sequence or together (`futures::join!`,
//! `futures::select!`, `join_all`, `FuturesUnordered`, `select_all`, `buffer_unordered`: the
//! context's futures wake the task that polls them when the engine resolves them); everything
//! it does that must survive a crash goes through the context, which turns it into commands
//! for the engine and, on replay, matches them against history. A workflow must not await
//! anything else that waits (`tokio::time::sleep`, a channel fed from outside): nothing would
//! wake it, and its workflow task fails saying so.

mod child;
pub(crate) mod context;
mod driver;
pub(crate) mod options;
mod query;
mod search;
mod update;
mod wake;

pub use child::{
    ChildStartFuture, ChildWorkflowFuture, ChildWorkflowOptions, ParentClosePolicy, StartedChild,
};
pub use context::{
    ActivityFuture, CancelledFuture, SignalStream, TimerFuture, WorkflowContext, WorkflowInfo,
};
pub use driver::Nondeterminism;
pub(crate) use driver::{ActivationError, QueryFailure, RunDriver};
pub use options::{ActivityOptions, RetryPolicy};
pub use query::WorkflowState;
pub use search::SearchAttribute;

use crate::error::WorkflowError;
use futures::future::BoxFuture;
use martix_proto::v1 as pb;
use std::sync::Arc;

/// Begins the replay of one run: the one place the worker and the
/// [`Replayer`](crate::Replayer) build a workflow's driver and context, so both give the code
/// the same [`WorkflowInfo`] (from the run's ids and its start event) and the same seed for
/// `ctx.random()` / `ctx.uuid()` (the run id, see [`RunDriver::new`]). A replay of an
/// unchanged workflow then draws the numbers and reads the ids its run did.
pub(crate) fn run_driver(
    workflow: WorkflowFn,
    namespace: String,
    workflow_id: String,
    run_id: String,
    started: &pb::WorkflowExecutionStartedAttributes,
) -> RunDriver {
    RunDriver::new(
        workflow,
        WorkflowInfo::of_run(namespace, workflow_id, run_id, started),
    )
}

/// A workflow as the worker runs it: context and input in, result payload out.
pub(crate) type WorkflowFn = Arc<
    dyn Fn(
            WorkflowContext,
            Option<pb::Payload>,
        ) -> BoxFuture<'static, Result<pb::Payload, WorkflowError>>
        + Send
        + Sync,
>;

/// Wraps a typed workflow function.
pub(crate) fn erase<F, Fut, I, O>(f: F) -> WorkflowFn
where
    F: Fn(WorkflowContext, I) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<O, WorkflowError>> + Send + 'static,
    I: serde::de::DeserializeOwned + Send + 'static,
    O: serde::Serialize + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |ctx, input| {
        let f = f.clone();
        Box::pin(async move {
            let input: I = crate::payload::from_payload(input.as_ref())?;
            let out = f(ctx, input).await?;
            Ok(crate::payload::to_payload(&out)?)
        })
    })
}
