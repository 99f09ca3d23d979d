//! `Worker`: polls a task queue, runs workflow tasks (with a cache of live runs) and
//! activities, and reports back.
//!
//! This file owns the `Worker` type: how it is made and what it runs (registration), its
//! counters, and `Worker::run`, which starts the pollers and, at shutdown, lets the task set
//! drain; with the two helpers the task files share (a job in the task set holding its slot,
//! and retrying a report while the engine is unreachable). Its parts, one job a file:
//! `options` (`WorkerOptions`), `cache` (the live runs), `pollers` (the long polls),
//! `workflow_task` and `activity_task` (running one task of each kind), `query_task`
//! (answering a query), `eager` (work handed
//! over with a report, and deciding ahead).

mod activity_task;
mod breakers;
mod cache;
mod eager;
mod options;
mod pollers;
mod query_task;
mod workflow_task;

pub use breakers::{BreakerHold, BreakerReporter, BreakerState};
pub use options::WorkerOptions;

use crate::activity::{ActivityContext, ActivityFn};
use crate::connection::{ConnectOptions, Transport};
use crate::error::ActivityError;
use crate::error::WorkflowError;
use crate::workflow::{WorkflowContext, WorkflowFn};
use cache::RunCache;
use eager::Eager;
use martix_proto::v1 as pb;
use pb::worker_service_client::WorkerServiceClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Counters of what the worker did; for tests and metrics.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Workflow tasks served by a cached run (only new events applied).
    pub cache_hits: std::sync::atomic::AtomicU64,
    /// Workflow tasks that replayed the run from its full history.
    pub cache_misses: std::sync::atomic::AtomicU64,
    /// History events received with workflow tasks.
    pub events_received: std::sync::atomic::AtomicU64,
    /// Activity attempts handed over with a workflow task's completion instead of polled.
    pub eager_activities: std::sync::atomic::AtomicU64,
    /// Workflow tasks handed over with an activity's result instead of polled.
    pub eager_workflow_tasks: std::sync::atomic::AtomicU64,
    /// Decisions made ahead with an activity's result and recorded with it.
    pub decisions_recorded: std::sync::atomic::AtomicU64,
    /// Decisions made ahead that the engine did not record (the run had other new events).
    pub decisions_refused: std::sync::atomic::AtomicU64,
}

/// Runs registered workflows and activities for one task queue.
pub struct Worker {
    client: WorkerServiceClient<Transport>,
    history: pb::workflow_service_client::WorkflowServiceClient<Transport>,
    /// This worker's own queue for the runs it keeps cached (empty: no cache).
    sticky_queue: String,
    options: WorkerOptions,
    workflows: HashMap<String, WorkflowFn>,
    activities: HashMap<String, ActivityFn>,
    cache: Arc<Mutex<RunCache>>,
    stats: Arc<WorkerStats>,
    /// Set while running, when eager activities are on: where to run them.
    eager: Option<Eager>,
}

impl Worker {
    /// A worker that talks to the engine at `endpoint` (`http://127.0.0.1:7233`). Connects
    /// lazily and reconnects with backoff, so the engine need not be up yet.
    pub fn new(endpoint: &str, options: WorkerOptions) -> Result<Self, crate::ClientError> {
        Self::connect_with(endpoint, &ConnectOptions::default(), options)
    }

    /// A worker with a token and TLS trust (connects lazily too).
    pub fn connect_with(
        endpoint: &str,
        connection: &ConnectOptions,
        options: WorkerOptions,
    ) -> Result<Self, crate::ClientError> {
        Ok(Self::from_transport(
            connection.connect_lazy(endpoint)?,
            options,
        ))
    }

    /// A worker on an existing channel, without credentials.
    pub fn from_channel(channel: Channel, options: WorkerOptions) -> Self {
        Self::from_transport(crate::connection::plain(channel), options)
    }

