//! `Replayer`: runs stored histories against the current workflow code, so a change can be
//! checked against real runs before it ships.

use crate::error::WorkflowError;
use crate::workflow::{ActivationError, RunDriver, WorkflowContext, WorkflowFn, WorkflowInfo};
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

    /// Registers the current code of a workflow type.
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

    /// Replays one history (as `GetWorkflowHistory` gives it); `Ok` if the code is
    /// deterministic against it.
    pub fn replay(&self, history: &[pb::HistoryEvent]) -> Result<(), ReplayError> {
        let started = match history.first().and_then(|e| e.attributes.as_ref()) {
            Some(pb::history_event::Attributes::WorkflowExecutionStarted(s)) => s,
            _ => {
                return Err(ReplayError::BadHistory(
                    "it must start with WorkflowExecutionStarted".into(),
                ));
            }
        };
        let workflow = self
            .workflows
            .get(&started.workflow_type)
            .cloned()
            .ok_or_else(|| ReplayError::UnknownType(started.workflow_type.clone()))?;
        let info = WorkflowInfo {
            namespace: "replay".into(),
            workflow_id: "replay".into(),
            run_id: if started.first_run_id.is_empty() {
                "replay".into()
            } else {
                started.first_run_id.clone()
            },
            workflow_type: started.workflow_type.clone(),
            task_queue: started.task_queue.clone(),
        };
        let mut driver = RunDriver::new(workflow, info);
        match driver.apply_history(history) {
            Ok(()) => Ok(driver.finish_replay()?),
            Err(ActivationError::Nondeterminism(n)) => Err(n.into()),
            Err(ActivationError::Panic(p)) => Err(ReplayError::Panic(p)),
            Err(e @ ActivationError::Gap { .. }) => Err(ReplayError::BadHistory(e.to_string())),
            Err(e @ (ActivationError::Spinning(_) | ActivationError::BlockedOnNothingDurable)) => {
                Err(ReplayError::Stuck(e.to_string()))
            }
        }
    }

    /// Replays a history in proto3 JSON: a `GetWorkflowHistoryResponse` object
    /// (`{"events": [...]}`, what `martix workflow history ID --output json` prints) or a bare
    /// array of events.
    pub fn replay_json(&self, json: &str) -> Result<(), ReplayError> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| ReplayError::BadHistory(e.to_string()))?;
        let events: Vec<pb::HistoryEvent> = if value.is_array() {
            serde_json::from_value(value)
        } else {
            serde_json::from_value::<pb::GetWorkflowHistoryResponse>(value).map(|h| h.events)
        }
        .map_err(|e| ReplayError::BadHistory(e.to_string()))?;
        self.replay(&events)
    }

    /// Replays a history encoded as protobuf `GetWorkflowHistoryResponse` bytes.
    pub fn replay_encoded(&self, bytes: &[u8]) -> Result<(), ReplayError> {
        let h = <pb::GetWorkflowHistoryResponse as prost::Message>::decode(bytes)
            .map_err(|e| ReplayError::BadHistory(e.to_string()))?;
        self.replay(&h.events)
    }
}
