//! `Client`: start workflows, list them, administer namespaces; `WorkflowHandle`: wait for a
//! workflow's result, inspect its history, steer it (signal, cancel, terminate, reset, retry).
//!
//! Per-workflow operations are methods of the handle, the rest of the client. Listings come a
//! page at a time with an opaque [`PageToken`] for the next page, or all at once. Every call
//! answers with a [`ClientError`] the caller can show as it is; an operation on a workflow
//! that does not exist is [`ClientError::WorkflowNotFound`].

use crate::connection::{ConnectOptions, Transport};
use crate::definition::{Signal, Workflow};
use crate::error::ClientError;
use crate::history::WorkflowHistory;
use crate::payload::to_payload;
use crate::workflow::options::dur;
use futures::Stream;

use martix_proto::v1 as pb;
use pb::workflow_service_client::WorkflowServiceClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::time::Duration;
use tonic::transport::Channel;
use tracing::Instrument;

mod admin;
pub use admin::{BreakerInfo, HoldInfo, WorkerBreaker};
mod description;
mod options;
pub(crate) mod schedules;
mod update;

pub use description::{
    Attention, OpenBreaker, ParentRun, Pause, PendingActivity, PendingActivityState, PendingChild,
    PendingTimer, PendingWorkflowTask, Poller, RunOutcome, WorkflowDescription, WorkflowStatus,
    WorkflowSummary,
};
pub use options::{
    IdReusePolicy, ListOptions, NamespaceInfo, Page, PageToken, ResetPoint, StartOptions,
};