    /// A worker on a channel with credentials.
    pub fn from_transport(channel: Transport, options: WorkerOptions) -> Self {
        let sticky_queue = if options.max_cached_workflows > 0 {
            format!(
                "{}/sticky/{}",
                options.task_queue,
                uuid::Uuid::new_v4().simple()
            )
        } else {
            String::new()
        };
        Self {
            client: WorkerServiceClient::new(channel.clone())
                .max_decoding_message_size(crate::MAX_MESSAGE_BYTES),
            history: pb::workflow_service_client::WorkflowServiceClient::new(channel)
                .max_decoding_message_size(crate::MAX_MESSAGE_BYTES),
            sticky_queue,
            cache: Arc::new(Mutex::new(RunCache::new(options.max_cached_workflows))),
            options,
            workflows: HashMap::new(),
            activities: HashMap::new(),
            stats: Arc::default(),
            eager: None,
        }
    }

    /// Registers `f` as the code of workflow `W`; its input and output are `W`'s, checked at
    /// compile time.
    ///
    /// ```no_run
    /// # use martix_sdk::{Worker, WorkerOptions, Workflow, WorkflowContext, WorkflowError};
    /// struct Greet;
    /// impl Workflow for Greet {
    ///     const NAME: &'static str = "greet";
    ///     type Input = String;
    ///     type Output = String;
    /// }
    /// async fn greet(_ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
    ///     Ok(format!("hello {name}"))
    /// }
    /// # fn main() -> Result<(), martix_sdk::ClientError> {
    /// let mut worker = Worker::new("http://127.0.0.1:7233", WorkerOptions::new("hello"))?;
    /// worker.workflow(Greet, greet);
    /// # Ok(()) }
    /// ```
    pub fn workflow<W, F, Fut>(&mut self, _workflow: W, f: F) -> &mut Self
    where
        W: crate::Workflow,
        F: Fn(WorkflowContext, W::Input) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<W::Output, WorkflowError>> + Send + 'static,
    {
        self.register_workflow(W::NAME, f)
    }

    /// Registers `f` as the code of activity `A`; its input and output are `A`'s, checked at
    /// compile time.
    ///
    /// ```no_run
    /// # use martix_sdk::{Activity, ActivityContext, ActivityError, Worker, WorkerOptions};
    /// struct Compose;
    /// impl Activity for Compose {
    ///     const NAME: &'static str = "compose";
    ///     type Input = String;
    ///     type Output = String;
    /// }
    /// async fn compose(_ctx: ActivityContext, name: String) -> Result<String, ActivityError> {
    ///     Ok(format!("hello, {name}"))
    /// }
    /// # fn main() -> Result<(), martix_sdk::ClientError> {
    /// let mut worker = Worker::new("http://127.0.0.1:7233", WorkerOptions::new("hello"))?;
    /// worker.activity(Compose, compose);
    /// # Ok(()) }
    /// ```
    pub fn activity<A, F, Fut>(&mut self, _activity: A, f: F) -> &mut Self
    where
        A: crate::Activity,
        F: Fn(ActivityContext, A::Input) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<A::Output, ActivityError>> + Send + 'static,
    {
        self.register_activity(A::NAME, f)
    }

    /// Registers a workflow type by its name: the string form of [`Worker::workflow`].
    ///
    /// ```no_run
    /// # use martix_sdk::{Worker, WorkerOptions, WorkflowContext, WorkflowError};
    /// async fn greet(_ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
    ///     Ok(format!("hello {name}"))
    /// }
    /// # fn main() -> Result<(), martix_sdk::ClientError> {
    /// let mut worker = Worker::new("http://127.0.0.1:7233", WorkerOptions::new("hello"))?;
    /// worker.register_workflow("greet", greet);
    /// # Ok(()) }
    /// ```
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

