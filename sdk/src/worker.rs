//! `Worker`: polls a task queue, runs workflow tasks (with a cache of live runs) and
//! activities, and reports back.

use crate::activity::{ActivityContext, ActivityFn};
use crate::connection::{ConnectOptions, Transport};
use crate::error::ActivityError;
use crate::error::WorkflowError;
use crate::workflow::{RunDriver, WorkflowContext, WorkflowFn, WorkflowInfo};
use martix_proto::v1 as pb;
use pb::worker_service_client::WorkerServiceClient;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::Instrument;

/// Limits and names of a worker.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// The queue to poll.
    pub task_queue: String,
    /// The namespace of the queue.
    pub namespace: String,
    /// Shown in history as who did the work.
    pub identity: String,
    /// Live runs kept between workflow tasks; a run not in the cache is replayed from history.
    pub max_cached_workflows: usize,
    /// Workflow tasks run at once.
    pub max_concurrent_workflow_tasks: usize,
    /// Activities run at once.
    pub max_concurrent_activities: usize,
    /// Concurrent long polls for workflow tasks (32 by default, at most the workflow slots
    /// less one). A task committed while one of them waits, or is on its way to the engine, is
    /// written already leased to it and handed over in memory; one that finds none is claimed
    /// later with a transaction of its own. Waiting polls cost the engine little: a queue's
    /// polls on a node look in the store about once a second between them, not each.
    pub workflow_pollers: usize,
    /// Concurrent long polls for activity tasks.
    pub activity_pollers: usize,
    /// How long in-flight tasks may finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Activities a workflow task schedules on this queue come back with its completion,
    /// leased to this worker, up to this many at a time (0: always poll for them).
    pub max_eager_activities: usize,
    /// When an activity of a run this worker keeps cached completes, the worker runs the
    /// workflow's next decision at once and reports it with the result: one request and one
    /// transaction instead of two, recorded if the run has nothing else new.
    pub decide_ahead: bool,
}

impl WorkerOptions {
    /// Defaults for a worker of `task_queue` in namespace `default`.
    pub fn new(task_queue: impl Into<String>) -> Self {
        Self {
            task_queue: task_queue.into(),
            namespace: "default".into(),
            identity: format!("worker-{}", std::process::id()),
            max_cached_workflows: 1000,
            max_concurrent_workflow_tasks: 64,
            max_concurrent_activities: 256,
            // 32: under load a poller is mostly between one task and the next; with fewer,
            // most new runs found none waiting or on its way and their first workflow task
            // cost a claim transaction (with 8: 3,314 claims per 4,000 sagas at C = 64; with
            // 32 and holds: 231).
            workflow_pollers: 32,
            activity_pollers: 2,
            shutdown_grace: Duration::from_secs(10),
            max_eager_activities: 8,
            decide_ahead: true,
        }
    }

    /// Sets the cache size (0 replays every task from the full history).
    pub fn max_cached_workflows(mut self, n: usize) -> Self {
        self.max_cached_workflows = n;
        self
    }

    /// Sets the namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }
}

type Cached = Arc<tokio::sync::Mutex<RunDriver>>;

/// A bounded cache of live runs, least recently used evicted first.
struct RunCache {
    capacity: usize,
    runs: HashMap<String, Cached>,
    order: VecDeque<String>,
}

impl RunCache {
    fn get(&mut self, run_id: &str) -> Option<Cached> {
        let hit = self.runs.get(run_id).cloned();
        if hit.is_some() {
            self.order.retain(|r| r != run_id);
            self.order.push_back(run_id.to_owned());
        }
        hit
    }

    fn insert(&mut self, run_id: &str, driver: Cached) {
        if self.capacity == 0 {
            return;
        }
        while self.runs.len() >= self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.runs.remove(&old);
        }
        self.runs.insert(run_id.to_owned(), driver);
        self.order.push_back(run_id.to_owned());
    }

    fn contains(&self, run_id: &str) -> bool {
        self.runs.contains_key(run_id)
    }

    fn remove(&mut self, run_id: &str) {
        self.runs.remove(run_id);
        self.order.retain(|r| r != run_id);
    }
}

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

