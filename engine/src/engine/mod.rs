//! The engine: validates requests, runs the pure decisions of `history` against the current
//! checkpoint, and commits their changes through the store, retrying on a concurrent change.
//! Hands new tasks to waiting pollers (`matching`) and schedules local wake-ups for timers.

use crate::clock::{Clock, Millis, SystemClock, from_timestamp, to_timestamp};
use crate::error::{EngineError, duration_field};
use crate::history::{
    self, Lease, PendingActivity, Run, RunCommit, StartParams, TOKEN_KIND_ACTIVITY,
    TOKEN_KIND_WORKFLOW, TaskOp, TaskToken, TimerOp, WftOutcome,
};
use crate::ids::{Namespace, RunId, TaskQueue, WorkflowId, WorkflowType};
use crate::matching::{Delivery, Matching, QueueKey, Reservation, TaskKind};
use crate::store::{ListQuery, Store, StoreError};
use martix_proto::v1 as pb;
use prost::Message;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

/// How often a conflicting change is redone before giving up with UNAVAILABLE.
const MAX_CONFLICT_RETRIES: usize = 20;

/// Tunables of the engine.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EngineConfig {
    /// How long a poll waits for a task before answering empty.
    pub long_poll_timeout: Duration,
    /// How often a waiting poller looks in the store for tasks committed elsewhere.
    pub recheck_interval: Duration,
    /// Largest payload (input, result, details) accepted, in bytes.
    pub max_payload_bytes: usize,
    /// How often the timer loop looks for due timers committed elsewhere.
    pub timer_poll_interval: Duration,
    /// How long a workflow task waits on a worker's sticky queue before any worker of the
    /// run's queue may take it (with full history).
    pub sticky_schedule_to_start_timeout: Duration,
    /// A run whose history would grow past this many events is terminated (a workflow that
    /// runs forever should continue as new long before).
    pub max_history_events: i64,
    /// Past this many events the engine warns to continue as new (then once per thousand).
    pub warn_history_events: i64,
    /// Whether this node's relay publishes events to RabbitMQ (reported by the outbox status).
    pub relay_configured: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            long_poll_timeout: Duration::from_secs(30),
            recheck_interval: Duration::from_secs(1),
            max_payload_bytes: 2 * 1024 * 1024,
            timer_poll_interval: Duration::from_secs(1),
            sticky_schedule_to_start_timeout: Duration::from_secs(5),
            max_history_events: 50_000,
            warn_history_events: 10_000,
            relay_configured: false,
        }
    }
}

/// A run that closed on this node, with its closing event.
type Closed = Arc<(Run, Option<pb::HistoryEvent>)>;

/// A result waiter's registration for one run's close (see `Engine::watch_close`); removed
/// when dropped.
struct CloseWatch<'a> {
    engine: &'a Engine,
    run_id: RunId,
    rx: oneshot::Receiver<Closed>,
}

impl Drop for CloseWatch<'_> {
    fn drop(&mut self) {
        self.rx.close();
        let mut waiters = self
            .engine
            .close_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(list) = waiters.get_mut(&self.run_id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                waiters.remove(&self.run_id);
            }
        }
    }
}

/// The engine of one node. Cheap to share behind an `Arc`.
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    matching: Matching,
    config: EngineConfig,
    namespaces: RwLock<HashSet<String>>,
    /// Result waiters of this node, by run: a close committed here is handed to its run's
    /// waiters with the closing event (they need no read), and wakes no one else.
    close_waiters: std::sync::Mutex<std::collections::HashMap<RunId, Vec<oneshot::Sender<Closed>>>>,
    /// Woken when a timer was committed on this node, with its fire time.
    pub(crate) timer_wake: Notify,
    pub(crate) next_timer: std::sync::Mutex<Option<Millis>>,
    me: std::sync::Weak<Engine>,
    /// Cancelled when the node shuts down: long polls answer empty at once.
    stopping: tokio_util::sync::CancellationToken,
    metrics: crate::metrics::Metrics,
    /// Woken when a commit on this node wrote business events: the relay sends them now.
    pub(crate) outbox_wake: Notify,
    /// The checkpoints of open runs as this node last wrote them. Most changes of a run go
    /// through the node that made the one before, so they need no read. A cached checkpoint
    /// is trusted only through a write, which the store refuses if the run moved on (another
    /// node changed it); any other outcome decided from it is decided again from the store.
    runs: std::sync::Mutex<std::collections::HashMap<RunId, CachedRun>>,
    /// When pollers of a queue last looked for sticky tasks gone unclaimed.
    sticky_checked: std::sync::Mutex<std::collections::HashMap<QueueKey, Instant>>,
}

/// A checkpoint this node wrote, with the history events it wrote since the first one its
/// worker has not seen (what the next workflow task sends).
struct CachedRun {
    run: Run,
    tail: Vec<pb::HistoryEvent>,
    /// Encoded size of `tail`.
    tail_bytes: usize,
}

/// Longest history tail a cached run keeps, in events and in bytes (a longer one is read
/// from the store).
const TAIL_MAX: usize = 256;
const TAIL_MAX_BYTES: usize = 64 * 1024;

/// Most checkpoints a node keeps (beyond, an arbitrary one makes room).
const RUN_CACHE_MAX: usize = 20_000;

fn payload_len(p: Option<&pb::Payload>) -> usize {
    p.map_or(0, |p| p.data.len())
}

fn failure_len(f: Option<&pb::Failure>) -> usize {
    f.map_or(0, |f| {
        f.message.len() + payload_len(f.details.as_ref()) + failure_len(f.cause.as_deref())
    })
}

fn identity(raw: &str) -> Result<&str, EngineError> {
    if raw.len() > 255 {
        return Err(EngineError::invalid(
            "identity",
            format!("is {} bytes, at most 255", raw.len()),
        ));
    }
    Ok(raw)
}

fn page_size(
    field: &'static str,
    raw: i32,
    default: usize,
    max: usize,
) -> Result<usize, EngineError> {
    match raw {
        0 => Ok(default),
        n if n < 0 => Err(EngineError::invalid(field, "must not be negative")),
        n => Ok((n as usize).min(max)),
    }
}

/// Leases to the completing worker up to `slots` activity tasks the commit creates on `queue`,
/// due now (eager activity dispatch); returns them to hand over with the answer.
fn lease_eagerly(
    commit: &mut RunCommit,
    queue: &str,
    slots: usize,
    now: Millis,
) -> Vec<crate::history::ActivityTask> {
    let mut out = Vec::new();
    for op in &mut commit.tasks {
        if out.len() == slots {
            break;
        }
        if let TaskOp::Insert(task) = op
            && task.task_queue == queue
            && task.visible_at <= now
            && task.lease.is_none()
        {
            task.lease = Some(Lease::new(now, task.first_lease_ms()));
            task.started_at = Some(now);
            out.push(task.clone());
        }
    }
    out
}

/// A workflow task's completion as decided: applied, or refused with the change that records
/// the refusal and the answer for the worker.
enum Completion {
    Applied {
        commit: RunCommit,
        eager: Vec<crate::history::ActivityTask>,
    },
    Refused {
        commit: RunCommit,
        error: EngineError,
    },
}

/// Makes room in the run cache for `run_id` (beyond `RUN_CACHE_MAX`, an arbitrary run goes).
fn make_room(runs: &mut std::collections::HashMap<RunId, CachedRun>, run_id: RunId) {
    if runs.len() >= RUN_CACHE_MAX
        && !runs.contains_key(&run_id)
        && let Some(victim) = runs.keys().next().copied()
    {
        runs.remove(&victim);
    }
}

/// A decision made ahead, validated: its time, its eager activity slots, and whether its
/// commands are within the payload limit.
#[derive(Clone, Copy)]
struct CheckedDecision {
    at: Millis,
    slots: usize,
    within_limit: bool,
}

/// What recording an activity's result answers.
enum Answer {
    /// The decision made ahead was recorded with it: the events appended, the activities
    /// leased to the worker.
    Decided {
        events: Vec<pb::HistoryEvent>,
        eager: Vec<crate::history::ActivityTask>,
    },
    /// The result alone; the workflow task it scheduled, if leased to the worker (its lease id
    /// and the run as written).
    Recorded(Option<Box<(String, Run)>>),
}

/// Leases to the reporting worker the workflow task a change schedules on `queue`, due now
/// (eager workflow task); returns its lease id and the run as it will be stored.
fn lease_workflow_task(commit: &mut RunCommit, queue: &str, now: Millis) -> Option<(String, Run)> {
    let timeout = commit.run.state.workflow_task_timeout_ms;
    let wft = commit
        .run
        .wft
        .as_mut()
        .filter(|w| w.queue == queue && w.lease.is_none() && w.visible_at <= now)?;
    let lease = Lease::new(now, timeout);
    let id = lease.id.clone();
    wft.lease = Some(lease);
    let mut written = commit.run.clone();
    written.version += 1;
    Some((id, written))
}

/// Validates a worker's sticky queue, given in request field `field`.
fn sticky_queue_field(field: &'static str, raw: &str) -> Result<(), EngineError> {
    TaskQueue::parse(raw)
        .map(|_| ())
        .map_err(|_| EngineError::invalid(field, "must be 1 to 255 bytes, no control characters"))
}

/// The type of `run`'s pending activity `scheduled_event_id` (empty if it is not pending), for
/// metrics.
fn activity_type_of(run: &Run, scheduled_event_id: i64) -> String {
    run.activity(scheduled_event_id)
        .map(|a| a.activity_type.clone())
        .unwrap_or_default()
}

/// How long before the engine's clock the time of a decision made ahead may be for it to be
/// recorded at that time. The worker derives it from the engine's own event times plus the
/// time passed locally, so it lags only by the time answers and requests spend in transit and
/// in queues: ten seconds allows a loaded machine.
const DECISION_CLOCK_SKEW_MS: i64 = 10_000;

