//! `Replayer`: runs stored histories against the current workflow code, so a change can be
//! checked against real runs before it ships. It builds the workflow's context through the
//! same function as the worker (`workflow::run_driver`), from the ids an exported history
//! carries, so an unchanged workflow replays exactly as it ran.

use crate::error::WorkflowError;
use crate::history::WorkflowHistory;
use crate::workflow::{
    ActivationError, Nondeterminism, RunDriver, WorkflowContext, WorkflowFn, run_driver,
};
use martix_proto::v1 as pb;
use std::collections::HashMap;

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The code issues other commands than the history holds.
    #[error(transparent)]
    Nondeterminism(#[from] crate::workflow::Nondeterminism),
    /// The code panicked.
    #[error("workflow code panicked: {0}")]
    Panic(String),
    /// The history is not one a replay can use.
    #[error("bad history: {0}")]
    BadHistory(String),
    /// No workflow of the history's type is registered.
    #[error("workflow type '{0}' is not registered with the replayer")]
    UnknownType(String),
    /// The code never settled in an activation: it kept waking itself (a busy loop).
    #[error("{0}")]
    Stuck(String),
    /// The history replayed, but the query has no answer (no such handler, arguments or
    /// answer that do not fit the types, a handler that panicked or issued a command).
    #[error("query: {0}")]
    Query(String),
}

/// Replays histories against registered workflow code.
///
/// ```
/// # use martix_sdk::{Replayer, WorkflowContext, WorkflowError};
/// async fn noop(_ctx: WorkflowContext, _input: ()) -> Result<(), WorkflowError> { Ok(()) }
/// let mut replayer = Replayer::new();
/// replayer.register_workflow("noop", noop);
/// ```
#[derive(Default)]
pub struct Replayer {
    workflows: HashMap<String, WorkflowFn>,
}

impl Replayer {
    /// A replayer with no workflows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the current code of workflow `W`.
    pub fn workflow<W, F, Fut>(&mut self, _workflow: W, f: F) -> &mut Self
    where
        W: crate::Workflow,
        F: Fn(WorkflowContext, W::Input) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<W::Output, WorkflowError>> + Send + 'static,
    {
        self.register_workflow(W::NAME, f)
    }

    /// Registers the current code of a workflow type by its name: the string form of
    /// [`Replayer::workflow`].
    pub fn register_workflow<F, Fut, I, O>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(WorkflowContext, I) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<O, WorkflowError>> + Send + 'static,
        I: serde::de::DeserializeOwned + Send + 'static,
        O: serde::Serialize + Send + 'static,
    {
        self.workflows
            .insert(name.to_owned(), crate::workflow::erase(f));
        self
    }

    /// Replays one run's events (as `GetWorkflowHistory` gives them); `Ok` if the code is
    /// deterministic against them. The events do not name their run: the code sees namespace
    /// `default`, workflow id `replay` and, as its run id (which also seeds `ctx.random()` and
    /// `ctx.uuid()`), the first run id of the start event, which is the run's own id unless
    /// it continues another. [`Replayer::replay_history`] with the run's ids gives the code
    /// exactly what its run gave it.
    pub fn replay(&self, history: &[pb::HistoryEvent]) -> Result<(), ReplayError> {
        self.replay_run(history, "", "", "").map(drop)
    }

    /// Replays one run's history with the ids that name the run (what
    /// `martix workflow history ID --output json` exports, or [`WorkflowHandle::export_history`]
    /// returns): the workflow's context is built as the worker builds it, so `ctx.info()`,
    /// `ctx.random()` and `ctx.uuid()` give what they gave the run. Ids left empty fall back as
    /// in [`Replayer::replay`].
    ///
    /// [`WorkflowHandle::export_history`]: crate::WorkflowHandle::export_history
    pub fn replay_history(&self, history: &WorkflowHistory) -> Result<(), ReplayError> {
        self.replay_run(
            &history.events,
            &history.namespace,
            &history.workflow_id,
            &history.run_id,
        )
        .map(drop)
    }

