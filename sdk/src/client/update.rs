//! Updates from a client: [`WorkflowHandle::update`] asks a workflow to change and waits for
//! its handler's result; [`Client::update_with_start`] starts the workflow first if it is not
//! running, atomically.

use super::{Client, StartOptions, WorkflowHandle, encode};
use crate::definition::{Update, Workflow};
use crate::error::{ClientError, Failure};
use crate::workflow::options::dur;
use martix_proto::v1 as pb;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// How long one call waits for the handler before asking again (the engine waits at most 60 s).
const UPDATE_WAIT: Duration = Duration::from_secs(50);

impl WorkflowHandle {
    /// Asks the workflow to change through its handler of update `U`, and waits for the
    /// handler's result. The workflow's validator may refuse it first: then nothing was
    /// recorded and the error (`FAILED_PRECONDITION`) says why. A handler that fails is
    /// [`ClientError::UpdateFailed`]. The update gets a fresh id; to retry one across a
    /// restart of the caller, name it: [`WorkflowHandle::update_with_id`].
    pub async fn update<U: Update>(
        &self,
        _update: U,
        args: &U::Args,
    ) -> Result<U::Output, ClientError> {
        self.update_with_id(&fresh_id(), U::NAME, args).await
    }

    /// The string form of [`WorkflowHandle::update`]: the update by its name, the result
    /// decoded as `O`.
    pub async fn update_by_name<A: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        name: &str,
        args: &A,
    ) -> Result<O, ClientError> {
        self.update_with_id(&fresh_id(), name, args).await
    }

    /// Update `name` with id `update_id`: asked again with the same id (a retry), it is the
    /// same update, answered with its outcome and never applied twice.
    pub async fn update_with_id<A: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        update_id: &str,
        name: &str,
        args: &A,
    ) -> Result<O, ClientError> {
        let request = pb::UpdateWorkflowRequest {
            namespace: self.client.namespace.clone(),
            execution: self.execution(),
            update_id: update_id.to_owned(),
            update_name: name.to_owned(),
            args: Some(encode(args, || {
                format!("the arguments of update '{name}'")
            })?),
            identity: self.client.identity.clone(),
            wait: Some(dur(UPDATE_WAIT)),
            start: None,
        };
        let (_, out) = send(&self.client, request, |s| self.error(s)).await?;
        Ok(out)
    }
}

impl Client {
    /// Update-with-start: sends update `U` to the running workflow of the id in `options`,
    /// or, if none runs, starts workflow `W` with `input` and the update recorded right after
    /// its start, in one step (the workflow runs the validator first). Answers the run's
    /// handle (`started` says whether it started it) and the handler's result.
    pub async fn update_with_start<W: Workflow, U: Update>(
        &self,
        _workflow: W,
        mut options: StartOptions,
        input: &W::Input,
        _update: U,
        args: &U::Args,
    ) -> Result<(WorkflowHandle, U::Output), ClientError> {
        options.workflow_type = W::NAME.to_owned();
        let start = self.start_request(&options, input)?;
        let request = pb::UpdateWorkflowRequest {
            namespace: self.namespace.clone(),
            execution: Some(pb::WorkflowExecution {
                workflow_id: options.workflow_id.clone(),
                run_id: String::new(),
            }),
            update_id: fresh_id(),
            update_name: U::NAME.to_owned(),
            args: Some(encode(args, || {
                format!("the arguments of update '{}'", U::NAME)
            })?),
            identity: self.identity.clone(),
            wait: Some(dur(UPDATE_WAIT)),
            start: Some(start),
        };
        let (resp, out) = send(self, request, ClientError::Status).await?;
        let handle = self.started_handle(options.workflow_id, resp.run_id, resp.started);
        Ok((handle, out))
    }
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Sends `request` until the handler completed (an answer ACCEPTED: ask again with the same
/// id, without the start); the first answer and the decoded result.
async fn send<O: DeserializeOwned>(
    client: &Client,
    mut request: pb::UpdateWorkflowRequest,
    error: impl Fn(tonic::Status) -> ClientError,
) -> Result<(pb::UpdateWorkflowResponse, O), ClientError> {
    let name = request.update_name.clone();
    let mut first: Option<pb::UpdateWorkflowResponse> = None;
    loop {
        let resp = client
            .inner
            .clone()
            .update_workflow(request.clone())
            .await
            .map_err(&error)?
            .into_inner();
        let answered = first.get_or_insert_with(|| resp.clone());
        if resp.stage == pb::UpdateStage::Completed as i32 {
            if let Some(f) = resp.failure {
                return Err(ClientError::UpdateFailed {
                    name,
                    failure: Failure::from(f),
                });
            }
            let out = crate::payload::from_payload(resp.result.as_ref())?;
            return Ok((answered.clone(), out));
        }
        // Recorded, still running: the same update, on the run that took it.
        request.start = None;
        if let Some(e) = request.execution.as_mut() {
            e.run_id = resp.run_id;
        }
    }
}
