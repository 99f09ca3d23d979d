//! `Client`: start workflows, wait for their results, inspect and steer them.

use crate::connection::{ConnectOptions, Transport};
use crate::error::ClientError;
use crate::payload::{from_payload, to_payload};
use crate::workflow::context::dur;
use martix_proto::v1 as pb;
use pb::workflow_service_client::WorkflowServiceClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tonic::transport::Channel;
use tracing::Instrument;

/// How to start a workflow.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StartOptions {
    /// The registered workflow type.
    pub workflow_type: String,
    /// The business key; starting an id that is running returns the running run.
    pub workflow_id: String,
    /// The queue its workers poll.
    pub task_queue: String,
    /// What to do when the id was used by a closed run.
    pub id_reuse_policy: pb::IdReusePolicy,
    /// Longest time the whole workflow (all runs) may take.
    pub execution_timeout: Option<Duration>,
    /// Longest time one run may take.
    pub run_timeout: Option<Duration>,
    /// Longest time a worker may hold one workflow task.
    pub task_timeout: Option<Duration>,
    /// Values shown with the run (not given to workflow code).
    pub memo: Vec<(String, serde_json::Value)>,
}

impl StartOptions {
    /// Starts `workflow_type` as `workflow_id` on `task_queue`.
    pub fn new(
        workflow_type: impl Into<String>,
        workflow_id: impl Into<String>,
        task_queue: impl Into<String>,
    ) -> Self {
        Self {
            workflow_type: workflow_type.into(),
            workflow_id: workflow_id.into(),
            task_queue: task_queue.into(),
            id_reuse_policy: pb::IdReusePolicy::AllowDuplicate,
            execution_timeout: None,
            run_timeout: None,
            task_timeout: None,
            memo: Vec::new(),
        }
    }

    /// Sets the id-reuse policy.
    pub fn id_reuse_policy(mut self, policy: pb::IdReusePolicy) -> Self {
        self.id_reuse_policy = policy;
        self
    }

    /// Adds a memo entry.
    pub fn memo(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.memo.push((key.into(), value));
        self
    }
}

/// A connection to the engine's `WorkflowService`. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: WorkflowServiceClient<Transport>,
    namespace: String,
    identity: String,
}

impl Client {
    /// Connects to an engine (`http://127.0.0.1:7233`), namespace `default`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), martix_sdk::ClientError> {
    /// let client = martix_sdk::Client::connect("http://127.0.0.1:7233").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        Self::connect_with(&endpoint.into(), &ConnectOptions::default()).await
    }

    /// Connects with a token and TLS trust.
    pub async fn connect_with(
        endpoint: &str,
        options: &ConnectOptions,
    ) -> Result<Self, ClientError> {
        Ok(Self::from_transport(options.connect(endpoint).await?))
    }

    /// A client on an existing channel, without credentials.
    pub fn from_channel(channel: Channel) -> Self {
        Self::from_transport(crate::connection::plain(channel))
    }

    /// A client on a channel with credentials.
    pub fn from_transport(transport: Transport) -> Self {
        Self {
            inner: WorkflowServiceClient::new(transport)
                .max_decoding_message_size(crate::MAX_MESSAGE_BYTES),
            namespace: "default".into(),
            identity: default_identity(),
        }
    }

    /// The same client in another namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    fn start_request<I: Serialize>(
        &self,
        options: &StartOptions,
        input: &I,
    ) -> Result<pb::StartWorkflowRequest, ClientError> {
        let mut memo = std::collections::HashMap::new();
        for (k, v) in &options.memo {
            memo.insert(k.clone(), to_payload(v)?);
        }
        Ok(pb::StartWorkflowRequest {
            namespace: self.namespace.clone(),
            workflow_id: options.workflow_id.clone(),
            workflow_type: options.workflow_type.clone(),
            task_queue: options.task_queue.clone(),
            input: Some(to_payload(input)?),
            workflow_execution_timeout: options.execution_timeout.map(dur),
            workflow_run_timeout: options.run_timeout.map(dur),
            workflow_task_timeout: options.task_timeout.map(dur),
            id_reuse_policy: options.id_reuse_policy as i32,
            identity: self.identity.clone(),
            memo,
        })
    }

    fn start_span(options: &StartOptions) -> tracing::Span {
        tracing::info_span!(
            "start_workflow",
            otel.kind = "client",
            workflow_id = %options.workflow_id,
            workflow_type = %options.workflow_type,
        )
    }

    fn started_handle(&self, workflow_id: String, run_id: String, started: bool) -> WorkflowHandle {
        WorkflowHandle {
            client: self.clone(),
            workflow_id,
            run_id,
            started,
        }
    }

    /// Starts a workflow, or finds the running run of its id.
    pub async fn start_workflow<I: Serialize>(
        &self,
        options: StartOptions,
        input: &I,
    ) -> Result<WorkflowHandle, ClientError> {
        let request = self.start_request(&options, input)?;
        let mut inner = self.inner.clone();
        let resp = inner
            .start_workflow(request)
            .instrument(Self::start_span(&options))
            .await?
            .into_inner();
        Ok(self.started_handle(options.workflow_id, resp.run_id, resp.started))
    }

    /// Signals the running run of the id, or starts one whose first event after the start is
    /// the signal, in one step: the signal cannot fall between a start and a signal.
    pub async fn signal_with_start<I: Serialize, S: Serialize>(
        &self,
        options: StartOptions,
        input: &I,
        signal_name: &str,
        signal_input: &S,
    ) -> Result<WorkflowHandle, ClientError> {
        let request = pb::SignalWithStartWorkflowRequest {
            start: Some(self.start_request(&options, input)?),
            signal_name: signal_name.to_owned(),
            signal_input: Some(to_payload(signal_input)?),
            request_id: String::new(),
        };
        let mut inner = self.inner.clone();
        let resp = inner
            .signal_with_start_workflow(request)
            .instrument(Self::start_span(&options))
            .await?
            .into_inner();
        Ok(self.started_handle(options.workflow_id, resp.run_id, resp.started))
    }

    /// A handle on the latest run of a workflow id.
    pub fn handle(&self, workflow_id: impl Into<String>) -> WorkflowHandle {
        WorkflowHandle {
            client: self.clone(),
            workflow_id: workflow_id.into(),
            run_id: String::new(),
            started: false,
        }
    }

    /// Runs matching the request's filters (its namespace is this client's).
    pub async fn list_workflows(
        &self,
        mut request: pb::ListWorkflowsRequest,
    ) -> Result<pb::ListWorkflowsResponse, ClientError> {
        request.namespace = self.namespace.clone();
        Ok(self
            .inner
            .clone()
            .list_workflows(request)
            .await?
            .into_inner())
    }
}