const PAGE_TOKEN_MALFORMED: &str = "is malformed: pass back the token a previous response gave";

impl Engine {
    /// An engine on `store`, with the wall clock.
    pub fn new(store: Arc<dyn Store>, config: EngineConfig) -> Arc<Self> {
        Self::with_clock(store, config, Arc::new(SystemClock))
    }

    /// An engine with an injected clock (tests).
    pub fn with_clock(
        store: Arc<dyn Store>,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            stopping: tokio_util::sync::CancellationToken::new(),
            store,
            clock,
            matching: Matching::default(),
            config,
            namespaces: RwLock::new(HashSet::new()),
            close_waiters: Default::default(),
            timer_wake: Notify::new(),
            next_timer: std::sync::Mutex::new(None),
            metrics: crate::metrics::Metrics::default(),
            outbox_wake: Notify::new(),
            runs: Default::default(),
            sticky_checked: Default::default(),
        })
    }

    /// Another node committed a task nobody there took: wake a poller of its queue here.
    pub fn task_committed_elsewhere(&self, notice: &crate::store::TaskNotice) {
        let kind = if notice.workflow {
            TaskKind::Workflow
        } else {
            TaskKind::Activity
        };
        self.matching
            .notify(&QueueKey::new(&notice.namespace, &notice.queue, kind));
    }

    /// Notices of other nodes' tasks were lost (this node fell behind reading them): every
    /// queue's next poll looks in the store instead of trusting what it knew.
    pub fn notices_lost(&self) {
        self.matching.notify_all();
    }

    /// Ends waiting long polls (with an empty answer) and refuses new waits: the node is
    /// shutting down. Their tasks stay in the store for other nodes or the next start.
    pub fn stop_polls(&self) {
        self.stopping.cancel();
    }

    /// Waits for a delivery on `key`, unless the node is stopping.
    async fn wait_delivery(
        &self,
        key: &QueueKey,
        epoch: u64,
        deadline: Instant,
    ) -> Option<Delivery> {
        match self.matching.register(key, epoch, self.now()) {
            Err(d) => Some(d),
            Ok(wait) => {
                let now = Instant::now();
                if now >= deadline || self.stopping.is_cancelled() {
                    return None;
                }
                let step = deadline.min(now + self.config.recheck_interval);
                tokio::select! {
                    d = self.matching.wait(wait, step) => d,
                    () = self.stopping.cancelled() => None,
                }
            }
        }
    }

    /// This node's metrics.
    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The store the engine writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The engine's clock: what leases, timers and event times are measured against.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// The matching of this node (for tests and metrics).
    pub fn matching(&self) -> &Matching {
        &self.matching
    }

    async fn namespace(&self, raw: &str) -> Result<Namespace, EngineError> {
        let raw = if raw.is_empty() { "default" } else { raw };
        let ns = Namespace::parse(raw)?;
        if self
            .namespaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(raw)
        {
            return Ok(ns);
        }
        if !self.store.namespace_exists(raw).await? {
            return Err(EngineError::invalid(
                "namespace",
                format!("'{raw}' does not exist"),
            ));
        }
        self.namespaces
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(raw.to_owned());
        Ok(ns)
    }

    fn check_payload(&self, field: &'static str, size: usize) -> Result<(), EngineError> {
        if size > self.config.max_payload_bytes {
            return Err(EngineError::TooLarge {
                field,
                size,
                limit: self.config.max_payload_bytes,
            });
        }
        Ok(())
    }

    /// The run an execution names: the given run id, or the newest run of the workflow id.
    async fn resolve(
        &self,
        ns: &Namespace,
        execution: Option<&pb::WorkflowExecution>,
    ) -> Result<Run, EngineError> {
        let execution =
            execution.ok_or_else(|| EngineError::invalid("execution", "must be given"))?;
        let wid = WorkflowId::parse(&execution.workflow_id)?;
        let run = if execution.run_id.is_empty() {
            self.store.latest_run(ns.as_str(), wid.as_str()).await?
        } else {
            let run_id = RunId::parse("execution.run_id", &execution.run_id)?;
            self.store
                .load_run(run_id)
                .await?
                .filter(|r| r.namespace == ns.as_str() && r.workflow_id == wid.as_str())
        };
        run.ok_or_else(|| {
            EngineError::NotFound(format!(
                "workflow '{}' has no run{} in namespace '{ns}'",
                wid,
                if execution.run_id.is_empty() {
                    String::new()
                } else {
                    format!(" '{}'", execution.run_id)
                }
            ))
        })
    }

    fn cached(&self, run_id: RunId) -> Option<Run> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&run_id)
            .map(|c| c.run.clone())
    }

    /// The events `from..next` of a run, if this node wrote them all and still has them.
    fn cached_events(&self, run_id: RunId, from: i64, next: i64) -> Option<Vec<pb::HistoryEvent>> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let tail = &runs.get(&run_id)?.tail;
        let start = tail.iter().position(|e| e.event_id == from)?;
        let events = &tail[start..];
        (events.last()?.event_id == next - 1).then(|| events.to_vec())
    }

    /// Remembers a run as a commit wrote it (at its new version); closed runs are dropped.
    fn remember(&self, c: &RunCommit) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        for c in std::iter::once(c).chain(c.new_run.as_deref()) {
            // Closed runs, and checkpoints holding large payloads (buffered signals), are not
            // kept: the cache stays small whatever the workflows carry.
            if !c.run.is_open() || c.run.state.encoded_len() > TAIL_MAX_BYTES {
                runs.remove(&c.run.run_id);
                continue;
            }
            make_room(&mut runs, c.run.run_id);
            let mut written = c.run.clone();
            written.version = c.expected_version.map_or(1, |v| v + 1);
            // The tail goes on if this commit's events follow it (no other node wrote between).
            let (mut tail, mut tail_bytes) = match runs.remove(&written.run_id) {
                Some(prev)
                    if prev.tail.last().map(|e| e.event_id + 1)
                        == c.events.first().map(|e| e.event_id) =>
                {
                    (prev.tail, prev.tail_bytes)
                }
                _ => (Vec::new(), 0),
            };
            tail_bytes += c.events.iter().map(Message::encoded_len).sum::<usize>();
            tail.extend(c.events.iter().cloned());
            let keep_from = written.state.sticky_from.max(1);
            let seen = tail.partition_point(|e| e.event_id < keep_from);
            tail_bytes -= tail[..seen].iter().map(Message::encoded_len).sum::<usize>();
            tail.drain(..seen);
            if tail.len() > TAIL_MAX || tail_bytes > TAIL_MAX_BYTES {
                tail.clear();
                tail_bytes = 0;
            }
            runs.insert(
                written.run_id,
                CachedRun {
                    run: written,
                    tail,
                    tail_bytes,
                },
            );
        }
    }

    /// Remembers a run as a claim wrote it (the store's copy at its new version), so that
    /// the task's completion is decided without reading it again. Its history tail is not
    /// known here.
    fn remember_claimed(&self, run: &Run) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if !run.is_open() || run.state.encoded_len() > TAIL_MAX_BYTES {
            runs.remove(&run.run_id);
            return;
        }
        // The tail this node wrote still holds if the claim changed nothing but the lease.
        let (tail, tail_bytes) = match runs.remove(&run.run_id) {
            Some(prev) if prev.tail.last().map(|e| e.event_id + 1) == Some(run.next_event_id) => {
                (prev.tail, prev.tail_bytes)
            }
            _ => (Vec::new(), 0),
        };
        make_room(&mut runs, run.run_id);
        runs.insert(
            run.run_id,
            CachedRun {
                run: run.clone(),
                tail,
                tail_bytes,
            },
        );
    }

    fn forget(&self, run_id: RunId) {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run_id);
    }

    async fn load(&self, run_id: RunId) -> Result<Run, EngineError> {
        self.store
            .load_run(run_id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("run {run_id} does not exist")))
    }

    /// Leases the tasks a commit creates to pollers waiting on this node, before it is written.
    fn reserve_pollers(&self, commit: &mut RunCommit) -> Vec<(Reservation, Delivery)> {
        let mut out = Vec::new();
        let now = self.now();
        let mut one = |c: &mut RunCommit| {
            let timeout = c.run.state.workflow_task_timeout_ms;
            let run_id = c.run.run_id;
            let ns = c.run.namespace.clone();
            if let Some(wft) = c.run.wft.as_mut()
                && wft.lease.is_none()
                && wft.visible_at <= now
                && let Some(r) =
                    self.matching
                        .reserve(&QueueKey::new(&ns, &wft.queue, TaskKind::Workflow))
            {
                let lease = Lease::new(now, timeout);
                wft.lease = Some(lease.clone());
                out.push((r, Delivery::Workflow { run_id, lease }));
            }
            for op in &mut c.tasks {
                if let TaskOp::Insert(task) = op
                    && task.visible_at <= now
                    && task.lease.is_none()
                    && let Some(r) = self.matching.reserve(&QueueKey::new(
                        &task.namespace,
                        &task.task_queue,
                        TaskKind::Activity,
                    ))
                {
                    task.lease = Some(Lease::new(now, task.first_lease_ms()));
                    task.started_at = Some(now);
                    out.push((r, Delivery::Activity(Box::new(task.clone()))));
                }
            }
        };
        one(commit);
        if let Some(next) = commit.new_run.as_deref_mut() {
            one(next);
        }
        out
    }

    /// After a commit: deliver reserved tasks, wake pollers for the rest, arm timers.
    fn after_commit(&self, commit: &RunCommit, reserved: Vec<(Reservation, Delivery)>) {
        let now = self.now();
        for (r, d) in reserved {
            self.matching.deliver(r, d, now);
        }
        let one = |c: &RunCommit| {
            let ns = &c.run.namespace;
            if let Some(wft) = &c.run.wft
                && wft.lease.is_none()
            {
                self.wake_at(
                    QueueKey::new(ns, &wft.queue, TaskKind::Workflow),
                    wft.visible_at,
                );
            }
            for op in &c.tasks {
                match op {
                    TaskOp::Insert(t) if t.lease.is_none() => self.wake_at(
                        QueueKey::new(ns, &t.task_queue, TaskKind::Activity),
                        t.visible_at,
                    ),
                    TaskOp::RetryNow {
                        scheduled_event_id, ..
                    } => {
                        if let Some(a) = c.run.activity(*scheduled_event_id) {
                            self.wake_at(
                                QueueKey::new(ns, &a.task_queue, TaskKind::Activity),
                                self.now(),
                            );
                        }
                    }
                    TaskOp::Retry { visible_at, .. } => {
                        if let Some(a) = c
                            .run
                            .state
                            .activities
                            .iter()
                            .find(|a| a.next_attempt_time == *visible_at)
                        {
                            self.wake_at(
                                QueueKey::new(ns, &a.task_queue, TaskKind::Activity),
                                *visible_at,
                            );
                        }
                    }
                    _ => {}
                }
            }
            for op in &c.timers {
                if let TimerOp::Insert { fire_at, .. } = op {
                    self.arm_timer(*fire_at);
                }
            }
            if c.closed {
                self.announce_close(&c.run, c.events.last());
            }
        };
        one(commit);
        if let Some(next) = commit.new_run.as_deref() {
            one(next);
        }
    }

    /// Result waiters registered on this node now.
    pub fn result_waiters(&self) -> usize {
        self.close_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Registers a result waiter for `run_id`'s close on this node. Register before looking
    /// at the run, so that a close in between is not missed.
    fn watch_close(&self, run_id: RunId) -> CloseWatch<'_> {
        let (tx, rx) = oneshot::channel();
        self.close_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(run_id)
            .or_default()
            .push(tx);
        CloseWatch {
            engine: self,
            run_id,
            rx,
        }
    }

    /// Hands a close committed on this node to its run's result waiters, if any.
    fn announce_close(&self, run: &Run, last: Option<&pb::HistoryEvent>) {
        let waiters = self
            .close_waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run.run_id);
        if let Some(waiters) = waiters {
            let closed: Closed = Arc::new((run.clone(), last.cloned()));
            for tx in waiters {
                let _ = tx.send(closed.clone());
            }
        }
    }

    fn wake_at(&self, key: QueueKey, at: Millis) {
        let delay = at - self.now();
        if delay <= 0 {
            self.matching.notify(&key);
        } else if let Some(me) = self.self_arc() {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay as u64)).await;
                me.matching.notify(&key);
            });
        }
    }

    fn self_arc(&self) -> Option<Arc<Self>> {
        self.me.upgrade()
    }

    fn arm_timer(&self, fire_at: Millis) {
        let mut next = self.next_timer.lock().unwrap_or_else(|p| p.into_inner());
        if next.is_none_or(|n| fire_at < n) {
            *next = Some(fire_at);
            self.timer_wake.notify_one();
        }
    }

    /// The Prometheus text of this node's metrics, with the store's backlog and breakers.
    pub async fn metrics_text(&self) -> Result<String, EngineError> {
        let (workflow, activity) = self.matching.waiting_by_kind();
        let backlog = self.store.backlog(self.now()).await?;
        let mut breakers: Vec<String> = self
            .store
            .open_breakers()
            .await?
            .into_iter()
            .map(|(_, adapter, _)| adapter)
            .collect();
        breakers.sort();
        breakers.dedup();
        let now = self.now();
        self.metrics
            .outbox(&self.store.outbox_status(now).await?, now);
        Ok(self.metrics.encode(
            &[("workflow", workflow), ("activity", activity)],
            &backlog,
            &breakers,
        ))
    }

    /// Writes a commit, handing its tasks to waiting pollers.
    ///
    /// Runs in its own task: a queued commit is written even if the caller goes away (a client
    /// disconnect drops its request), and what follows a commit (handing tasks to the pollers
    /// reserved for them, waking others, arming timers) must happen with it.
    async fn write(&self, commit: RunCommit) -> Result<(), StoreError> {
        let Some(me) = self.me.upgrade() else {
            return Err(StoreError::Unavailable("the engine is stopping".into()));
        };
        tokio::spawn(async move { me.write_now(commit).await }.in_current_span())
            .await
            .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("commit task failed: {e}"))))
    }

    async fn write_now(&self, mut commit: RunCommit) -> Result<(), StoreError> {
        let reserved = self.reserve_pollers(&mut commit);
        let span = tracing::info_span!(
            "store.commit",
            run_id = %commit.run.run_id,
            events = commit.events.len()
        );
        let began = Instant::now();
        let commit = Arc::new(commit);
        let result = self
            .store
            .commit_shared(commit.clone())
            .instrument(span)
            .await;
        if result.is_ok() && !commit.outbox.is_empty() {
            self.outbox_wake.notify_one();
        }
        self.metrics.commit(
            began.elapsed(),
            matches!(result, Err(StoreError::Conflict { .. })),
        );
        match &result {
            Ok(()) => self.remember(&commit),
            Err(_) => self.forget(commit.run.run_id),
        }
        match result {
            Ok(()) => {
                if commit.closed {
                    self.metrics.closed(&commit.run);
                }
                if let Some(next) = &commit.new_run {
                    self.metrics.started(&next.run.workflow_type);
                }
                self.after_commit(&commit, reserved);
                Ok(())
            }
            Err(e) => {
                for (r, _) in reserved {
                    self.matching.cancel(r);
                }
                Err(e)
            }
        }
    }

    /// Reads the run, decides, commits; redoes it when the run changed in between.
    async fn update<T>(
        &self,
        run_id: RunId,
        mut decide: impl FnMut(&Run, Millis) -> Result<(Option<RunCommit>, T), EngineError>,
    ) -> Result<T, EngineError> {
        let mut trust_cache = true;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let cached = if trust_cache {
                self.cached(run_id)
            } else {
                None
            };
            let from_cache = cached.is_some();
            let run = match cached {
                Some(run) => run,
                None => self.load(run_id).await?,
            };
            let (commit, out) = match decide(&run, self.now()) {
                Ok((Some(commit), out)) => (commit, out),
                Ok((None, out)) if !from_cache => return Ok(out),
                Err(e) if !from_cache => return Err(e),
                // Nothing to write, or refused, on the strength of the cached checkpoint:
                // decide again from the store (another node may have moved the run on).
                _ => {
                    trust_cache = false;
                    continue;
                }
            };
            match self.write(commit).await {
                // A request id recorded before: the change was applied then.
                Ok(()) | Err(StoreError::Duplicate) => return Ok(out),
                Err(StoreError::Conflict { .. }) => {
                    trust_cache = false;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Unavailable(format!(
            "run {run_id} kept changing concurrently; try again"
        )))
    }

    // ---- WorkflowService ------------------------------------------------------------------

    /// Starts a run, or returns the open run of the workflow id.
    pub async fn start_workflow(
        &self,
        req: pb::StartWorkflowRequest,
    ) -> Result<pb::StartWorkflowResponse, EngineError> {
        self.start_run(req, None).await
    }

    /// Signals the open run of the id, or starts one that begins with the signal.
    pub async fn signal_with_start_workflow(
        &self,
        req: pb::SignalWithStartWorkflowRequest,
    ) -> Result<pb::SignalWithStartWorkflowResponse, EngineError> {
        if req.signal_name.is_empty() || req.signal_name.len() > 255 {
            return Err(EngineError::invalid(
                "signal_name",
                "must be 1 to 255 bytes",
            ));
        }
        self.check_payload("signal_input", payload_len(req.signal_input.as_ref()))?;
        let start = req
            .start
            .ok_or_else(|| EngineError::invalid("start", "is required"))?;
        let request_id = request_id(&req.request_id)?;
        let r = self
            .start_run(start, Some((req.signal_name, req.signal_input, request_id)))
            .await?;
        Ok(pb::SignalWithStartWorkflowResponse {
            run_id: r.run_id,
            started: r.started,
        })
    }

    /// Starts a run (with a first signal for signal-with-start), or finds the open one (and,
    /// for signal-with-start, signals it).
    async fn start_run(
        &self,
        req: pb::StartWorkflowRequest,
        signal: Option<(String, Option<pb::Payload>, Option<String>)>,
    ) -> Result<pb::StartWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let wid = WorkflowId::parse(&req.workflow_id)?;
        let wtype = WorkflowType::parse(&req.workflow_type)?;
        let queue = TaskQueue::parse(&req.task_queue)?;
        let ident = identity(&req.identity)?;
        self.check_payload("input", payload_len(req.input.as_ref()))?;
        let memo_len: usize = req.memo.iter().map(|(k, v)| k.len() + v.data.len()).sum();
        self.check_payload("memo", memo_len)?;
        let ms = |field, d: Option<&pbjson_types::Duration>| -> Result<i64, EngineError> {
            Ok(duration_field(field, d)?.map_or(0, |d| d.as_millis() as i64))
        };
        let mut params = StartParams {
            namespace: ns.to_string(),
            workflow_id: wid.to_string(),
            workflow_type: wtype.to_string(),
            task_queue: queue.to_string(),
            input: req.input,
            execution_timeout_ms: ms(
                "workflow_execution_timeout",
                req.workflow_execution_timeout.as_ref(),
            )?,
            run_timeout_ms: ms("workflow_run_timeout", req.workflow_run_timeout.as_ref())?,
            task_timeout_ms: ms("workflow_task_timeout", req.workflow_task_timeout.as_ref())?,
            identity: ident.to_owned(),
            memo: req.memo,
            continued_from: None,
            first_run_id: None,
            execution_deadline: None,
            // The RPC's span: a child of the caller's trace when it sent one.
            traceparent: martix_proto::trace::current(),
            initial_signal: signal.as_ref().map(|(n, i, _)| (n.clone(), i.clone())),
            events_published: 0,
        };
        let policy = pb::IdReusePolicy::try_from(req.id_reuse_policy)
            .map_err(|_| EngineError::invalid("id_reuse_policy", "is not a known policy"))?;
        // A plain start goes first as if the id was never used (order ids are new): the insert
        // checks that, and saves reading the id's latest run. A used id is read and decided on
        // as usual. Signal-with-start mostly meets a running workflow: it reads first.
        let mut fresh = signal.is_none();
        for _ in 0..MAX_CONFLICT_RETRIES {
            let last = if fresh {
                None
            } else {
                self.store.latest_run(ns.as_str(), wid.as_str()).await?
            };
            if let Some(last) = last {
                // A new run of a used id goes on with its events' sequence: per workflow id
                // (per order), sequence numbers never repeat.
                params.events_published = last.state.events_published;
                if last.is_open() {
                    if let Some((name, input, request_id)) = &signal {
                        let signalled = self
                            .update(last.run_id, |run, now| {
                                let mut c = history::signal(run, name, input.clone(), ident, now)?;
                                c.request_id.clone_from(request_id);
                                Ok((Some(c), ()))
                            })
                            .await;
                        match signalled {
                            Ok(()) => {}
                            // It closed meanwhile: start a new run (per the policy).
                            Err(EngineError::FailedPrecondition(_)) => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    return Ok(pb::StartWorkflowResponse {
                        run_id: last.run_id.to_text(),
                        started: false,
                    });
                }
                let allowed = match policy {
                    pb::IdReusePolicy::Unspecified | pb::IdReusePolicy::AllowDuplicate => true,
                    pb::IdReusePolicy::RejectDuplicate => false,
                    pb::IdReusePolicy::AllowDuplicateFailedOnly => matches!(
                        last.status,
                        pb::WorkflowStatus::Failed
                            | pb::WorkflowStatus::Canceled
                            | pb::WorkflowStatus::Terminated
                            | pb::WorkflowStatus::TimedOut
                    ),
                };
                if !allowed {
                    return Err(EngineError::AlreadyExists(format!(
                        "workflow '{wid}' already ran (run {}, {}) and the id-reuse policy forbids another run",
                        last.run_id,
                        last.status.as_str_name()
                    )));
                }
            }
            let run_id = RunId::new();
            let mut commit = history::new_run(&params, run_id, self.now());
            commit.request_id = signal.as_ref().and_then(|(_, _, r)| r.clone());
            commit.fresh_id = fresh;
            match self.write(commit).await {
                Ok(()) => {
                    self.metrics.started(wtype.as_str());
                    tracing::debug!(namespace = %ns, workflow_id = %wid, run_id = %run_id, "workflow started");
                    return Ok(pb::StartWorkflowResponse {
                        run_id: run_id.to_text(),
                        started: true,
                    });
                }
                // The id was used, or another start of it won the race: read its runs.
                Err(StoreError::IdUsed | StoreError::AlreadyOpen) => {
                    fresh = false;
                    continue;
                }
                // Signal-with-start whose request id was recorded: it was applied before.
                Err(StoreError::Duplicate) => {
                    return Ok(pb::StartWorkflowResponse {
                        run_id: self
                            .store
                            .latest_run(ns.as_str(), wid.as_str())
                            .await?
                            .map(|r| r.run_id.to_text())
                            .unwrap_or_default(),
                        started: false,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Unavailable(
            "workflow start kept conflicting; try again".into(),
        ))
    }

    /// Status, pending activities, timers and workflow task of a run.
    pub async fn describe_workflow(
        &self,
        req: pb::DescribeWorkflowRequest,
    ) -> Result<pb::DescribeWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        let now = self.now();
        let leases = self.store.activity_leases(run.run_id).await?;
        let first = self.store.history(run.run_id, 1, 1).await?;
        let memo = match first.first().and_then(|e| e.attributes.as_ref()) {
            Some(pb::history_event::Attributes::WorkflowExecutionStarted(s)) => s.memo.clone(),
            _ => Default::default(),
        };
        let pending_activities = run
            .state
            .activities
            .iter()
            .map(|a: &PendingActivity| {
                let lease = leases
                    .iter()
                    .find(|l| l.scheduled_event_id == a.scheduled_event_id);
                let started = lease.and_then(|l| l.lease_until).is_some_and(|u| u > now);
                let state = if started {
                    pb::PendingActivityState::Started
                } else if a.next_attempt_time > now {
                    pb::PendingActivityState::BackingOff
                } else {
                    pb::PendingActivityState::Scheduled
                };
                pb::PendingActivityInfo {
                    activity_id: a.activity_id.clone(),
                    activity_type: a.activity_type.clone(),
                    state: state as i32,
                    attempt: a.attempt,
                    last_failure: a.last_failure.clone(),
                    next_attempt_time: (a.next_attempt_time > now)
                        .then(|| to_timestamp(a.next_attempt_time)),
                    scheduled_time: Some(to_timestamp(a.scheduled_time)),
                    scheduled_event_id: a.scheduled_event_id,
                    task_queue: a.task_queue.clone(),
                }
            })
            .collect();
        let pending_timers = run
            .state
            .timers
            .iter()
            .map(|t| pb::PendingTimerInfo {
                timer_id: t.timer_id.clone(),
                fire_time: Some(to_timestamp(t.fire_at)),
                started_event_id: t.started_event_id,
            })
            .collect();
        let pending_workflow_task = run.wft.as_ref().map(|w| pb::PendingWorkflowTaskInfo {
            attempt: w.attempt,
            scheduled_time: Some(to_timestamp(w.visible_at)),
            started: w.in_flight(now),
            last_failure: run.state.wft_last_failure.clone(),
        });
        let open_breakers = self
            .store
            .open_breakers()
            .await?
            .into_iter()
            .map(|(worker, adapter, since)| pb::OpenBreaker {
                worker,
                adapter,
                since: Some(to_timestamp(since)),
            })
            .collect();
        Ok(pb::DescribeWorkflowResponse {
            open_breakers,
            info: Some(info(&run, memo)),
            pending_activities,
            pending_timers,
            pending_workflow_task,
            cancel_requested: run.state.cancel_requested,
        })
    }

    /// Runs of a namespace, newest first, filtered and paginated.
    pub async fn list_workflows(
        &self,
        req: pb::ListWorkflowsRequest,
    ) -> Result<pb::ListWorkflowsResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let limit = page_size("page_size", req.page_size, 100, 1000)?;
        let after = if req.next_page_token.is_empty() {
            None
        } else {
            Some(decode_list_token(&req.next_page_token)?)
        };
        let statuses = req
            .statuses
            .iter()
            .map(|s| {
                pb::WorkflowStatus::try_from(*s)
                    .ok()
                    .filter(|s| *s != pb::WorkflowStatus::Unspecified)
                    .ok_or_else(|| {
                        EngineError::invalid("statuses", format!("{s} is not a workflow status"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let query = ListQuery {
            namespace: ns.to_string(),
            statuses,
            workflow_type: opt(&req.workflow_type),
            task_queue: opt(&req.task_queue),
            workflow_id_prefix: opt(&req.workflow_id_prefix),
            start_time_from: req.start_time_from.as_ref().map(from_timestamp),
            start_time_to: req.start_time_to.as_ref().map(from_timestamp),
            after,
            limit: limit + 1,
        };
        let mut runs = self.store.list_runs(&query).await?;
        let next_page_token = if runs.len() > limit {
            runs.truncate(limit);
            let last = runs.last().expect("limit >= 1");
            format!("l1:{}:{}", last.start_time, last.run_id).into_bytes()
        } else {
            Vec::new()
        };
        Ok(pb::ListWorkflowsResponse {
            executions: runs.iter().map(|r| info(r, Default::default())).collect(),
            next_page_token,
        })
    }

    /// A page of a run's history.
    pub async fn workflow_history(
        &self,
        req: pb::GetWorkflowHistoryRequest,
    ) -> Result<pb::GetWorkflowHistoryResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let limit = page_size("page_size", req.page_size, 1000, 1000)?;
        let from = if req.next_page_token.is_empty() {
            1
        } else {
            std::str::from_utf8(&req.next_page_token)
                .ok()
                .and_then(|s| s.strip_prefix("h1:"))
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| EngineError::invalid("next_page_token", PAGE_TOKEN_MALFORMED))?
        };
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        let events = self.store.history(run.run_id, from, limit).await?;
        let next = events.last().map_or(from, |e| e.event_id + 1);
        let next_page_token = if next < run.next_event_id && events.len() == limit {
            format!("h1:{next}").into_bytes()
        } else {
            Vec::new()
        };
        Ok(pb::GetWorkflowHistoryResponse {
            events,
            next_page_token,
        })
    }

    /// The outcome of a run, waiting up to `wait` for it to close.
    pub async fn workflow_result(
        &self,
        req: pb::GetWorkflowResultRequest,
    ) -> Result<pb::GetWorkflowResultResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let wait = duration_field("wait", req.wait.as_ref())?.unwrap_or_default();
        let deadline = Instant::now() + wait.min(Duration::from_secs(3600));
        let named = req
            .execution
            .as_ref()
            .and_then(|e| Some((e, RunId::parse("execution.run_id", &e.run_id).ok()?)));
        // Watching before looking: a close on this node after the look is handed over.
        let mut watch = named.as_ref().map(|(_, id)| self.watch_close(*id));
        // An open run this node keeps needs no read to start waiting: a close on this node is
        // announced (watched above), one on another node is read at the next recheck.
        let kept = named.and_then(|(e, id)| {
            self.cached(id).filter(|r| {
                r.is_open() && r.namespace == ns.as_str() && r.workflow_id == e.workflow_id
            })
        });
        // Not answered "still open" from the copy alone: another node may have closed the run.
        let mut from_copy = kept.is_some();
        let mut run = match kept {
            Some(run) => run,
            None => self.resolve(&ns, req.execution.as_ref()).await?,
        };
        if run.is_open()
            && Instant::now() < deadline
            && watch.as_ref().is_none_or(|w| w.run_id != run.run_id)
        {
            // Found by workflow id: watch it, then look again (it may have closed between):
            // at the copy this node keeps, if open, else in the store.
            watch = Some(self.watch_close(run.run_id));
            match self.cached(run.run_id).filter(Run::is_open) {
                Some(copy) => {
                    run = copy;
                    from_copy = true;
                }
                None => {
                    run = self.load(run.run_id).await?;
                    from_copy = false;
                }
            }
        }
        let mut closing_event = None;
        while run.is_open() {
            let now = Instant::now();
            if now >= deadline && from_copy {
                from_copy = false;
                run = self.load(run.run_id).await?;
                continue;
            }
            if now >= deadline {
                return Ok(pb::GetWorkflowResultResponse {
                    status: run.status as i32,
                    closed: false,
                    run_id: run.run_id.to_text(),
                    ..Default::default()
                });
            }
            let step = (deadline - now).min(self.config.recheck_interval);
            let w = match &mut watch {
                Some(w) if w.run_id == run.run_id => w,
                _ => watch.insert(self.watch_close(run.run_id)),
            };
            let seen = match tokio::time::timeout(step, &mut w.rx).await {
                Ok(Ok(c)) => {
                    // Handed over and used up: watch again if the loop goes on.
                    watch = None;
                    Some(c)
                }
                Ok(Err(_)) => {
                    watch = None;
                    None
                }
                Err(_) => None,
            };
            // Closed on this node: the commit told its outcome; else read it.
            use pb::history_event::Attributes as A;
            let closes = |e: &Option<pb::HistoryEvent>| {
                matches!(
                    e.as_ref().and_then(|e| e.attributes.as_ref()),
                    Some(
                        A::WorkflowExecutionCompleted(_)
                            | A::WorkflowExecutionFailed(_)
                            | A::WorkflowExecutionCanceled(_)
                            | A::WorkflowExecutionTerminated(_)
                            | A::WorkflowExecutionContinuedAsNew(_)
                            | A::WorkflowExecutionTimedOut(_)
                    )
                )
            };
            match seen {
                Some(c) if closes(&c.1) => {
                    run = c.0.clone();
                    closing_event = c.1.clone();
                }
                _ => {
                    run = self.load(run.run_id).await?;
                    from_copy = false;
                }
            }
        }
        let last = match closing_event {
            Some(e) => Some(e),
            None => self.store.last_event(run.run_id).await?,
        };
        let mut out = pb::GetWorkflowResultResponse {
            status: run.status as i32,
            closed: true,
            run_id: run.run_id.to_text(),
            ..Default::default()
        };
        use pb::history_event::Attributes as A;
        match last.and_then(|e| e.attributes) {
            Some(A::WorkflowExecutionCompleted(a)) => out.result = a.result,
            Some(A::WorkflowExecutionFailed(a)) => out.failure = a.failure,
            Some(A::WorkflowExecutionCanceled(a)) => {
                out.failure = Some(pb::Failure {
                    message: "workflow canceled".into(),
                    r#type: "Canceled".into(),
                    details: a.details,
                    ..Default::default()
                })
            }
            Some(A::WorkflowExecutionTerminated(a)) => {
                out.failure = Some(pb::Failure {
                    message: format!("workflow terminated: {}", a.reason),
                    r#type: "Terminated".into(),
                    ..Default::default()
                })
            }
            Some(A::WorkflowExecutionContinuedAsNew(a)) => out.new_run_id = a.new_run_id,
            Some(A::WorkflowExecutionTimedOut(_)) => {
                out.failure = Some(pb::Failure {
                    message: "workflow timed out".into(),
                    r#type: "TimedOut".into(),
                    ..Default::default()
                })
            }
            _ => {
                return Err(EngineError::Internal(format!(
                    "closed run {} does not end with a closing event",
                    run.run_id
                )));
            }
        }
        Ok(out)
    }

    /// Delivers a signal to an open run.
    pub async fn signal_workflow(
        &self,
        req: pb::SignalWorkflowRequest,
    ) -> Result<pb::SignalWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        if req.signal_name.is_empty() || req.signal_name.len() > 255 {
            return Err(EngineError::invalid(
                "signal_name",
                "must be 1 to 255 bytes",
            ));
        }
        self.check_payload("input", payload_len(req.input.as_ref()))?;
        let ident = identity(&req.identity)?;
        let request_id = request_id(&req.request_id)?;
        if let Some(id) = &request_id
            && self.store.request_recorded(ns.as_str(), id).await?
        {
            // Applied before (a retry, a redelivered message): even if the run has closed
            // since, the answer is the same.
            return Ok(pb::SignalWorkflowResponse {});
        }
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        self.update(run.run_id, |run, now| {
            let mut c = history::signal(run, &req.signal_name, req.input.clone(), ident, now)?;
            c.request_id.clone_from(&request_id);
            Ok((Some(c), ()))
        })
        .await?;
        Ok(pb::SignalWorkflowResponse {})
    }

    /// Asks a run to cancel.
    pub async fn cancel_workflow(
        &self,
        req: pb::CancelWorkflowRequest,
    ) -> Result<pb::CancelWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let ident = identity(&req.identity)?;
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        self.update(run.run_id, |run, now| {
            Ok((history::request_cancel(run, &req.reason, ident, now)?, ()))
        })
        .await?;
        Ok(pb::CancelWorkflowResponse {})
    }

    /// Stops a run now.
    pub async fn terminate_workflow(
        &self,
        req: pb::TerminateWorkflowRequest,
    ) -> Result<pb::TerminateWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let ident = identity(&req.identity)?;
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        self.update(run.run_id, |run, now| {
            Ok((Some(history::terminate(run, &req.reason, ident, now)?), ()))
        })
        .await?;
        Ok(pb::TerminateWorkflowResponse {})
    }

    /// Starts a new run from a workflow-task boundary of a run and terminates the old one.
    pub async fn reset_workflow(
        &self,
        req: pb::ResetWorkflowRequest,
    ) -> Result<pb::ResetWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let ident = identity(&req.identity)?;
        if req.reason.is_empty() {
            return Err(EngineError::invalid(
                "reason",
                "must say why the workflow is reset",
            ));
        }
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        let mut new_run = None;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let current = self.load(run.run_id).await?;
            if !current.is_open() {
                return Err(EngineError::FailedPrecondition(format!(
                    "run {} is closed; reset a running workflow",
                    current.run_id
                )));
            }
            let history = self
                .store
                .history(
                    current.run_id,
                    1,
                    (current.next_event_id - 1).max(0) as usize,
                )
                .await?;
            let point = history::reset_point(&history, req.workflow_task_finish_event_id)?;
            let (commit, id) =
                history::reset(&current, &history, point, &req.reason, ident, self.now())?;
            match self.write(commit).await {
                Ok(()) => {
                    new_run = Some(id);
                    break;
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let id = new_run.ok_or_else(|| {
            EngineError::Unavailable("the run kept changing during the reset; try again".into())
        })?;
        tracing::info!(run_id = %run.run_id, new_run_id = %id, reason = %req.reason, "workflow reset");
        Ok(pb::ResetWorkflowResponse {
            run_id: id.to_text(),
        })
    }

    /// Creates a namespace (administrators); an existing one is left as it is.
    pub async fn create_namespace(
        &self,
        req: pb::CreateNamespaceRequest,
    ) -> Result<pb::CreateNamespaceResponse, EngineError> {
        let ns = Namespace::parse(&req.namespace)?;
        let created = self.store.create_namespace(ns.as_str(), self.now()).await?;
        if created {
            tracing::info!(namespace = %ns, "namespace created");
        }
        Ok(pb::CreateNamespaceResponse { created })
    }

    /// Every namespace.
    pub async fn list_namespaces(
        &self,
        _req: pb::ListNamespacesRequest,
    ) -> Result<pb::ListNamespacesResponse, EngineError> {
        Ok(pb::ListNamespacesResponse {
            namespaces: self.store.list_namespaces().await?,
        })
    }

    /// Runs now the activities of a run that wait for their next attempt.
    pub async fn retry_activity(
        &self,
        req: pb::RetryActivityRequest,
    ) -> Result<pb::RetryActivityResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        let activity_ids = self
            .update(run.run_id, |run, now| {
                let (commit, ids) =
                    history::retry_activities_now(run, &req.activity_id, req.reset_attempts, now)?;
                Ok((Some(commit), ids))
            })
            .await?;
        tracing::info!(run_id = %run.run_id, ?activity_ids, "activities retried now by an operator");
        Ok(pb::RetryActivityResponse { activity_ids })
    }

    // ---- WorkerService --------------------------------------------------------------------

    /// Waits for a workflow task of a queue, up to the long-poll timeout.
    ///
    /// # Cancel safety
    /// A task leased to a poll that is dropped is handed to the next poller on this node, or
    /// handed out again by the store when its lease runs out.
    pub async fn poll_workflow_task(
        &self,
        req: pb::PollWorkflowTaskRequest,
    ) -> Result<pb::PollWorkflowTaskResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let queue = TaskQueue::parse(&req.task_queue)?;
        identity(&req.identity)?;
        let key = QueueKey::new(ns.as_str(), queue.as_str(), TaskKind::Workflow);
        let deadline = Instant::now() + self.config.long_poll_timeout;
        loop {
            let epoch = self.matching.epoch(&key);
            let now = self.now();
            // A task held for this node's next poll: taken without the store.
            let delivery = match self.matching.take_ready(&key, now) {
                Some(d) => Some(d),
                None => {
                    let seeking = self.matching.seek(&key);
                    let lease_id = Lease::new(0, 0).id;
                    let claimed = self
                        .claim_workflow(&key, ns.as_str(), queue.as_str(), &lease_id, now)
                        .await?;
                    if let Some(run) = claimed {
                        drop(seeking);
                        self.remember_claimed(&run);
                        if let Some(resp) = self.workflow_task_response(run, &lease_id).await? {
                            return Ok(resp);
                        }
                        continue;
                    }
                    drop(seeking);
                    self.wait_delivery(&key, epoch, deadline).await
                }
            };
            match delivery {
                Some(Delivery::Workflow { run_id, lease }) => {
                    // Just written with this lease by this node: no need to read it back (and if
                    // the copy says otherwise, the store decides).
                    if let Some(run) = self.cached(run_id)
                        && let Some(resp) = self.workflow_task_response(run, &lease.id).await?
                    {
                        return Ok(resp);
                    }
                    let run = self.load(run_id).await?;
                    if let Some(resp) = self.workflow_task_response(run, &lease.id).await? {
                        return Ok(resp);
                    }
                }
                Some(Delivery::Activity(_)) => {
                    return Err(EngineError::Internal(
                        "activity task delivered to a workflow poller".into(),
                    ));
                }
                Some(Delivery::Recheck) | None => {
                    if Instant::now() >= deadline || self.stopping.is_cancelled() {
                        return Ok(Default::default());
                    }
                }
            }
        }
    }

    /// Runs `claim` (a look in the store for a task of `key`) unless the store is known to
    /// hold none (see `Matching::known_empty`); remembers a look that found none. Under load
    /// most polls arrive with nothing claimable, and each look is a statement.
    async fn claim_unless_empty<T>(
        &self,
        key: &QueueKey,
        now: Millis,
        claim: impl std::future::Future<Output = Result<Option<T>, StoreError>>,
    ) -> Result<Option<T>, StoreError> {
        let within = self.config.recheck_interval.as_millis() as Millis;
        if self.matching.known_empty(key, now, within) {
            return Ok(None);
        }
        let epoch = self.matching.epoch(key);
        let claimed = claim.await?;
        if claimed.is_none() {
            self.matching.found_empty(key, epoch, now);
        }
        Ok(claimed)
    }

    /// Claims a workflow task of the queue from the store, then (once a second) one whose
    /// sticky worker did not take it in time.
    async fn claim_workflow(
        &self,
        key: &QueueKey,
        ns: &str,
        queue: &str,
        lease_id: &str,
        now: Millis,
    ) -> Result<Option<Run>, EngineError> {
        let claim = self.store.claim_workflow_task(ns, queue, lease_id, now);
        let claimed = self.claim_unless_empty(key, now, claim).await?;
        if claimed.is_some() || !self.sticky_check_due(key) {
            return Ok(claimed);
        }
        let stale_before = now - self.config.sticky_schedule_to_start_timeout.as_millis() as i64;
        let claimed = self
            .store
            .claim_expired_sticky(ns, queue, lease_id, now, stale_before)
            .await?;
        if claimed.is_some() {
            // There may be more (a worker went away with many runs): look again at once.
            self.sticky_checked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
        }
        Ok(claimed)
    }

    /// Builds the poll answer for a workflow task leased to `lease_id`; `None` if the run no
    /// longer holds that lease.
    async fn workflow_task_response(
        &self,
        mut run: Run,
        lease_id: &str,
    ) -> Result<Option<pb::PollWorkflowTaskResponse>, EngineError> {
        if !run.state.buffered.is_empty() {
            // A previous holder's lease ran out while events waited: deliver them now.
            run = self
                .update(run.run_id, |r, now| {
                    let holds = r
                        .wft
                        .as_ref()
                        .and_then(|w| w.lease.as_ref())
                        .is_some_and(|l| l.id == lease_id);
                    if !holds {
                        return Ok((None, None));
                    }
                    let commit = history::flush_for_claim(r, now);
                    let mut after = commit.as_ref().map_or_else(|| r.clone(), |c| c.run.clone());
                    after.version += 1;
                    Ok((commit, Some(after)))
                })
                .await?
                .unwrap_or(run);
        }
        let Some(wft) = run
            .wft
            .as_ref()
            .filter(|w| w.lease.as_ref().is_some_and(|l| l.id == lease_id) && run.is_open())
        else {
            return Ok(None);
        };
        // On a sticky queue the worker has the run cached: send only what it has not seen.
        let from = if wft.queue != run.task_queue && run.state.sticky_from > 0 {
            run.state.sticky_from
        } else {
            1
        };
        // What this node wrote itself needs no read back.
        let history = match self.cached_events(run.run_id, from, run.next_event_id) {
            Some(events) => events,
            None if from >= run.next_event_id => Vec::new(),
            None => {
                self.store
                    .history(run.run_id, from, (run.next_event_id - from).max(0) as usize)
                    .await?
            }
        };
        let token = TaskToken::for_workflow_task(&run, wft, lease_id);
        self.metrics.schedule_to_start(
            "workflow",
            Duration::from_millis((self.now() - wft.visible_at).max(0) as u64),
        );
        Ok(Some(pb::PollWorkflowTaskResponse {
            task_token: token.encode_to_vec(),
            workflow_execution: Some(pb::WorkflowExecution {
                workflow_id: run.workflow_id.clone(),
                run_id: run.run_id.to_text(),
            }),
            workflow_type: run.workflow_type.clone(),
            history,
            attempt: wft.attempt,
            scheduled_time: Some(to_timestamp(wft.visible_at)),
            namespace: run.namespace.clone(),
            traceparent: run.state.traceparent.clone(),
        }))
    }

    /// Whether a poller of `key` should look for runs whose sticky task went unclaimed: at
    /// most once per recheck interval per queue on this node after a look that found none
    /// (the sticky timeout is seconds; looking on every poll cost a read per poll).
    fn sticky_check_due(&self, key: &QueueKey) -> bool {
        let mut last = self
            .sticky_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match last.get(key) {
            Some(at) if now.duration_since(*at) < self.config.recheck_interval => false,
            _ => {
                if last.len() > 10_000 {
                    last.clear();
                }
                last.insert(key.clone(), now);
                true
            }
        }
    }

    fn decode_token(&self, raw: &[u8], kind: i32) -> Result<(TaskToken, RunId), EngineError> {
        let (token, run_id) = TaskToken::decode_from(raw)?;
        if token.kind != kind {
            return Err(EngineError::invalid(
                "task_token",
                if kind == TOKEN_KIND_WORKFLOW {
                    "names an activity task, not a workflow task"
                } else {
                    "names a workflow task, not an activity task"
                },
            ));
        }
        Ok((token, run_id))
    }

    /// Applies the commands of a workflow task.
    pub async fn complete_workflow_task(
        &self,
        req: pb::RespondWorkflowTaskCompletedRequest,
    ) -> Result<pb::RespondWorkflowTaskCompletedResponse, EngineError> {
        let (token, run_id) = self.decode_token(&req.task_token, TOKEN_KIND_WORKFLOW)?;
        let ident = identity(&req.identity)?;
        if !req.sticky_queue.is_empty() {
            sticky_queue_field("sticky_queue", &req.sticky_queue)?;
        }
        let size: usize = req.commands.iter().map(Message::encoded_len).sum();
        self.check_payload("commands", size)?;
        let eager_slots = usize::try_from(req.eager_activity_slots.clamp(0, 64)).unwrap_or(0);
        if eager_slots > 0 {
            TaskQueue::parse(&req.eager_activity_queue)?;
        }
        let return_history = req.return_history && !req.sticky_queue.is_empty();
        let (rejected, eager, events) = self
            .update(run_id, |run, now| {
                let decided = self.decide_completion(
                    run,
                    &token,
                    &req.commands,
                    ident,
                    &req.sticky_queue,
                    return_history,
                    (&req.eager_activity_queue, eager_slots),
                    (now, now),
                )?;
                Ok(match decided {
                    Completion::Applied { commit, eager } => {
                        let events = if return_history {
                            commit.events.clone()
                        } else {
                            Vec::new()
                        };
                        (Some(commit), (None, eager, events))
                    }
                    Completion::Refused { commit, error } => {
                        (Some(commit), (Some(error), Vec::new(), Vec::new()))
                    }
                })
            })
            .await?;
        if let Some(error) = rejected {
            return Err(error);
        }
        Ok(pb::RespondWorkflowTaskCompletedResponse {
            activity_tasks: eager
                .iter()
                .map(|t| self.activity_task_response(t))
                .collect::<Result<_, _>>()?,
            history: events,
        })
    }

    /// Decides a workflow task's completion: its commands applied (with the history limit
    /// enforced), up to `eager.1` of the activities they schedule on queue `eager.0` leased
    /// to the completing worker from `lease_at`; history is written at `now`. With
    /// `return_history`, the worker applies the appended events itself, so its next sticky
    /// task starts after them.
    #[allow(clippy::too_many_arguments)]
    fn decide_completion(
        &self,
        run: &Run,
        token: &TaskToken,
        commands: &[pb::Command],
        ident: &str,
        sticky_queue: &str,
        return_history: bool,
        eager: (&str, usize),
        (now, lease_at): (Millis, Millis),
    ) -> Result<Completion, EngineError> {
        let mut c = match history::complete_workflow_task(
            run,
            token,
            commands,
            ident,
            sticky_queue,
            now,
        )? {
            WftOutcome::Applied(c) => c,
            WftOutcome::Rejected { commit, error } => {
                return Ok(Completion::Refused { commit, error });
            }
        };
        let len = c.run.next_event_id - 1;
        if !c.closed && len > self.config.max_history_events {
            let why = format!(
                "the history would hold {len} events, over the limit of {}: the run is \
                 terminated; a workflow this long should continue as new",
                self.config.max_history_events
            );
            tracing::warn!(run_id = %run.run_id, "{why}");
            return Ok(Completion::Refused {
                commit: history::terminate(run, &why, "martix-engine", now)?,
                error: EngineError::FailedPrecondition(why),
            });
        }
        // Once when the history passes the mark, then once per thousand events.
        let before = run.next_event_id - 1;
        if !c.closed
            && len > self.config.warn_history_events
            && (before <= self.config.warn_history_events || before / 1000 != len / 1000)
        {
            tracing::warn!(
                run_id = %run.run_id,
                events = len,
                limit = self.config.max_history_events,
                "long history: continue as new before the limit terminates the run"
            );
        }
        if return_history {
            c.run.state.sticky_from = c.run.next_event_id;
        }
        let eager = lease_eagerly(&mut c, eager.0, eager.1, lease_at);
        Ok(Completion::Applied { commit: c, eager })
    }

    /// Records a failed workflow task; it is retried with backoff.
    pub async fn fail_workflow_task(
        &self,
        req: pb::RespondWorkflowTaskFailedRequest,
    ) -> Result<pb::RespondWorkflowTaskFailedResponse, EngineError> {
        let (token, run_id) = self.decode_token(&req.task_token, TOKEN_KIND_WORKFLOW)?;
        let ident = identity(&req.identity)?;
        self.check_payload("failure", failure_len(req.failure.as_ref()))?;
        let cause = pb::WorkflowTaskFailedCause::try_from(req.cause)
            .unwrap_or(pb::WorkflowTaskFailedCause::Unspecified);
        let failure = req.failure.unwrap_or_default();
        tracing::warn!(run_id = %run_id, cause = cause.as_str_name(), message = %failure.message, "workflow task failed");
        self.update(run_id, |run, now| {
            let c = history::fail_workflow_task(run, &token, cause, failure.clone(), ident, now)?;
            Ok((Some(c), ()))
        })
        .await?;
        Ok(pb::RespondWorkflowTaskFailedResponse {})
    }

    /// Waits for an activity task of a queue, up to the long-poll timeout.
    ///
    /// # Cancel safety
    /// As `poll_workflow_task`.
    pub async fn poll_activity_task(
        &self,
        req: pb::PollActivityTaskRequest,
    ) -> Result<pb::PollActivityTaskResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let queue = TaskQueue::parse(&req.task_queue)?;
        identity(&req.identity)?;
        let key = QueueKey::new(ns.as_str(), queue.as_str(), TaskKind::Activity);
        let deadline = Instant::now() + self.config.long_poll_timeout;
        loop {
            let epoch = self.matching.epoch(&key);
            let delivery = match self.matching.take_ready(&key, self.now()) {
                Some(d) => Some(d),
                None => {
                    let lease_id = Lease::new(0, 0).id;
                    let now = self.now();
                    let claim =
                        self.store
                            .claim_activity_task(ns.as_str(), queue.as_str(), &lease_id, now);
                    if let Some(task) = self.claim_unless_empty(&key, now, claim).await? {
                        return self.activity_task_response(&task);
                    }
                    self.wait_delivery(&key, epoch, deadline).await
                }
            };
            match delivery {
                Some(Delivery::Activity(task)) => return self.activity_task_response(&task),
                Some(Delivery::Workflow { .. }) => {
                    return Err(EngineError::Internal(
                        "workflow task delivered to an activity poller".into(),
                    ));
                }
                Some(Delivery::Recheck) | None => {
                    if Instant::now() >= deadline || self.stopping.is_cancelled() {
                        return Ok(Default::default());
                    }
                }
            }
        }
    }

    /// Records a failed attempt (`outcome`: `failed`, `timed_out`) and counts it.
    async fn activity_update(
        &self,
        run_id: RunId,
        scheduled_event_id: i64,
        outcome: &str,
        decide: impl Fn(&Run, Millis) -> Result<RunCommit, EngineError>,
    ) -> Result<(), EngineError> {
        let (activity_type, retried) = self
            .update(run_id, |run, now| {
                let commit = decide(run, now)?;
                let activity_type = activity_type_of(run, scheduled_event_id);
                // Still pending after a failure: another attempt was scheduled.
                let retried = commit.run.activity(scheduled_event_id).is_some();
                Ok((Some(commit), (activity_type, retried)))
            })
            .await?;
        self.metrics.attempt(&activity_type, outcome, retried);
        Ok(())
    }

    /// Records an activity's result, with the workflow's next decision when the worker made
    /// it ahead and the run has nothing else new.
    pub async fn complete_activity_task(
        &self,
        req: pb::RespondActivityTaskCompletedRequest,
    ) -> Result<pb::RespondActivityTaskCompletedResponse, EngineError> {
        let (token, run_id) = self.decode_token(&req.task_token, TOKEN_KIND_ACTIVITY)?;
        let ident = identity(&req.identity)?;
        self.check_payload("result", payload_len(req.result.as_ref()))?;
        let eager_queue = if req.eager_workflow_queue.is_empty() {
            None
        } else {
            Some(TaskQueue::parse(&req.eager_workflow_queue)?)
        };
        let decision = req
            .decision
            .as_ref()
            .map(|d| self.check_decision(d).map(|checked| (d, checked)))
            .transpose()?;
        let (activity_type, answer) = self
            .update(run_id, |run, now| {
                let activity_type = activity_type_of(run, token.scheduled_event_id);
                if let Some((d, checked)) = decision
                    && let Some((commit, eager)) = self.decide_ahead(
                        run,
                        &token,
                        req.result.clone(),
                        ident,
                        (d, checked),
                        now,
                    )?
                {
                    let events = commit.events.clone();
                    let answer = Answer::Decided { events, eager };
                    return Ok((Some(commit), (activity_type, answer)));
                }
                let mut commit =
                    history::complete_activity(run, &token, req.result.clone(), ident, now)?;
                let eager = eager_queue
                    .as_ref()
                    .and_then(|q| lease_workflow_task(&mut commit, q.as_str(), now))
                    .map(Box::new);
                Ok((Some(commit), (activity_type, Answer::Recorded(eager))))
            })
            .await?;
        self.metrics.attempt(&activity_type, "completed", false);
        if decision.is_some() {
            self.metrics
                .decision_ahead(matches!(answer, Answer::Decided { .. }));
        }
        match answer {
            Answer::Decided { events, eager } => Ok(pb::RespondActivityTaskCompletedResponse {
                workflow_task: None,
                decision_recorded: true,
                history: events,
                activity_tasks: eager
                    .iter()
                    .map(|t| self.activity_task_response(t))
                    .collect::<Result<_, _>>()?,
            }),
            // The result is recorded: a failure to build the eager task only leaves it to be
            // polled once its lease runs out, it must not fail the answer.
            Answer::Recorded(eager) => {
                let workflow_task = match eager.map(|b| *b) {
                    None => None,
                    Some((lease_id, run)) => self
                        .workflow_task_response(run, &lease_id)
                        .await
                        .unwrap_or(None),
                };
                Ok(pb::RespondActivityTaskCompletedResponse {
                    workflow_task,
                    ..Default::default()
                })
            }
        }
    }

    /// Validates a decision made ahead. (Commands over the payload limit are not an error
    /// here: the result is recorded alone, and the workflow task that follows refuses them as
    /// usual.)
    fn check_decision(&self, d: &pb::WorkflowDecision) -> Result<CheckedDecision, EngineError> {
        sticky_queue_field("decision.sticky_queue", &d.sticky_queue)?;
        if d.history_len < 1 {
            return Err(EngineError::invalid(
                "decision.history_len",
                "must be at least 1",
            ));
        }
        let at = d
            .decided_at
            .as_ref()
            .map(from_timestamp)
            .ok_or_else(|| EngineError::invalid("decision.decided_at", "is required"))?;
        let slots = usize::try_from(d.eager_activity_slots.clamp(0, 64)).unwrap_or(0);
        if slots > 0 {
            TaskQueue::parse(&d.eager_activity_queue)?;
        }
        let size: usize = d.commands.iter().map(Message::encoded_len).sum();
        Ok(CheckedDecision {
            at,
            slots,
            within_limit: size <= self.config.max_payload_bytes,
        })
    }

    /// The result and a decision made ahead as one change, if the decision saw everything:
    /// the run's history is the copy of the worker that keeps it (its sticky queue; no
    /// workflow task, nothing buffered, the same length) and the decision's time is at most
    /// `DECISION_CLOCK_SKEW_MS` before the engine's and not after it. `None`: record the result
    /// alone. The events are written at the decision's time, so that a replay sees the time
    /// the decision saw.
    fn decide_ahead(
        &self,
        run: &Run,
        token: &TaskToken,
        result: Option<pb::Payload>,
        ident: &str,
        (d, checked): (&pb::WorkflowDecision, CheckedDecision),
        now: Millis,
    ) -> Result<Option<(RunCommit, Vec<crate::history::ActivityTask>)>, EngineError> {
        let CheckedDecision {
            at,
            slots,
            within_limit,
        } = checked;
        // The decision's time: not after the engine's (history's times never go back), and
        // not so long before that the worker's copy may be older than it looks.
        let fits = run.wft.is_none()
            && run.state.buffered.is_empty()
            && run.next_event_id - 1 == d.history_len
            && !run.state.sticky_queue.is_empty()
            && run.state.sticky_queue == d.sticky_queue
            && at <= now
            && now.saturating_sub(at) <= DECISION_CLOCK_SKEW_MS
            && within_limit;
        if !fits {
            return Ok(None);
        }
        let first = history::complete_activity(run, token, result, ident, at)?;
        // The result's two events, then the workflow task that would deliver them.
        let mut base = first.run.clone();
        let timeout = base.state.workflow_task_timeout_ms;
        let Some(wft) = base
            .wft
            .as_mut()
            .filter(|w| w.scheduled_event_id == d.history_len + 3 && w.lease.is_none())
        else {
            return Ok(None);
        };
        let lease = Lease::new(at, timeout);
        let wft_token = TaskToken::for_workflow_task(&first.run, wft, &lease.id);
        wft.lease = Some(lease);
        match self.decide_completion(
            &base,
            &wft_token,
            &d.commands,
            ident,
            &d.sticky_queue,
            true,
            (&d.eager_activity_queue, slots),
            // History at the decision's time, leases from the engine's clock.
            (at, now),
        )? {
            Completion::Applied { commit, eager } => Ok(Some((first.then(commit), eager))),
            // A decision the engine refuses is made again in a workflow task, which records
            // the refusal as usual.
            Completion::Refused { .. } => Ok(None),
        }
    }

    /// Records a failed activity attempt: retried per its policy, or final.
    pub async fn fail_activity_task(
        &self,
        req: pb::RespondActivityTaskFailedRequest,
    ) -> Result<pb::RespondActivityTaskFailedResponse, EngineError> {
        let (token, run_id) = self.decode_token(&req.task_token, TOKEN_KIND_ACTIVITY)?;
        let ident = identity(&req.identity)?;
        self.check_payload("failure", failure_len(req.failure.as_ref()))?;
        let failure = req.failure.unwrap_or_default();
        let jitter: f64 = rand::random();
        self.activity_update(run_id, token.scheduled_event_id, "failed", |run, now| {
            history::fail_activity(run, &token, failure.clone(), ident, now, jitter, false)
        })
        .await?;
        Ok(pb::RespondActivityTaskFailedResponse {})
    }

    /// The answer to an activity poll for `task`, counting how long it waited.
    fn activity_task_response(
        &self,
        task: &crate::history::ActivityTask,
    ) -> Result<pb::PollActivityTaskResponse, EngineError> {
        let mut resp = pb::PollActivityTaskResponse::decode(&task.info[..])
            .map_err(|e| EngineError::Internal(format!("corrupt activity task: {e}")))?;
        let lease = task.lease.as_ref().ok_or_else(|| {
            EngineError::Internal("activity task handed out without a lease".into())
        })?;
        resp.attempt = task.attempt;
        resp.scheduled_event_id = task.scheduled_event_id;
        self.metrics.schedule_to_start(
            "activity",
            Duration::from_millis((self.now() - task.visible_at).max(0) as u64),
        );
        if let Some(d) = &task.heartbeat_details {
            resp.heartbeat_details = pb::Payload::decode(&d[..]).ok();
        }
        resp.task_token = TaskToken {
            namespace: task.namespace.clone(),
            run_id: task.run_id.to_text(),
            kind: TOKEN_KIND_ACTIVITY,
            scheduled_event_id: task.scheduled_event_id,
            attempt: task.attempt,
            lease_id: lease.id.clone(),
            history_len: 0,
        }
        .encode_to_vec();
        Ok(resp)
    }

    /// Gives back to the store the workflow tasks held for polls of this node that did not
    /// come for them within the recheck interval (see `matching`), so that any poller of any
    /// node can claim them. Returns how many were given back (one that cannot be is left
    /// leased, and claimable when its lease runs out).
    pub async fn release_stale_holds(&self) -> usize {
        let before = self.now() - self.config.recheck_interval.as_millis() as Millis;
        let stale = self.matching.take_stale(before);
        let mut released = 0;
        for (key, delivery) in stale {
            let Delivery::Workflow { run_id, lease } = delivery else {
                continue;
            };
            // The copy here says leased: it must not outlive the release.
            self.forget(run_id);
            match self.store.release_workflow_task(run_id, &lease.id).await {
                Ok(true) => {
                    released += 1;
                    self.matching.notify(&key);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%run_id, error = %e, "cannot give a held workflow task back")
                }
            }
        }
        if released > 0 {
            tracing::info!(
                released,
                "held workflow tasks nobody took given back to the store"
            );
        }
        released
    }

    /// Records the attempts whose lease ran out as timed out, and retries them per their
    /// policy (called by the timer loop). An attempt completed meanwhile is left alone.
    pub async fn reap_expired_leases(&self) -> Result<usize, EngineError> {
        let expired = self.store.expired_activity_leases(self.now(), 256).await?;
        let n = expired.len();
        for e in expired {
            let token = TaskToken {
                namespace: e.namespace.clone(),
                run_id: e.run_id.to_text(),
                kind: TOKEN_KIND_ACTIVITY,
                scheduled_event_id: e.scheduled_event_id,
                attempt: e.attempt,
                lease_id: e.lease_id.clone(),
                history_len: 0,
            };
            let (kind, what) = if e.heartbeat {
                (
                    "HeartbeatTimeout",
                    "no heartbeat within the heartbeat timeout",
                )
            } else {
                (
                    "StartToCloseTimeout",
                    "the attempt did not finish within its start-to-close timeout",
                )
            };
            let failure = pb::Failure {
                message: format!("attempt {} timed out: {what}", e.attempt),
                r#type: kind.into(),
                ..Default::default()
            };
            let jitter: f64 = rand::random();
            let result = self
                .activity_update(e.run_id, e.scheduled_event_id, "timed_out", |run, now| {
                    history::fail_activity(
                        run,
                        &token,
                        failure.clone(),
                        "engine",
                        now,
                        jitter,
                        true,
                    )
                })
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(run_id = %e.run_id, attempt = e.attempt, kind, "activity attempt timed out")
                }
                Err(EngineError::NotFound(_)) => {}
                Err(err) => {
                    tracing::warn!(run_id = %e.run_id, error = %err, "cannot record an activity timeout")
                }
            }
        }
        Ok(n)
    }

    /// Records a heartbeat; answers whether the activity should stop.
    pub async fn record_activity_heartbeat(
        &self,
        req: pb::RecordActivityHeartbeatRequest,
    ) -> Result<pb::RecordActivityHeartbeatResponse, EngineError> {
        let (token, run_id) = self.decode_token(&req.task_token, TOKEN_KIND_ACTIVITY)?;
        self.check_payload("details", payload_len(req.details.as_ref()))?;
        let details = req.details.as_ref().map(Message::encode_to_vec);
        let held = self
            .store
            .heartbeat_activity(
                run_id,
                token.scheduled_event_id,
                &token.lease_id,
                details.as_deref(),
                self.now(),
            )
            .await?;
        if held {
            return Ok(pb::RecordActivityHeartbeatResponse {
                cancel_requested: false,
            });
        }
        // Not held any more: cancelled, the run closed, or the lease moved on.
        let run = self.load(run_id).await?;
        history::same_namespace(&run, &token)?;
        let pending = run
            .activity(token.scheduled_event_id)
            .is_some_and(|a| a.attempt == token.attempt);
        if !run.is_open() || !pending {
            return Ok(pb::RecordActivityHeartbeatResponse {
                cancel_requested: true,
            });
        }
        Err(EngineError::NotFound(
            "activity task is no longer held by this attempt".into(),
        ))
    }

    /// Fires a due timer (called by the timer loop).
    #[tracing::instrument(name = "timer.fire", skip(self), fields(run_id = %run_id))]
    pub async fn fire_timer(&self, run_id: RunId, key: &str) -> Result<(), EngineError> {
        // A schedule-to-start timeout only counts if no worker holds the activity.
        let started = if let Some(id) = key
            .strip_prefix("a:")
            .and_then(|r| r.strip_suffix(":s2s"))
            .and_then(|id| id.parse::<i64>().ok())
        {
            let now = self.now();
            self.store
                .activity_leases(run_id)
                .await?
                .iter()
                .any(|l| l.scheduled_event_id == id && l.lease_until.is_some_and(|u| u > now))
        } else {
            false
        };
        let result = self
            .update(run_id, |run, now| {
                match history::fire_timer(run, key, now, started) {
                    Some(c) => Ok((Some(c), true)),
                    None => Ok((None, false)),
                }
            })
            .await;
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Ok(self.store.delete_timer(run_id, key).await?),
            // Fired by another node meanwhile.
            Err(EngineError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn decode_list_token(raw: &[u8]) -> Result<(Millis, String), EngineError> {
    let bad = || EngineError::invalid("next_page_token", PAGE_TOKEN_MALFORMED);
    let s = std::str::from_utf8(raw).map_err(|_| bad())?;
    let rest = s.strip_prefix("l1:").ok_or_else(bad)?;
    let (time, run) = rest.split_once(':').ok_or_else(bad)?;
    let time = time.parse::<i64>().map_err(|_| bad())?;
    RunId::parse("next_page_token", run).map_err(|_| bad())?;
    Ok((time, run.to_owned()))
}

fn info(
    run: &Run,
    memo: std::collections::HashMap<String, pb::Payload>,
) -> pb::WorkflowExecutionInfo {
    pb::WorkflowExecutionInfo {
        execution: Some(pb::WorkflowExecution {
            workflow_id: run.workflow_id.clone(),
            run_id: run.run_id.to_text(),
        }),
        workflow_type: run.workflow_type.clone(),
        task_queue: run.task_queue.clone(),
        status: run.status as i32,
        start_time: Some(to_timestamp(run.start_time)),
        close_time: run.close_time.map(to_timestamp),
        history_length: run.next_event_id - 1,
        memo,
    }
}

/// An optional request id: empty for none, else 1 to 255 bytes.
fn request_id(id: &str) -> Result<Option<String>, EngineError> {
    match id.len() {
        0 => Ok(None),
        1..=255 => Ok(Some(id.to_owned())),
        n => Err(EngineError::invalid(
            "request_id",
            format!("is {n} bytes, at most 255"),
        )),
    }
}
