//! Child workflows from workflow code: `ctx.child_workflow(W, &input)` starts a run of
//! workflow `W` of its own (its own id, history, retries and timeouts) and resolves with its
//! result; `.start()` resolves once it runs, with a handle to its result and to cancel it.
//! The child's id is deterministic (the parent's id, this run and the command's sequence), so a
//! replay asks for the same child; the engine starts it and tells the parent when its
//! workflow ends, and what becomes of it if the parent ends first is its
//! [`ParentClosePolicy`].

use super::context::WorkflowContext;
use super::driver::Shared;
use super::options::dur;
use crate::definition::Workflow;
use crate::error::{ChildWorkflowError, Failure};
use crate::payload::{from_payload, to_payload};
use futures::future::FusedFuture;
use martix_proto::v1 as pb;
use pb::command::Attributes as C;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// What a child the workflow awaits has come to, as history told it.
#[derive(Default)]
pub(crate) struct ChildSlot {
    /// Its first run, or why it could not start.
    pub(crate) started: Option<Result<String, pb::Failure>>,
    /// Its result, or why it has none.
    pub(crate) closed: Option<Result<Option<pb::Payload>, pb::Failure>>,
    /// How it ended (a `WorkflowStatus`).
    pub(crate) status: i32,
}

/// What happens to a child still running when its parent's run closes first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParentClosePolicy {
    /// The child is terminated (the default).
    #[default]
    Terminate,
    /// The child is asked to cancel (it decides what that means, as a saga compensates).
    RequestCancel,
    /// The child runs on, on its own.
    Abandon,
}

/// How a child workflow is started. Unset: the id is made from the parent's, the queue is the
/// parent's, no timeouts but the workflow task's default, and the child is terminated if the
/// parent closes first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildWorkflowOptions {
    workflow_id: Option<String>,
    task_queue: Option<String>,
    execution_timeout: Option<Duration>,
    run_timeout: Option<Duration>,
    task_timeout: Option<Duration>,
    parent_close_policy: ParentClosePolicy,
}

impl ChildWorkflowOptions {
    /// The child's workflow id (a business key: `payment-o-42`). It must not be used by a
    /// running workflow, or the child fails to start with
    /// [`ChildWorkflowError::StartFailed`].
    pub fn workflow_id(mut self, id: impl Into<String>) -> Self {
        self.workflow_id = Some(id.into());
        self
    }

    /// The task queue its workflow tasks go to (another team's workers, say).
    pub fn task_queue(mut self, queue: impl Into<String>) -> Self {
        self.task_queue = Some(queue.into());
        self
    }

    /// How long the child's whole workflow (all its runs) may take.
    pub fn execution_timeout(mut self, d: Duration) -> Self {
        self.execution_timeout = Some(d);
        self
    }

    /// How long one run of the child may take.
    pub fn run_timeout(mut self, d: Duration) -> Self {
        self.run_timeout = Some(d);
        self
    }

    /// How long a worker may hold one of its workflow tasks.
    pub fn task_timeout(mut self, d: Duration) -> Self {
        self.task_timeout = Some(d);
        self
    }

    /// What happens to it if the parent closes first.
    pub fn parent_close_policy(mut self, policy: ParentClosePolicy) -> Self {
        self.parent_close_policy = policy;
        self
    }
}

impl WorkflowContext {
    /// Starts workflow `W` as a child with `input` and resolves with its result (or why it has
    /// none: it could not start, failed, was cancelled, terminated or timed out). Options:
    /// [`ChildWorkflowFuture::with_options`]; only its start: [`ChildWorkflowFuture::start`].
    ///
    /// ```no_run
    /// # use martix_sdk::{Workflow, WorkflowContext, WorkflowError, ChildWorkflowOptions};
    /// struct Refund;
    /// impl Workflow for Refund {
    ///     const NAME: &'static str = "refund";
    ///     type Input = u64;
    ///     type Output = String;
    /// }
    ///
    /// async fn dispute(ctx: WorkflowContext, cents: u64) -> Result<String, WorkflowError> {
    ///     let receipt = ctx
    ///         .child_workflow(Refund, &cents)
    ///         .with_options(ChildWorkflowOptions::default().workflow_id("refund-d-7"))
    ///         .await?;
    ///     Ok(receipt)
    /// }
    /// ```
    pub fn child_workflow<W: Workflow>(
        &self,
        _workflow: W,
        input: &W::Input,
    ) -> ChildWorkflowFuture<W::Output> {
        self.child(W::NAME, to_payload(input), ChildWorkflowOptions::default())
    }