fn default_identity() -> String {
    format!(
        "{}@{}",
        std::process::id(),
        std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into())
    )
}

/// One workflow run (or the latest run of an id).
#[derive(Clone)]
pub struct WorkflowHandle {
    client: Client,
    /// The workflow id.
    pub workflow_id: String,
    /// The run; empty means the latest.
    pub run_id: String,
    /// Whether the start call created this run (false: it was already running).
    pub started: bool,
}

impl WorkflowHandle {
    fn execution(&self) -> Option<pb::WorkflowExecution> {
        Some(pb::WorkflowExecution {
            workflow_id: self.workflow_id.clone(),
            run_id: self.run_id.clone(),
        })
    }

    /// Waits for the workflow's result, following continue-as-new to the last run.
    pub async fn result<O: DeserializeOwned>(&self) -> Result<O, ClientError> {
        let mut run_id = self.run_id.clone();
        loop {
            let r = self
                .client
                .inner
                .clone()
                .get_workflow_result(pb::GetWorkflowResultRequest {
                    namespace: self.client.namespace.clone(),
                    execution: Some(pb::WorkflowExecution {
                        workflow_id: self.workflow_id.clone(),
                        run_id: run_id.clone(),
                    }),
                    wait: Some(dur(Duration::from_secs(30))),
                })
                .await?
                .into_inner();
            if !r.closed {
                continue;
            }
            if !r.new_run_id.is_empty() {
                run_id = r.new_run_id;
                continue;
            }
            if r.status == pb::WorkflowStatus::Completed as i32
                || r.status == pb::WorkflowStatus::Compensated as i32
            {
                return Ok(from_payload(r.result.as_ref())?);
            }
            let status = pb::WorkflowStatus::try_from(r.status)
                .map(|s| {
                    s.as_str_name()
                        .trim_start_matches("WORKFLOW_STATUS_")
                        .to_lowercase()
                })
                .unwrap_or_default();
            return Err(ClientError::WorkflowFailed {
                status,
                failure: r.failure.map(|f| f.message).unwrap_or_default(),
            });
        }
    }

    /// Status, pending activities and timers.
    pub async fn describe(&self) -> Result<pb::DescribeWorkflowResponse, ClientError> {
        Ok(self
            .client
            .inner
            .clone()
            .describe_workflow(pb::DescribeWorkflowRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
            })
            .await?
            .into_inner())
    }

    /// The whole history, all pages.
    pub async fn history(&self) -> Result<Vec<pb::HistoryEvent>, ClientError> {
        Ok(read_history(&self.client.inner, &self.client.namespace, self.execution()).await?)
    }

    /// Sends a signal.
    pub async fn signal<I: Serialize>(&self, name: &str, input: &I) -> Result<(), ClientError> {
        self.signal_once(name, input, "").await
    }

    /// Sends a signal at most once per `request_id` (empty: no deduplication): a retry after
    /// a lost answer, or a redelivered message, does not signal twice.
    pub async fn signal_once<I: Serialize>(
        &self,
        name: &str,
        input: &I,
        request_id: &str,
    ) -> Result<(), ClientError> {
        self.client
            .inner
            .clone()
            .signal_workflow(pb::SignalWorkflowRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
                signal_name: name.to_owned(),
                input: Some(to_payload(input)?),
                identity: self.client.identity.clone(),
                request_id: request_id.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Asks the workflow to cancel.
    pub async fn cancel(&self, reason: &str) -> Result<(), ClientError> {
        self.client
            .inner
            .clone()
            .cancel_workflow(pb::CancelWorkflowRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
                reason: reason.to_owned(),
                identity: self.client.identity.clone(),
            })
            .await?;
        Ok(())
    }

    /// Stops the run now.
    pub async fn terminate(&self, reason: &str) -> Result<(), ClientError> {
        self.client
            .inner
            .clone()
            .terminate_workflow(pb::TerminateWorkflowRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
                reason: reason.to_owned(),
                identity: self.client.identity.clone(),
            })
            .await?;
        Ok(())
    }
}

/// Reads a run's whole history, page by page.
pub(crate) async fn read_history(
    client: &WorkflowServiceClient<Transport>,
    namespace: &str,
    execution: Option<pb::WorkflowExecution>,
) -> Result<Vec<pb::HistoryEvent>, tonic::Status> {
    let mut events = Vec::new();
    let mut token = Vec::new();
    loop {
        let page = client
            .clone()
            .get_workflow_history(pb::GetWorkflowHistoryRequest {
                namespace: namespace.to_owned(),
                execution: execution.clone(),
                page_size: 0,
                next_page_token: token,
            })
            .await?
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return Ok(events);
        }
        token = page.next_page_token;
    }
}
