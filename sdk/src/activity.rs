//! Activities: ordinary async functions that do the work, at least once, with a stable
//! idempotency key so their effects can be made exactly once downstream.

use crate::connection::Transport;
use crate::error::{ActivityError, ClientError};
use crate::payload::to_payload;
use futures::future::BoxFuture;
use martix_proto::v1 as pb;
use pb::worker_service_client::WorkerServiceClient;
use serde::Serialize;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What an activity attempt knows about itself, and its line to the engine.
#[derive(Clone)]
pub struct ActivityContext {
    pub(crate) info: Arc<pb::PollActivityTaskResponse>,
    pub(crate) client: WorkerServiceClient<Transport>,
    pub(crate) cancel: CancellationToken,
}

impl ActivityContext {
    /// The workflow id of the run that scheduled this activity.
    pub fn workflow_id(&self) -> &str {
        self.info
            .workflow_execution
            .as_ref()
            .map_or("", |e| e.workflow_id.as_str())
    }

    /// The activity id, unique in its run.
    pub fn activity_id(&self) -> &str {
        &self.info.activity_id
    }

    /// The attempt, from 1.
    pub fn attempt(&self) -> i32 {
        self.info.attempt
    }

    /// The run this activity belongs to.
    pub fn run_id(&self) -> &str {
        self.info
            .workflow_execution
            .as_ref()
            .map_or("", |e| e.run_id.as_str())
    }

    /// `{namespace}/{workflow_id}/{run}/{activity_id}`: the same for every attempt of this
    /// activity, so a downstream system can apply its effect once, and different in another
    /// run of the same workflow id (a second order under an id whose first run was undone, a
    /// run continued as new), whose effects are its own. `{run}` is this run, except in a run
    /// made by a reset: there it is the run that was reset, so the steps after the reset point
    /// find what the old run did (a reservation still held, a charge) instead of doing it
    /// again, and an effect the old run undid is refused by an adapter that checks its keys.
    pub fn idempotency_key(&self) -> String {
        let run = if self.info.idempotency_run_id.is_empty() {
            self.run_id()
        } else {
            self.info.idempotency_run_id.as_str()
        };
        format!(
            "{}/{}/{}/{}",
            self.info.namespace,
            self.workflow_id(),
            run,
            self.info.activity_id
        )
    }

    /// The details the last attempt recorded with `heartbeat`, decoded as `T`; `Ok(None)` if
    /// it recorded none (this is the first attempt, or it never heartbeat with details).
    pub fn last_heartbeat_details<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Option<T>, ActivityError> {
        match &self.info.heartbeat_details {
            None => Ok(None),
            Some(p) => Ok(Some(crate::payload::from_payload(Some(p))?)),
        }
    }

    /// Reports progress; returns whether the activity was cancelled (and then also cancels
    /// the token `cancelled()` waits on).
    pub async fn heartbeat<T: Serialize>(&self, details: &T) -> Result<bool, ClientError> {
        let resp = self
            .client
            .clone()
            .record_activity_heartbeat(pb::RecordActivityHeartbeatRequest {
                task_token: self.info.task_token.clone(),
                details: Some(to_payload(details).map_err(|source| ClientError::Encode {
                    what: "heartbeat details".into(),
                    source,
                })?),
            })
            .await?
            .into_inner();
        if resp.cancel_requested {
            self.cancel.cancel();
        }
        Ok(resp.cancel_requested)
    }

    /// Resolves when the activity is cancelled (seen at a heartbeat) or the worker stops.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the activity was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// An activity as the worker runs it.
pub(crate) type ActivityFn = Arc<
    dyn Fn(
            ActivityContext,
            Option<pb::Payload>,
        ) -> BoxFuture<'static, Result<pb::Payload, ActivityError>>
        + Send
        + Sync,
>;

pub(crate) fn erase<F, Fut, I, O>(f: F) -> ActivityFn
where
    F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<O, ActivityError>> + Send + 'static,
    I: serde::de::DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |ctx, input| {
        let f = f.clone();
        Box::pin(async move {
            let input: I = crate::payload::from_payload(input.as_ref())?;
            let out = f(ctx, input).await?;
            Ok(to_payload(&out)?)
        })
    })
}