    /// Starts a child workflow by its type name, the string form of
    /// [`WorkflowContext::child_workflow`] (for workflows without a Rust definition here).
    pub fn child_workflow_by_name<I: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        workflow_type: &str,
        input: &I,
        options: ChildWorkflowOptions,
    ) -> ChildWorkflowFuture<O> {
        self.child(workflow_type, to_payload(input), options)
    }

    fn child<O>(
        &self,
        workflow_type: &str,
        input: Result<pb::Payload, serde_json::Error>,
        options: ChildWorkflowOptions,
    ) -> ChildWorkflowFuture<O> {
        let info = self.info();
        // The run's own part of the id, from its start event (which a reset copies): two runs
        // of a chain continued as new never ask for the same child, and a reset's run asks for
        // the children of the run it continues.
        let last = |id: &str| id.rsplit('-').next().unwrap_or_default().to_owned();
        let run = match info.continued_from_run_id.as_deref() {
            Some(previous) => format!("c{}", last(previous)),
            None => last(&info.first_run_id),
        };
        ChildWorkflowFuture {
            shared: self.shared.clone(),
            default_id: format!("{}/child-{run}", info.workflow_id),
            workflow_type: workflow_type.to_owned(),
            input: input.map(Some).map_err(|e| e.to_string()),
            options,
            id: None,
            done: false,
            _out: PhantomData,
        }
    }
}

/// A child workflow: resolves with its result. Dropping it does not stop the child (that is
/// its [`ParentClosePolicy`]'s, or [`StartedChild::cancel`]'s, to say).
#[must_use = "a child workflow starts only when awaited"]
pub struct ChildWorkflowFuture<O> {
    shared: Arc<Mutex<Shared>>,
    default_id: String,
    workflow_type: String,
    input: Result<Option<pb::Payload>, String>,
    options: ChildWorkflowOptions,
    /// Its workflow id, once asked for.
    id: Option<String>,
    done: bool,
    _out: PhantomData<fn() -> O>,
}

impl<O> Unpin for ChildWorkflowFuture<O> {}

impl<O> ChildWorkflowFuture<O> {
    /// Starts it with `options` (only before it is first polled, when it is asked for).
    pub fn with_options(mut self, options: ChildWorkflowOptions) -> Self {
        self.options = options;
        self
    }

    /// Resolves once the child runs (or could not start), with a handle on it: its ids, its
    /// result, a way to ask it to cancel.
    pub fn start(self) -> ChildStartFuture<O> {
        ChildStartFuture { child: Some(self) }
    }

    /// Asks for the child (first poll): its id. `Err` when its input did not encode: nothing
    /// is asked for, the same on every replay.
    fn ask(&mut self, s: &mut Shared) -> Result<String, Box<ChildWorkflowError>> {
        if let Some(id) = &self.id {
            return Ok(id.clone());
        }
        let seq = s.next_seq();
        let id = self
            .options
            .workflow_id
            .clone()
            .unwrap_or_else(|| format!("{}-{seq}", self.default_id));
        let input = match std::mem::replace(&mut self.input, Ok(None)) {
            Ok(input) => input,
            Err(why) => {
                return Err(Box::new(ChildWorkflowError::StartFailed {
                    workflow_id: id,
                    failure: Failure::new(
                        "BadPayload",
                        format!(
                            "child workflow '{}': cannot encode its input: {why}",
                            self.workflow_type
                        ),
                    ),
                }));
            }
        };
        let o = &self.options;
        s.push_command(C::StartChildWorkflow(
            pb::StartChildWorkflowExecutionCommand {
                workflow_id: id.clone(),
                workflow_type: self.workflow_type.clone(),
                task_queue: o.task_queue.clone().unwrap_or_default(),
                input,
                workflow_execution_timeout: o.execution_timeout.map(dur),
                workflow_run_timeout: o.run_timeout.map(dur),
                workflow_task_timeout: o.task_timeout.map(dur),
                parent_close_policy: match o.parent_close_policy {
                    ParentClosePolicy::Terminate => pb::ParentClosePolicy::Terminate,
                    ParentClosePolicy::RequestCancel => pb::ParentClosePolicy::RequestCancel,
                    ParentClosePolicy::Abandon => pb::ParentClosePolicy::Abandon,
                } as i32,
            },
        ));
        s.children.insert(id.clone(), ChildSlot::default());
        self.id = Some(id.clone());
        Ok(id)
    }
}