    /// Registers an activity type by its name: the string form of [`Worker::activity`].
    pub fn register_activity<F, Fut, I, O>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<O, ActivityError>> + Send + 'static,
        I: serde::de::DeserializeOwned + Send + 'static,
        O: serde::Serialize + Send + 'static,
    {
        self.activities
            .insert(name.to_owned(), crate::activity::erase(f));
        self
    }

    /// A handle that reports this worker's circuit breakers to the engine under its identity
    /// and namespace; it stays usable while the worker runs.
    pub fn breaker_reporter(&self) -> BreakerReporter {
        BreakerReporter {
            client: self.client.clone(),
            namespace: self.options.namespace.clone(),
            identity: self.options.identity.clone(),
        }
    }

    /// What the worker did so far.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Polls and runs tasks until `shutdown` is cancelled, then stops polling, lets in-flight
    /// tasks finish within the grace period and abandons the rest (their leases run out and
    /// the engine hands them out again).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let wf_slots = Arc::new(Semaphore::new(self.options.max_concurrent_workflow_tasks));
        let act_slots = Arc::new(Semaphore::new(self.options.max_concurrent_activities));
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let work = CancellationToken::new();
        if !self.activities.is_empty() && self.options.max_eager_activities > 0 {
            self.eager = Some(Eager::new(
                act_slots.clone(),
                wf_slots.clone(),
                tasks.clone(),
                work.clone(),
                shutdown.clone(),
            ));
        }
        let me = Arc::new(self);
        let mut pollers = JoinSet::new();
        if !me.workflows.is_empty() {
            // Each poll holds a workflow slot while it waits: leave the sticky poller one.
            let workflow_pollers = me
                .options
                .workflow_pollers
                .min(me.options.max_concurrent_workflow_tasks.saturating_sub(1))
                .max(1);
            let mut queues = vec![me.options.task_queue.clone(); workflow_pollers];
            if !me.sticky_queue.is_empty() {
                queues.push(me.sticky_queue.clone());
            }
            for queue in queues {
                pollers.spawn(me.clone().poll_workflows(
                    queue,
                    shutdown.clone(),
                    wf_slots.clone(),
                    tasks.clone(),
                ));
            }
        }
        if !me.activities.is_empty() {
            for _ in 0..me.options.activity_pollers.max(1) {
                pollers.spawn(me.clone().poll_activities(
                    shutdown.clone(),
                    work.clone(),
                    act_slots.clone(),
                    tasks.clone(),
                ));
            }
        }
        while pollers.join_next().await.is_some() {}
        // Drain until nothing is left: tasks in flight may still have started others.
        let take = || std::mem::take(&mut *tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let drained = tokio::time::timeout(me.options.shutdown_grace, async {
            loop {
                let mut inflight = take();
                if inflight.is_empty() {
                    return;
                }
                while inflight.join_next().await.is_some() {}
            }
        })
        .await;
        if drained.is_err() {
            let mut left = take();
            tracing::warn!(left = left.len(), "shutdown grace over; abandoning tasks");
            work.cancel();
            left.abort_all();
        }
    }
}

/// Runs `job` among `tasks`, holding `permit` (its slot) until it ends. Finished jobs are let
/// go first: a `JoinSet` keeps them until joined.
fn spawn_holding(
    tasks: &Mutex<JoinSet<()>>,
    job: impl std::future::Future<Output = ()> + Send + 'static,
    permit: OwnedSemaphorePermit,
) {
    let mut set = tasks.lock().unwrap_or_else(|p| p.into_inner());
    while set.try_join_next().is_some() {}
    set.spawn(async move {
        job.await;
        drop(permit);
    });
}

/// Retries a call while the engine is unreachable (restarting, or the network is down), with
/// backoff, for up to 30 s. Answers from the engine, errors included, are returned at once.
async fn retry_unavailable<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut delay = Duration::from_millis(50);
    loop {
        match call().await {
            Err(s)
                if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
                    && tokio::time::Instant::now() + delay < deadline =>
            {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}