/// What a workflow task needs to start the activities handed to it eagerly.
struct Eager {
    slots: Arc<Semaphore>,
    workflow_slots: Arc<Semaphore>,
    tasks: Arc<Mutex<JoinSet<()>>>,
    work: CancellationToken,
    /// Once shutdown begins, no more work is taken eagerly.
    shutdown: CancellationToken,
}

impl Eager {
    /// Runs `job`, work handed over eagerly, holding `permit` (its slot) until it ends.
    fn spawn(
        &self,
        job: impl std::future::Future<Output = ()> + Send + 'static,
        permit: OwnedSemaphorePermit,
    ) {
        spawn_holding(&self.tasks, job, permit);
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
            cache: Arc::new(Mutex::new(RunCache {
                capacity: options.max_cached_workflows,
                runs: HashMap::new(),
                order: VecDeque::new(),
            })),
            options,
            workflows: HashMap::new(),
            activities: HashMap::new(),
            stats: Arc::default(),
            eager: None,
        }
    }

    /// Registers a workflow type.
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

    /// Registers an activity type.
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
            self.eager = Some(Eager {
                slots: act_slots.clone(),
                workflow_slots: wf_slots.clone(),
                tasks: tasks.clone(),
                work: work.clone(),
                shutdown: shutdown.clone(),
            });
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

    async fn backoff(shutdown: &CancellationToken, failures: &mut u32) {
        let ms = (100u64 << (*failures).min(6)).min(5_000);
        *failures += 1;
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(ms)) => {}
        }
    }

    /// Polls one queue while a slot is free and hands each task to `run` in the task set;
    /// backs off while the engine is unreachable; stops at `shutdown`. `poll` answers `None`
    /// for an empty long poll.
    async fn poll_loop<T, P, PF, R, RF>(
        shutdown: CancellationToken,
        slots: Arc<Semaphore>,
        tasks: Arc<Mutex<JoinSet<()>>>,
        what: &'static str,
        poll: P,
        run: R,
    ) where
        P: Fn() -> PF,
        PF: std::future::Future<Output = Result<Option<T>, tonic::Status>>,
        R: Fn(T) -> RF,
        RF: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut failures = 0;
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => return,
                p = slots.clone().acquire_owned() => p.expect("semaphore open"),
            };
            let task = tokio::select! {
                () = shutdown.cancelled() => return,
                r = poll() => r,
            };
            match task {
                Ok(None) => failures = 0,
                Ok(Some(t)) => {
                    failures = 0;
                    spawn_holding(&tasks, run(t), permit);
                }
                Err(status) => {
                    tracing::warn!(error = %status, what, "poll failed; retrying");
                    Self::backoff(&shutdown, &mut failures).await;
                }
            }
        }
    }

    async fn poll_workflows(
        self: Arc<Self>,
        queue: String,
        shutdown: CancellationToken,
        slots: Arc<Semaphore>,
        tasks: Arc<Mutex<JoinSet<()>>>,
    ) {
        let poll = || {
            let mut client = self.client.clone();
            let request = pb::PollWorkflowTaskRequest {
                namespace: self.options.namespace.clone(),
                task_queue: queue.clone(),
                identity: self.options.identity.clone(),
            };
            async move {
                let t = client.poll_workflow_task(request).await?.into_inner();
                Ok((!t.task_token.is_empty()).then_some(t))
            }
        };
        let run = |t: pb::PollWorkflowTaskResponse| self.workflow_job(t);
        Self::poll_loop(shutdown, slots, tasks, "workflow", poll, run).await;
    }

    async fn run_workflow_task(self: Arc<Self>, mut task: pb::PollWorkflowTaskResponse) {
        use std::sync::atomic::Ordering::Relaxed;
        let exec = task.workflow_execution.clone().unwrap_or_default();
        let run_id = exec.run_id.clone();
        self.stats
            .events_received
            .fetch_add(task.history.len() as u64, Relaxed);
        let Some(workflow) = self.workflows.get(&task.workflow_type).cloned() else {
            self.fail_workflow_task(
                &task,
                pb::WorkflowTaskFailedCause::UnknownWorkflowType,
                format!(
                    "workflow type '{}' is not registered on this worker",
                    task.workflow_type
                ),
            )
            .await;
            return;
        };
        // The first event delivered; a sticky task may deliver none (its worker was given them
        // with the completion that scheduled it).
        let first = task.history.first().map(|e| e.event_id);
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&run_id);
        // The cached run is usable if it is still the cached one once locked (a refused
        // completion, made under this lock, evicts it: its state went beyond what history
        // recorded) and nothing is missing between it and this task's events.
        let mut usable = None;
        if let Some(d) = cached {
            let guard = d.clone().lock_owned().await;
            let current = self
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&run_id)
                .is_some_and(|c| Arc::ptr_eq(&c, &d));
            if current && first.is_none_or(|f| guard.processed + 1 >= f) {
                usable = Some(guard);
            }
        }
        let mut d = match usable {
            Some(guard) => {
                self.stats.cache_hits.fetch_add(1, Relaxed);
                guard
            }
            None => {
                self.stats.cache_misses.fetch_add(1, Relaxed);
                if first != Some(1) {
                    // A sticky task for a run this worker no longer holds: read it all.
                    match crate::client::read_history(
                        &self.history,
                        &task.namespace,
                        task.workflow_execution.clone(),
                    )
                    .await
                    {
                        Ok(events) => task.history = events,
                        Err(status) => {
                            tracing::warn!(run_id = %run_id, error = %status, "cannot read history; the task will time out and be retried");
                            return;
                        }
                    }
                }
                let info = WorkflowInfo {
                    namespace: task.namespace.clone(),
                    workflow_id: exec.workflow_id.clone(),
                    run_id: run_id.clone(),
                    workflow_type: task.workflow_type.clone(),
                    task_queue: self.options.task_queue.clone(),
                };
                let d = Arc::new(tokio::sync::Mutex::new(RunDriver::new(workflow, info)));
                let guard = d.clone().lock_owned().await;
                self.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(&run_id, d);
                guard
            }
        };
        // The run stays locked until the engine has answered: another task of this run
        // waits, and finds the run evicted if this completion is refused.
        let outcome = d
            .apply_history(&task.history)
            .and_then(|()| d.activate_live());
        let finished = d.finished;
        let keep = match outcome {
            Ok(commands) => {
                let mut permits = self.eager_activity_permits(&commands);
                let sticky_queue = if finished {
                    String::new()
                } else {
                    self.sticky_queue.clone()
                };
                let request = pb::RespondWorkflowTaskCompletedRequest {
                    task_token: task.task_token.clone(),
                    commands,
                    identity: self.options.identity.clone(),
                    return_history: !sticky_queue.is_empty(),
                    sticky_queue,
                    eager_activity_queue: if permits.is_empty() {
                        String::new()
                    } else {
                        self.options.task_queue.clone()
                    },
                    eager_activity_slots: permits.len() as i32,
                };
                let r = retry_unavailable(|| {
                    let mut client = self.client.clone();
                    let request = request.clone();
                    async move { client.respond_workflow_task_completed(request).await }
                })
                .await;
                match r {
                    Err(status) => {
                        tracing::info!(run_id = %run_id, error = %status, "workflow task completion refused; replaying next time");
                        false
                    }
                    Ok(resp) => {
                        let resp = resp.into_inner();
                        self.spawn_eager_activities(resp.activity_tasks, &mut permits);
                        // The copy takes what the engine recorded, so it can decide ahead.
                        !finished && self.catch_up(&mut d, &run_id, &resp.history)
                    }
                }
            }
            Err(e) => {
                let cause = match e {
                    crate::workflow::ActivationError::Nondeterminism(_) => {
                        pb::WorkflowTaskFailedCause::NonDeterminism
                    }
                    _ => pb::WorkflowTaskFailedCause::WorkflowWorkerError,
                };
                tracing::error!(run_id = %run_id, error = %e, "workflow task failed");
                self.fail_workflow_task(&task, cause, e.to_string()).await;
                false
            }
        };
        if !keep {
            self.evict(&run_id);
        }
        drop(d);
    }

    /// Drops a cached run (its copy is no longer what history holds, or the run is done).
    fn evict(&self, run_id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
    }

    /// Free activity slots, taken now, for the activities `commands` schedule on this
    /// worker's queue: they may come back eagerly with the answer.
    fn eager_activity_permits(&self, commands: &[pb::Command]) -> Vec<OwnedSemaphorePermit> {
        let mut permits = Vec::new();
        let Some(e) = self.eager.as_ref().filter(|e| !e.shutdown.is_cancelled()) else {
            return permits;
        };
        let wanted = commands
            .iter()
            .filter(|c| {
                matches!(
                    &c.attributes,
                    Some(pb::command::Attributes::ScheduleActivity(a))
                        if a.task_queue.is_empty() || a.task_queue == self.options.task_queue
                )
            })
            .count()
            .min(self.options.max_eager_activities);
        while permits.len() < wanted {
            match e.slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        permits
    }

    /// Runs activities handed over eagerly, each holding one of `permits`.
    fn spawn_eager_activities(
        self: &Arc<Self>,
        tasks: Vec<pb::PollActivityTaskResponse>,
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) {
        let Some(e) = &self.eager else { return };
        for t in tasks {
            let Some(permit) = permits.pop() else { break };
            self.stats
                .eager_activities
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            e.spawn(self.activity_job(t, e.work.child_token()), permit);
        }
    }

    /// Applies events the engine returned (what a completion appended) to a cached run;
    /// whether the copy is still worth keeping.
    fn catch_up(&self, d: &mut RunDriver, run_id: &str, events: &[pb::HistoryEvent]) -> bool {
        if events.is_empty() {
            return true;
        }
        match d.apply_history(events) {
            Ok(()) => !d.finished,
            Err(e) => {
                tracing::warn!(run_id = %run_id, error = %e, "cached run disagrees with the events recorded; dropping it");
                false
            }
        }
    }

    /// Runs the workflow's next decision on the cached run as if a workflow task delivered
    /// this activity's result: the run, locked, and the request's decision. `None` when the run
    /// is not cached, busy, or behind the engine; a run the activation fails on is dropped
    /// (its workflow task then fails it the usual way).
    fn decide_ahead(
        &self,
        task: &pb::PollActivityTaskResponse,
        result: &pb::Payload,
    ) -> Option<(
        tokio::sync::OwnedMutexGuard<RunDriver>,
        pb::WorkflowDecision,
    )> {
        if !self.options.decide_ahead
            || self.sticky_queue.is_empty()
            || task.scheduled_event_id < 1
            || self
                .eager
                .as_ref()
                .is_none_or(|e| e.shutdown.is_cancelled())
        {
            return None;
        }
        let run_id = &task.workflow_execution.as_ref()?.run_id;
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)?;
        let mut d = cached.clone().try_lock_owned().ok()?;
        let still_cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .is_some_and(|c| Arc::ptr_eq(&c, &cached));
        // With other activities in flight their results would race this one (and a refused
        // decision costs a replay): then the result goes alone.
        if !still_cached || !d.is_current() || d.activities_in_flight() != 1 {
            return None;
        }
        let history_len = d.processed;
        let at = d.decision_time();
        let time = Some(martix_proto::time::to_timestamp(at));
        use pb::history_event::Attributes as A;
        let identity = self.options.identity.clone();
        let events = [
            A::ActivityTaskStarted(pb::ActivityTaskStartedAttributes {
                scheduled_event_id: task.scheduled_event_id,
                attempt: task.attempt,
                identity: identity.clone(),
                last_failure: None,
            }),
            A::ActivityTaskCompleted(pb::ActivityTaskCompletedAttributes {
                scheduled_event_id: task.scheduled_event_id,
                started_event_id: 0,
                result: Some(result.clone()),
                identity,
            }),
            A::WorkflowTaskScheduled(pb::WorkflowTaskScheduledAttributes {
                task_queue: self.sticky_queue.clone(),
                start_to_close_timeout: None,
                attempt: 1,
            }),
        ]
        .into_iter()
        .zip(history_len + 1..)
        .map(|(attributes, event_id)| pb::HistoryEvent {
            event_id,
            event_time: time,
            attributes: Some(attributes),
        })
        .collect::<Vec<_>>();
        match d.apply_history(&events).and_then(|()| d.activate_live()) {
            Ok(commands) => {
                let decision = pb::WorkflowDecision {
                    history_len,
                    decided_at: time,
                    commands,
                    sticky_queue: self.sticky_queue.clone(),
                    eager_activity_queue: self.options.task_queue.clone(),
                    eager_activity_slots: 0,
                };
                Some((d, decision))
            }
            Err(e) => {
                tracing::info!(run_id = %run_id, error = %e, "cannot decide ahead; the workflow task will");
                self.evict(run_id);
                None
            }
        }
    }

    async fn fail_workflow_task(
        &self,
        task: &pb::PollWorkflowTaskResponse,
        cause: pb::WorkflowTaskFailedCause,
        message: String,
    ) {
        let r = self
            .client
            .clone()
            .respond_workflow_task_failed(pb::RespondWorkflowTaskFailedRequest {
                task_token: task.task_token.clone(),
                cause: cause as i32,
                failure: Some(pb::Failure {
                    message,
                    r#type: cause.as_str_name().into(),
                    ..Default::default()
                }),
                identity: self.options.identity.clone(),
            })
            .await;
        if let Err(status) = r {
            tracing::warn!(error = %status, "could not report a failed workflow task");
        }
    }

    async fn poll_activities(
        self: Arc<Self>,
        shutdown: CancellationToken,
        work: CancellationToken,
        slots: Arc<Semaphore>,
        tasks: Arc<Mutex<JoinSet<()>>>,
    ) {
        let poll = || {
            let mut client = self.client.clone();
            let request = pb::PollActivityTaskRequest {
                namespace: self.options.namespace.clone(),
                task_queue: self.options.task_queue.clone(),
                identity: self.options.identity.clone(),
            };
            async move {
                let t = client.poll_activity_task(request).await?.into_inner();
                Ok((!t.task_token.is_empty()).then_some(t))
            }
        };
        let run = |t: pb::PollActivityTaskResponse| self.activity_job(t, work.child_token());
        Self::poll_loop(shutdown, slots, tasks, "activity", poll, run).await;
    }

    /// A workflow task as a job of the task set, in its span (a child of the run's trace).
    fn workflow_job(
        self: &Arc<Self>,
        t: pb::PollWorkflowTaskResponse,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let me = self.clone();
        let exec = t.workflow_execution.clone().unwrap_or_default();
        // A root in this process (a task handed over with another must not keep that one's
        // span open); its trace parent is the run's.
        let span = tracing::info_span!(
            parent: None,
            "workflow_task",
            otel.kind = "consumer",
            workflow_id = %exec.workflow_id,
            run_id = %exec.run_id,
            workflow_type = %t.workflow_type,
            attempt = t.attempt,
        );
        martix_proto::trace::set_parent(&span, &t.traceparent);
        async move { me.run_workflow_task(t).await }.instrument(span)
    }

    /// An activity attempt as a job of the task set, in its span (a child of the run's trace).
    fn activity_job(
        self: &Arc<Self>,
        t: pb::PollActivityTaskResponse,
        cancel: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let me = self.clone();
        let exec = t.workflow_execution.clone().unwrap_or_default();
        let span = tracing::info_span!(
            parent: None,
            "activity",
            otel.kind = "consumer",
            workflow_id = %exec.workflow_id,
            run_id = %exec.run_id,
            activity_type = %t.activity_type,
            activity_id = %t.activity_id,
            attempt = t.attempt,
        );
        martix_proto::trace::set_parent(&span, &t.traceparent);
        async move { me.run_activity(t, cancel).await }.instrument(span)
    }

    async fn run_activity(
        self: Arc<Self>,
        task: pb::PollActivityTaskResponse,
        cancel: CancellationToken,
    ) {
        let token = task.task_token.clone();
        let info = Arc::new(task);
        let outcome = match self.activities.get(&info.activity_type).cloned() {
            None => Err(ActivityError::retryable(
                "UnknownActivityType",
                format!(
                    "activity type '{}' is not registered on worker {}",
                    info.activity_type, self.options.identity
                ),
            )),
            Some(f) => {
                let input = info.input.clone();
                let ctx = ActivityContext {
                    info: info.clone(),
                    client: self.client.clone(),
                    cancel,
                };
                // A panic in the activity fails the attempt instead of the worker.
                match tokio::spawn(f(ctx, input).in_current_span()).await {
                    Ok(r) => r,
                    Err(e) => Err(ActivityError::retryable("Panic", e.to_string())),
                }
            }
        };
        let identity = self.options.identity.clone();
        // With the result, the workflow's next decision made on the cached run.
        let mut ahead = match &outcome {
            Ok(result) => self.decide_ahead(&info, result),
            Err(_) => None,
        };
        let mut permits = match &mut ahead {
            Some((_, decision)) => {
                let permits = self.eager_activity_permits(&decision.commands);
                decision.eager_activity_slots = permits.len() as i32;
                permits
            }
            None => Vec::new(),
        };
        let decision = ahead.as_ref().map(|(_, d)| d.clone());
        // The run's next workflow task may come back with the result when the result goes
        // alone: if this worker keeps the run cached and has a workflow slot free now. Not
        // with a decision made ahead, which the engine almost always records: the slot would
        // sit unused for the request's whole round trip, and with one activity in flight per
        // run the workflow slots all went to those, so the pollers, which need a slot before
        // they poll, stopped polling and each new run's first task waited in the store for a
        // claim of its own. A refused decision's workflow task goes to the sticky queue.
        let mut eager_permit = None;
        if let (Some(e), Some(exec), None) = (&self.eager, &info.workflow_execution, &decision)
            && !e.shutdown.is_cancelled()
            && !self.sticky_queue.is_empty()
            && self
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&exec.run_id)
        {
            eager_permit = e.workflow_slots.clone().try_acquire_owned().ok();
        }
        let eager_queue = if eager_permit.is_some() {
            self.sticky_queue.clone()
        } else {
            String::new()
        };
        // A finished activity's outcome is worth delivering through an engine restart.
        let client = &self.client;
        let (token, identity, outcome, eager_queue) = (&token, &identity, &outcome, &eager_queue);
        let report = |decision: Option<pb::WorkflowDecision>| {
            retry_unavailable(move || {
                let mut client = client.clone();
                let (token, identity) = (token.clone(), identity.clone());
                let (outcome, eager_queue) = (outcome.clone(), eager_queue.clone());
                let decision = decision.clone();
                async move {
                    match outcome {
                        Ok(result) => client
                            .respond_activity_task_completed(
                                pb::RespondActivityTaskCompletedRequest {
                                    task_token: token,
                                    result: Some(result),
                                    identity,
                                    eager_workflow_queue: eager_queue,
                                    decision,
                                },
                            )
                            .await
                            .map(|r| Some(r.into_inner())),
                        Err(e) => client
                            .respond_activity_task_failed(pb::RespondActivityTaskFailedRequest {
                                task_token: token,
                                failure: Some(e.to_failure()),
                                identity,
                            })
                            .await
                            .map(|_| None),
                    }
                }
            })
        };
        let mut r = report(decision.clone()).await;
        // Whatever the engine held against the decision, the result itself must not be lost.
        if let Err(status) = &r
            && decision.is_some()
            && status.code() != tonic::Code::NotFound
        {
            tracing::warn!(error = %status, "decision made ahead refused with an error; reporting the result alone");
            r = report(None).await;
        }
        let answer = match r {
            Err(status) => {
                tracing::info!(error = %status, "activity outcome not recorded (stale or cancelled)");
                None
            }
            Ok(answer) => answer,
        };
        if let Some((mut d, _)) = ahead {
            use std::sync::atomic::Ordering::Relaxed;
            let run_id = info
                .workflow_execution
                .as_ref()
                .map(|e| e.run_id.clone())
                .unwrap_or_default();
            let keep = match &answer {
                Some(a) if a.decision_recorded => {
                    self.stats.decisions_recorded.fetch_add(1, Relaxed);
                    self.catch_up(&mut d, &run_id, &a.history)
                }
                _ => {
                    self.stats.decisions_refused.fetch_add(1, Relaxed);
                    false
                }
            };
            // The copy went past what history recorded: without the record it is dropped.
            if !keep {
                self.evict(&run_id);
            }
            drop(d);
        }
        let Some(answer) = answer else { return };
        self.spawn_eager_activities(answer.activity_tasks, &mut permits);
        if let (Some(task), Some(e), Some(permit)) =
            (answer.workflow_task, &self.eager, eager_permit)
            && !task.task_token.is_empty()
        {
            self.stats
                .eager_workflow_tasks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            e.spawn(self.workflow_job(task), permit);
        }
    }
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