    /// Replays one run's history, then asks its query `Q` with `args`, as a worker answers
    /// `QueryWorkflow`: the handler sees the state after the last completed workflow task.
    /// Tests a workflow's queries against stored runs without an engine.
    pub fn query<Q: crate::Query>(
        &self,
        history: &WorkflowHistory,
        _query: Q,
        args: &Q::Args,
    ) -> Result<Q::Output, ReplayError> {
        let mut driver = self.replay_run(
            &history.events,
            &history.namespace,
            &history.workflow_id,
            &history.run_id,
        )?;
        let args = crate::payload::to_payload(args).map_err(|e| {
            ReplayError::Query(format!("the arguments of '{}' do not encode: {e}", Q::NAME))
        })?;
        let answer = driver
            .query(Q::NAME, Some(&args))
            .map_err(|f| ReplayError::Query(f.message))?;
        crate::payload::from_payload(Some(&answer)).map_err(|e| {
            ReplayError::Query(format!("the answer of '{}' does not decode: {e}", Q::NAME))
        })
    }

    /// Replays a run and gives back its driver, every recorded command matched.
    fn replay_run(
        &self,
        events: &[pb::HistoryEvent],
        namespace: &str,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<RunDriver, ReplayError> {
        let started = crate::history::started(events).ok_or_else(|| {
            ReplayError::BadHistory("it must start with WorkflowExecutionStarted".into())
        })?;
        let workflow = self
            .workflows
            .get(&started.workflow_type)
            .cloned()
            .ok_or_else(|| ReplayError::UnknownType(started.workflow_type.clone()))?;
        let or = |id: &str, fallback: &str| {
            if id.is_empty() {
                fallback.to_owned()
            } else {
                id.to_owned()
            }
        };
        // Without the run's id, the first run's is the best guess: right unless the run
        // continues another.
        let guessed_run_id = run_id.is_empty() && !started.continued_from_run_id.is_empty();
        let mut driver = run_driver(
            workflow,
            or(namespace, "default"),
            or(workflow_id, "replay"),
            or(run_id, &or(&started.first_run_id, "replay")),
            started,
        );
        match driver
            .apply_history(events)
            .and_then(|()| Ok(driver.finish_replay()?))
        {
            Ok(()) => Ok(driver),
            Err(ActivationError::Nondeterminism(n)) if guessed_run_id => {
                Err(ReplayError::Nondeterminism(Nondeterminism(format!(
                    "{}; note: this history does not name its run, which continues another, so \
                     the replay ran with the first run's id (ctx.random(), ctx.uuid() and \
                     ctx.info() may differ from the run's): export it with its ids \
                     (martix workflow history ID --output json) and replay that",
                    n.0
                ))))
            }
            Err(ActivationError::Nondeterminism(n)) => Err(n.into()),
            Err(ActivationError::Panic(p)) => Err(ReplayError::Panic(p)),
            Err(e @ ActivationError::Gap { .. }) => Err(ReplayError::BadHistory(e.to_string())),
            Err(e @ (ActivationError::Spinning(_) | ActivationError::BlockedOnNothingDurable)) => {
                Err(ReplayError::Stuck(e.to_string()))
            }
        }
    }

    /// Replays a history in JSON: a [`WorkflowHistory`] (what
    /// `martix workflow history ID --output json` prints: the events and the ids of their
    /// run), a `GetWorkflowHistoryResponse` in proto3 JSON (`{"events": [...]}`, as exports
    /// were before they carried the ids) or a bare array of events; ids it lacks fall back as
    /// in [`Replayer::replay`].
    pub fn replay_json(&self, json: &str) -> Result<(), ReplayError> {
        let history =
            WorkflowHistory::from_json(json).map_err(|e| ReplayError::BadHistory(e.to_string()))?;
        self.replay_history(&history)
    }

    /// Replays a history encoded as protobuf `GetWorkflowHistoryResponse` bytes, whose ids
    /// fall back as in [`Replayer::replay`].
    pub fn replay_encoded(&self, bytes: &[u8]) -> Result<(), ReplayError> {
        let h = <pb::GetWorkflowHistoryResponse as prost::Message>::decode(bytes)
            .map_err(|e| ReplayError::BadHistory(e.to_string()))?;
        self.replay(&h.events)
    }
}