impl<O: DeserializeOwned> Future for ChildWorkflowFuture<O> {
    type Output = Result<O, ChildWorkflowError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.done {
            return Poll::Pending;
        }
        let shared = this.shared.clone();
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        let id = match this.ask(&mut s) {
            Ok(id) => id,
            Err(e) => {
                this.done = true;
                return Poll::Ready(Err(*e));
            }
        };
        let Some(slot) = s.children.get(&id) else {
            this.done = true;
            return Poll::Ready(Err(ChildWorkflowError::StartFailed {
                workflow_id: id,
                failure: Failure::new("Gone", "the child's outcome was taken already"),
            }));
        };
        let Some(closed) = slot.closed.clone() else {
            s.waiters.wait_child(&id, cx.waker());
            return Poll::Pending;
        };
        let started = slot.started.clone();
        let status = slot.status;
        s.children.remove(&id);
        s.waiters.forget_child(&id);
        this.done = true;
        Poll::Ready(match (started, closed) {
            (Some(Err(f)), _) => Err(ChildWorkflowError::StartFailed {
                workflow_id: id,
                failure: f.into(),
            }),
            (_, Ok(result)) => {
                from_payload(result.as_ref()).map_err(|e| ChildWorkflowError::Closed {
                    workflow_id: id,
                    status: "COMPLETED".into(),
                    failure: Failure::new(
                        "BadPayload",
                        format!(
                            "child workflow '{}': cannot decode its result: {e}",
                            this.workflow_type
                        ),
                    ),
                })
            }
            (_, Err(f)) => Err(ChildWorkflowError::Closed {
                workflow_id: id,
                status: pb::WorkflowStatus::try_from(status)
                    .map(|st| {
                        st.as_str_name()
                            .trim_start_matches("WORKFLOW_STATUS_")
                            .to_owned()
                    })
                    .unwrap_or_default(),
                failure: f.into(),
            }),
        })
    }
}

/// Terminated once it resolved: `futures::select!` needs no `.fuse()`.
impl<O: DeserializeOwned> FusedFuture for ChildWorkflowFuture<O> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<O> Drop for ChildWorkflowFuture<O> {
    fn drop(&mut self) {
        if let (Some(id), false) = (&self.id, self.done) {
            let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            s.waiters.forget_child(id);
            // No one awaits it any more: its outcome, when it comes, is dropped.
            s.children.remove(id);
        }
    }
}

/// Resolves once a child runs: see [`ChildWorkflowFuture::start`].
#[must_use = "a child workflow starts only when awaited"]
pub struct ChildStartFuture<O> {
    child: Option<ChildWorkflowFuture<O>>,
}

impl<O> Unpin for ChildStartFuture<O> {}

impl<O> Future for ChildStartFuture<O> {
    type Output = Result<StartedChild<O>, ChildWorkflowError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(child) = self.child.as_mut() else {
            return Poll::Pending;
        };
        let shared = child.shared.clone();
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        let id = match child.ask(&mut s) {
            Ok(id) => id,
            Err(e) => {
                child.done = true;
                self.child = None;
                return Poll::Ready(Err(*e));
            }
        };
        let started = s.children.get(&id).and_then(|slot| slot.started.clone());
        match started {
            None => {
                s.waiters.wait_child(&id, cx.waker());
                Poll::Pending
            }
            Some(Err(f)) => {
                s.children.remove(&id);
                s.waiters.forget_child(&id);
                drop(s);
                if let Some(mut c) = self.child.take() {
                    c.done = true;
                }
                Poll::Ready(Err(ChildWorkflowError::StartFailed {
                    workflow_id: id,
                    failure: f.into(),
                }))
            }
            Some(Ok(run_id)) => {
                s.waiters.forget_child(&id);
                drop(s);
                let result = self.child.take().expect("checked above");
                Poll::Ready(Ok(StartedChild {
                    workflow_id: id,
                    run_id,
                    result,
                    cancel_asked: false,
                }))
            }
        }
    }
}

/// A child workflow that runs: its ids, its result, and a way to ask it to cancel.
pub struct StartedChild<O> {
    workflow_id: String,
    run_id: String,
    result: ChildWorkflowFuture<O>,
    cancel_asked: bool,
}

impl<O> StartedChild<O> {
    /// The child's workflow id.
    pub fn workflow_id(&self) -> &str {
        &self.workflow_id
    }

    /// The child's first run.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Asks the child to cancel (once; asking again does nothing). It decides what that means;
    /// its result then tells how it ended.
    pub fn cancel(&mut self) {
        if std::mem::replace(&mut self.cancel_asked, true) {
            return;
        }
        let mut s = self.result.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.push_command(C::RequestCancelChildWorkflow(
            pb::RequestCancelChildWorkflowCommand {
                workflow_id: self.workflow_id.clone(),
            },
        ));
    }

    /// Its result (or why it has none).
    pub fn result(self) -> ChildWorkflowFuture<O> {
        self.result
    }
}