/// How often [`WorkflowHandle::follow_history`] looks for new events.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

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

    /// The same client under another identity, recorded with what it starts, signals,
    /// cancels, terminates and resets (default: `<pid>@<host>`).
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = identity.into();
        self
    }

    /// The namespace this client works in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn start_request<I: Serialize + ?Sized>(
        &self,
        options: &StartOptions,
        input: &I,
    ) -> Result<pb::StartWorkflowRequest, ClientError> {
        let mut memo = std::collections::HashMap::new();
        for (k, v) in &options.memo {
            memo.insert(k.clone(), encode(v, || format!("memo '{k}'"))?);
        }
        Ok(pb::StartWorkflowRequest {
            namespace: self.namespace.clone(),
            workflow_id: options.workflow_id.clone(),
            workflow_type: options.workflow_type.clone(),
            task_queue: options.task_queue.clone(),
            input: Some(encode(input, || {
                format!("the input of workflow '{}'", options.workflow_type)
            })?),
            workflow_execution_timeout: options.execution_timeout.map(dur),
            workflow_run_timeout: options.run_timeout.map(dur),
            workflow_task_timeout: options.task_timeout.map(dur),
            id_reuse_policy: pb::IdReusePolicy::from(options.id_reuse_policy) as i32,
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

    /// Starts workflow `W` with `input` (its type checked at compile time), or finds the
    /// running run of the id. The workflow type is `W::NAME`, whatever `options` says: make
    /// them with [`StartOptions::for_id`].
    ///
    /// ```no_run
    /// # use martix_sdk::{Client, StartOptions, Workflow};
    /// struct Greet;
    /// impl Workflow for Greet {
    ///     const NAME: &'static str = "greet";
    ///     type Input = String;
    ///     type Output = String;
    /// }
    /// # async fn run(client: Client) -> Result<(), martix_sdk::ClientError> {
    /// let run = client
    ///     .start(Greet, StartOptions::for_id("greet-1", "hello"), &"world".to_owned())
    ///     .await?;
    /// let greeting: String = run.result().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start<W: Workflow>(
        &self,
        _workflow: W,
        mut options: StartOptions,
        input: &W::Input,
    ) -> Result<WorkflowHandle, ClientError> {
        options.workflow_type = W::NAME.to_owned();
        self.start_workflow(options, input).await
    }

    /// Starts a workflow by its type name, or finds the running run of its id: the string
    /// form of [`Client::start`].
    pub async fn start_workflow<I: Serialize + ?Sized>(
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

    /// Signals the running run of the id with `S`, or starts workflow `W` with the signal as
    /// its first event after the start, in one step: the signal cannot fall between a start
    /// and a signal. Input and payload are checked at compile time.
    pub async fn signal_with_start<W: Workflow, S: Signal>(
        &self,
        _workflow: W,
        mut options: StartOptions,
        input: &W::Input,
        _signal: S,
        payload: &S::Payload,
    ) -> Result<WorkflowHandle, ClientError> {
        options.workflow_type = W::NAME.to_owned();
        self.signal_with_start_by_name(options, input, S::NAME, payload)
            .await
    }

    /// The string form of [`Client::signal_with_start`]: the workflow type in `options`, the
    /// signal by its name.
    pub async fn signal_with_start_by_name<I: Serialize, S: Serialize>(
        &self,
        options: StartOptions,
        input: &I,
        signal_name: &str,
        signal_input: &S,
    ) -> Result<WorkflowHandle, ClientError> {
        let request = pb::SignalWithStartWorkflowRequest {
            start: Some(self.start_request(&options, input)?),
            signal_name: signal_name.to_owned(),
            signal_input: Some(encode(signal_input, || format!("signal '{signal_name}'"))?),
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
        self.run_handle(workflow_id, String::new())
    }

    /// A handle on one run of a workflow id (an empty `run_id`: the latest).
    pub fn run_handle(
        &self,
        workflow_id: impl Into<String>,
        run_id: impl Into<String>,
    ) -> WorkflowHandle {
        WorkflowHandle {
            client: self.clone(),
            workflow_id: workflow_id.into(),
            run_id: run_id.into(),
            started: false,
        }
    }

    /// One page of the runs `options` selects, newest first, in this client's namespace.
    ///
    /// ```no_run
    /// # async fn run(client: martix_sdk::Client) -> Result<(), martix_sdk::ClientError> {
    /// use martix_sdk::{ListOptions, WorkflowStatus};
    /// let mut options = ListOptions::new().status(WorkflowStatus::Failed);
    /// loop {
    ///     let page = client.list_workflows(&options).await?;
    ///     for run in &page.items {
    ///         println!("{} {}", run.workflow_id, run.run_id);
    ///     }
    ///     let Some(next) = page.next_page_token else { break };
    ///     options = options.page_token(next);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_workflows(
        &self,
        options: &ListOptions,
    ) -> Result<Page<WorkflowSummary>, ClientError> {
        let r = self
            .inner
            .clone()
            .list_workflows(options.request(&self.namespace))
            .await?
            .into_inner();
        Ok(Page {
            items: r.executions.into_iter().map(Into::into).collect(),
            next_page_token: PageToken::next(r.next_page_token),
        })
    }

    /// Every run `options` selects, newest first, from its page on: all pages, one request
    /// each.
    pub async fn list_all_workflows(
        &self,
        options: &ListOptions,
    ) -> Result<Vec<WorkflowSummary>, ClientError> {
        let mut options = options.clone();
        let mut runs = Vec::new();
        loop {
            let page = self.list_workflows(&options).await?;
            runs.extend(page.items);
            match page.next_page_token {
                Some(next) => options.page_token = Some(next),
                None => return Ok(runs),
            }
        }
    }
}

/// `value` as a payload, or an error naming `what` it is.
fn encode<T: Serialize + ?Sized>(
    value: &T,
    what: impl FnOnce() -> String,
) -> Result<pb::Payload, ClientError> {
    to_payload(value).map_err(|source| ClientError::Encode {
        what: what(),
        source,
    })
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

    /// The engine's answer as this handle's error: `NOT_FOUND` names this workflow.
    fn error(&self, status: tonic::Status) -> ClientError {
        if status.code() == tonic::Code::NotFound {
            ClientError::WorkflowNotFound {
                namespace: self.client.namespace.clone(),
                workflow_id: self.workflow_id.clone(),
                run_id: self.run_id.clone(),
            }
        } else {
            ClientError::Status(status)
        }
    }

    fn inner(&self) -> WorkflowServiceClient<Transport> {
        self.client.inner.clone()
    }

    /// Waits for the workflow's result, following continue-as-new to the last run.
    pub async fn result<O: DeserializeOwned>(&self) -> Result<O, ClientError> {
        let mut run = self.clone();
        loop {
            let r = run.poll_result(Duration::from_secs(30)).await?;
            if !r.closed {
                continue;
            }
            if let Some(next) = r.new_run_id {
                run.run_id = next;
                continue;
            }
            if r.status.is_success() {
                return r.result();
            }
            return Err(ClientError::WorkflowFailed {
                status: r.status.to_string(),
                failure: r.failure.map(|f| f.message).unwrap_or_default(),
            });
        }
    }

    /// Asks once how the run ended, waiting at most `wait` for it to close (zero: answers at
    /// once). The answer says whether it closed, its status, its result or failure, and the
    /// next run's id if it continued as new; unlike [`WorkflowHandle::result`] it does not
    /// follow continue-as-new, and a run that failed is an answer, not an error.
    ///
    /// ```no_run
    /// # async fn run(client: martix_sdk::Client) -> Result<(), martix_sdk::ClientError> {
    /// let r = client.handle("order-17").poll_result(std::time::Duration::ZERO).await?;
    /// if !r.closed {
    ///     println!("still running");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn poll_result(&self, wait: Duration) -> Result<RunOutcome, ClientError> {
        self.inner()
            .get_workflow_result(pb::GetWorkflowResultRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
                wait: (!wait.is_zero()).then(|| dur(wait)),
            })
            .await
            .map(|r| r.into_inner().into())
            .map_err(|s| self.error(s))
    }

    /// The run's status, what it waits for (activities, timers, its workflow task), and who
    /// polls its queue.
    ///
    /// ```no_run
    /// # async fn run(client: martix_sdk::Client) -> Result<(), martix_sdk::ClientError> {
    /// let d = client.handle("order-17").describe().await?;
    /// println!("{} is {}", d.summary.workflow_id, d.summary.status);
    /// for a in &d.pending_activities {
    ///     println!("  {} attempt {}", a.activity_type, a.attempt);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn describe(&self) -> Result<WorkflowDescription, ClientError> {
        self.inner()
            .describe_workflow(pb::DescribeWorkflowRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
            })
            .await
            .map(|r| r.into_inner().into())
            .map_err(|s| self.error(s))
    }

    /// The whole history, all pages. History events are the engine's wire form
    /// ([`crate::proto::HistoryEvent`]): what the [`Replayer`](crate::Replayer) replays and
    /// `martix workflow history` exports.
    pub async fn history(&self) -> Result<Vec<pb::HistoryEvent>, ClientError> {
        read_history(&self.client.inner, &self.client.namespace, self.execution())
            .await
            .map_err(|s| self.error(s))
    }

    /// The run's history with the ids that name the run (namespace, workflow id, run id,
    /// first and continued-from run ids): what `martix workflow history ID --output json`
    /// exports and [`Replayer::replay_history`](crate::Replayer::replay_history) replays as the
    /// worker ran it. A handle on the latest run exports the run that is latest when called.
    ///
    /// ```no_run
    /// # async fn run(client: martix_sdk::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let history = client.handle("order-17").export_history().await?;
    /// std::fs::write("order-17.json", serde_json::to_string_pretty(&history)?)?;
    /// # Ok(()) }
    /// ```
    pub async fn export_history(&self) -> Result<WorkflowHistory, ClientError> {
        let run = self.pinned().await?;
        let events = run.history().await?;
        Ok(WorkflowHistory::new(
            self.client.namespace.clone(),
            run.workflow_id,
            run.run_id,
            events,
        ))
    }

    /// This handle if it names its run, else one on the run that is latest now.
    pub async fn pinned(&self) -> Result<WorkflowHandle, ClientError> {
        let mut run = self.clone();
        if run.run_id.is_empty() {
            run.run_id = self.describe().await?.summary.run_id;
        }
        Ok(run)
    }

    /// One page of the history (the engine's page size, up to 1000 events), from the start
    /// or from where the page that gave `page_token` stopped.
    pub async fn history_page(
        &self,
        page_token: Option<&PageToken>,
    ) -> Result<Page<pb::HistoryEvent>, ClientError> {
        let r = self
            .inner()
            .get_workflow_history(pb::GetWorkflowHistoryRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
                page_size: 0,
                next_page_token: page_token.map_or_else(Vec::new, |t| t.0.clone()),
            })
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        Ok(Page {
            items: r.events,
            next_page_token: PageToken::next(r.next_page_token),
        })
    }

    /// The run's events as they are recorded: those there already, then new ones as they
    /// come (looked for twice a second), ending after the event that closes the run. A handle
    /// on the latest run follows the run that is latest when the stream starts, not the runs
    /// it continues as.
    ///
    /// ```no_run
    /// # async fn run(client: martix_sdk::Client) -> Result<(), martix_sdk::ClientError> {
    /// use futures::StreamExt;
    /// let mut events = std::pin::pin!(client.handle("order-17").follow_history());
    /// while let Some(event) = events.next().await {
    ///     println!("{}", event?.event_id);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn follow_history(
        &self,
    ) -> impl Stream<Item = Result<pb::HistoryEvent, ClientError>> + Send + 'static {
        struct Follow {
            run: WorkflowHandle,
            pinned: bool,
            next_event_id: i64,
            ready: VecDeque<pb::HistoryEvent>,
            closed: bool,
            looked: bool,
        }
        let state = Follow {
            run: self.clone(),
            pinned: !self.run_id.is_empty(),
            next_event_id: 1,
            ready: VecDeque::new(),
            closed: false,
            looked: false,
        };
        futures::stream::try_unfold(state, |mut s| async move {
            loop {
                if let Some(event) = s.ready.pop_front() {
                    return Ok(Some((event, s)));
                }
                if s.closed {
                    return Ok(None);
                }
                if s.looked {
                    tokio::time::sleep(FOLLOW_INTERVAL).await;
                }
                s.looked = true;
                // Status first: when it says closed, the history read after it holds the
                // closing event.
                let run = s.run.describe().await?.summary;
                if !s.pinned {
                    s.run.run_id = run.run_id;
                    s.pinned = true;
                }
                s.closed = run.status != WorkflowStatus::Running;
                for e in s.run.history().await? {
                    if e.event_id >= s.next_event_id {
                        s.next_event_id = e.event_id + 1;
                        s.ready.push_back(e);
                    }
                }
            }
        })
    }

    /// Sends signal `S` with `payload` (its type checked at compile time).
    ///
    /// ```no_run
    /// # use martix_sdk::{Client, Signal};
    /// struct Approve;
    /// impl Signal for Approve {
    ///     const NAME: &'static str = "approve";
    ///     type Payload = String;
    /// }
    /// # async fn run(client: Client) -> Result<(), martix_sdk::ClientError> {
    /// client.handle("order-17").signal(Approve, &"alice".to_owned()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn signal<S: Signal>(
        &self,
        _signal: S,
        payload: &S::Payload,
    ) -> Result<(), ClientError> {
        self.signal_by_name_once(S::NAME, payload, "").await
    }

    /// Sends signal `S` at most once per `request_id` (empty: no deduplication): a retry
    /// after a lost answer, or a redelivered message, does not signal twice.
    pub async fn signal_once<S: Signal>(
        &self,
        _signal: S,
        payload: &S::Payload,
        request_id: &str,
    ) -> Result<(), ClientError> {
        self.signal_by_name_once(S::NAME, payload, request_id).await
    }

    /// Sends the signal named `name`: the string form of [`WorkflowHandle::signal`].
    pub async fn signal_by_name<I: Serialize + ?Sized>(
        &self,
        name: &str,
        input: &I,
    ) -> Result<(), ClientError> {
        self.signal_by_name_once(name, input, "").await
    }

    /// Sends the signal named `name` at most once per `request_id`: the string form of
    /// [`WorkflowHandle::signal_once`].
    pub async fn signal_by_name_once<I: Serialize + ?Sized>(
        &self,
        name: &str,
        input: &I,
        request_id: &str,
    ) -> Result<(), ClientError> {
        self.inner()
            .signal_workflow(pb::SignalWorkflowRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
                signal_name: name.to_owned(),
                input: Some(encode(input, || format!("signal '{name}'"))?),
                identity: self.client.identity.clone(),
                request_id: request_id.to_owned(),
            })
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Asks the run query `Q` with `args`: its handler (see
    /// [`WorkflowContext::on_query`](crate::WorkflowContext::on_query)) answers on a worker of
    /// the run's task queue, from the state after the run's last completed workflow task. Works
    /// on open and closed runs; changes nothing. `INVALID_ARGUMENT` when the workflow has no
    /// such handler or the arguments do not decode, `DEADLINE_EXCEEDED` when no worker
    /// answered within the engine's query timeout (10 s).
    pub async fn query<Q: crate::Query>(
        &self,
        _query: Q,
        args: &Q::Args,
    ) -> Result<Q::Output, ClientError> {
        self.query_by_name(Q::NAME, args).await
    }

    /// The string form of [`WorkflowHandle::query`]: the query by its name, the answer decoded
    /// as `O`.
    pub async fn query_by_name<A: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        name: &str,
        args: &A,
    ) -> Result<O, ClientError> {
        let answer = self
            .inner()
            .query_workflow(pb::QueryWorkflowRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
                query_type: name.to_owned(),
                query_args: Some(encode(args, || format!("the arguments of query '{name}'"))?),
            })
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        Ok(crate::payload::from_payload(answer.result.as_ref())?)
    }

    /// Asks the workflow to cancel; its code decides what that means (a saga compensates).
    pub async fn cancel(&self, reason: &str) -> Result<(), ClientError> {
        self.inner()
            .cancel_workflow(pb::CancelWorkflowRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
                reason: reason.to_owned(),
                identity: self.client.identity.clone(),
            })
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Stops the run now, without running any more workflow code.
    pub async fn terminate(&self, reason: &str) -> Result<(), ClientError> {
        self.inner()
            .terminate_workflow(pb::TerminateWorkflowRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
                reason: reason.to_owned(),
                identity: self.client.identity.clone(),
            })
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Pauses the run: none of its workflow or activity tasks is handed out until it is
    /// resumed; tasks running now finish and their results, timers coming due and signals are
    /// recorded. `reason` is required and shown by describe and list. Returns `false` if the
    /// run was paused already (nothing changed).
    pub async fn pause(&self, reason: &str) -> Result<bool, ClientError> {
        let r = self
            .inner()
            .pause_workflow(pb::PauseWorkflowRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
                reason: reason.to_owned(),
                identity: self.client.identity.clone(),
            })
            .await
            .map_err(|s| self.error(s))?;
        Ok(r.into_inner().changed)
    }

    /// Resumes a paused run: its tasks are available again, an activity waiting for its next
    /// attempt at that attempt's time. Returns `false` if the run was not paused.
    pub async fn resume(&self, reason: &str) -> Result<bool, ClientError> {
        let r = self
            .inner()
            .resume_workflow(pb::ResumeWorkflowRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
                reason: reason.to_owned(),
                identity: self.client.identity.clone(),
            })
            .await
            .map_err(|s| self.error(s))?;
        Ok(r.into_inner().changed)
    }

    /// Starts a new run from a workflow-task boundary of this one (its history up to `to` is
    /// copied and `reason` recorded); this run is terminated and names the new one. Returns
    /// a handle on the new run.
    pub async fn reset(&self, to: ResetPoint, reason: &str) -> Result<WorkflowHandle, ClientError> {
        let r = self
            .inner()
            .reset_workflow(pb::ResetWorkflowRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
                workflow_task_finish_event_id: to.event_id(),
                reason: reason.to_owned(),
                identity: self.client.identity.clone(),
            })
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        Ok(self
            .client
            .started_handle(self.workflow_id.clone(), r.run_id, true))
    }

    /// Runs now the activities waiting for their next attempt: all of them, or only the one
    /// with id `activity_id`; `reset_attempts` counts attempts from 1 again. Returns the ids of
    /// the activities retried.
    ///
    /// # Errors
    ///
    /// With an `activity_id`, `NOT_FOUND` may mean that no such activity waits, so it is
    /// [`ClientError::Status`] with the engine's message, not
    /// [`ClientError::WorkflowNotFound`]. When no activity waits for its next attempt, the
    /// engine answers `FAILED_PRECONDITION`.
    pub async fn retry_activities(
        &self,
        activity_id: Option<&str>,
        reset_attempts: bool,
    ) -> Result<Vec<String>, ClientError> {
        let r = self
            .inner()
            .retry_activity(pb::RetryActivityRequest {
                namespace: self.client.namespace.clone(),
                execution: self.execution(),
                activity_id: activity_id.unwrap_or_default().to_owned(),
                reset_attempts,
            })
            .await
            .map_err(|s| match activity_id {
                Some(_) => ClientError::Status(s),
                None => self.error(s),
            })?
            .into_inner();
        Ok(r.activity_ids)
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
