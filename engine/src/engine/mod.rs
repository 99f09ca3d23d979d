//! The engine: validates requests, runs the pure decisions of `history` against the current
//! checkpoint, and commits their changes through the store, retrying on a concurrent change.
//! Hands new tasks to waiting pollers (`matching`) and schedules local wake-ups for timers.
//!
//! This module holds the `Engine` itself: its state, configuration, constructors and plain
//! accessors. What it does is split by job, each module continuing `impl Engine`:
//! `commit` (writing a change and redoing it on a conflict, and what follows a commit),
//! `cache` (the checkpoints this node wrote, so a run's next change needs no read), `waiters`
//! (result waiters), `requests` (checks of request fields, the run a request names),
//! `namespaces`, `workflows` (the client's changes to workflows), `reads` (describe, list,
//! history, result, metrics), `polls` (handing tasks to workers), `worker` (what workers report
//! about their tasks), `completion` (deciding a workflow task's completion), `decide_ahead` (an
//! activity's result recorded with the decision made ahead) and `timeouts` (expired leases and
//! due timers), `children` (what a child workflow and its parent tell each other), `outbox` (the
//! outbox as operators read it), `queries` (questions a run's code answers through a worker,
//! written nowhere) and `updates` (changes a run's code validates, records and answers).

pub(crate) mod breakers;
mod cache;
mod children;
mod commit;
mod completion;
mod decide_ahead;
mod limits;
mod namespaces;
mod outbox;
mod polls;
pub mod queries;
mod reads;
mod requests;
pub mod retention;
mod schedules;
mod stuck;
mod timeouts;
mod updates;
mod waiters;
mod worker;
mod workflows;

pub use workflows::StartInput;

use crate::clock::{Clock, Millis, SystemClock};
use crate::ids::RunId;
use crate::matching::{Matching, QueueKey};
use crate::store::Store;
use breakers::PollerKey;
use cache::CachedRun;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The largest history a run may have, in bytes: below the 64 MiB a worker of the SDK
/// accepts in one message, with room for the rest of a poll's answer.
pub const MAX_HISTORY_BYTES: i64 = 48 * 1024 * 1024;

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
    /// A run whose history would grow past this many bytes is terminated, as for
    /// `max_history_events`; a signal that would take it there is refused. At most
    /// [`MAX_HISTORY_BYTES`], so that the whole history always fits in the answer to a poll.
    pub max_history_bytes: i64,
    /// Events buffered while a workflow task is in flight: past this many, or past
    /// `max_buffered_bytes`, a signal or cancellation is refused (UNAVAILABLE, try again once
    /// the task is done) instead of growing the checkpoint every change rewrites.
    pub max_buffered_events: usize,
    /// Bytes of the events buffered while a workflow task is in flight (see above).
    pub max_buffered_bytes: usize,
    /// Whether this node's relay publishes events to RabbitMQ (reported by the outbox status).
    pub relay_configured: bool,
    /// How often the retention looks for closed runs past their namespace's retention.
    pub retention_interval: Duration,
    /// How long a query waits for a worker's answer before DEADLINE_EXCEEDED.
    pub query_timeout: Duration,
}

impl EngineConfig {
    /// The largest request message a caller may send: two payloads at their limit (a
    /// signal-with-start) and a megabyte for the rest.
    pub fn max_message_bytes(&self) -> usize {
        self.max_payload_bytes * 2 + (1 << 20)
    }
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
            max_history_bytes: MAX_HISTORY_BYTES,
            max_buffered_events: 1_000,
            max_buffered_bytes: 16 * 1024 * 1024,
            relay_configured: false,
            retention_interval: Duration::from_secs(60),
            query_timeout: Duration::from_secs(10),
        }
    }
}

/// The engine of one node. Cheap to share behind an `Arc`.
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Shared with the pollers a change being decided takes (`matching::Reserved`), which
    /// outlive the caller when the write goes on without it.
    matching: Arc<Matching>,
    config: EngineConfig,
    namespaces: RwLock<HashSet<String>>,
    /// The id-reuse policy a start of each workflow type gets when it names none, as the
    /// domains declared them (`Server::id_reuse_default`).
    id_reuse_defaults: RwLock<std::collections::HashMap<String, martix_proto::v1::IdReusePolicy>>,
    /// What the domains write into the input of a start of each workflow type, given the
    /// caller (`Server::start_input`).
    start_inputs: RwLock<std::collections::HashMap<String, Arc<dyn workflows::StartInput>>>,
    /// When this node last recorded each (namespace, queue, kind, identity) polling.
    pollers_noted: std::sync::Mutex<std::collections::HashMap<PollerKey, Millis>>,
    /// Breaker reports written lately, by namespace and worker: what they said and when
    /// (an unchanged report is written at most every `breakers::REPORT_WRITE_EVERY_MS`).
    breakers_noted: std::sync::Mutex<breakers::BreakersNoted>,
    /// Result waiters of this node, by run: a close committed here is handed to its run's
    /// waiters with the closing event (they need no read), and wakes no one else.
    close_waiters: std::sync::Mutex<std::collections::HashMap<RunId, waiters::RunWaiters>>,
    /// Woken when a timer was committed on this node, with its fire time.
    pub(crate) timer_wake: Notify,
    pub(crate) next_timer: std::sync::Mutex<Option<Millis>>,
    /// When this node looks at the schedules next: the earliest time it knows of, or a poll
    /// interval after its last look (for schedules another node wrote).
    pub(crate) next_schedule_look: std::sync::Mutex<Millis>,
    me: std::sync::Weak<Engine>,
    /// Cancelled when the node shuts down: long polls answer empty at once.
    stopping: tokio_util::sync::CancellationToken,
    metrics: crate::metrics::Metrics,
    /// Woken when a commit on this node wrote business events: the relay sends them now.
    /// Notified after a commit of this node completed an update or closed a run: update
    /// callers waiting for a handler's result look again.
    pub(crate) updates_changed: Notify,
    pub(crate) outbox_wake: Notify,
    /// The checkpoints of open runs as this node last wrote them. Most changes of a run go
    /// through the node that made the one before, so they need no read. A cached checkpoint
    /// is trusted only through a write, which the store refuses if the run moved on (another
    /// node changed it); any other outcome decided from it is decided again from the store.
    runs: std::sync::Mutex<std::collections::HashMap<RunId, CachedRun>>,
    /// When pollers of a queue last looked for sticky tasks gone unclaimed.
    sticky_checked: std::sync::Mutex<std::collections::HashMap<QueueKey, Instant>>,
    /// Queues to wake when a task written for later becomes due (a retry's backoff), by
    /// time: one loop (`timers::run_wakes`) serves them all.
    pub(crate) delayed_wakes:
        std::sync::Mutex<std::collections::BTreeMap<Millis, std::collections::HashSet<QueueKey>>>,
    /// Woken when a wake-up earlier than all others was added.
    pub(crate) wakes_changed: Notify,
    /// Queries of this node waiting for a worker's answer (`queries`).
    queries: queries::PendingQueries,
}

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
            matching: Arc::default(),
            config,
            namespaces: RwLock::new(HashSet::new()),
            id_reuse_defaults: RwLock::default(),
            start_inputs: RwLock::default(),
            pollers_noted: Default::default(),
            breakers_noted: Default::default(),
            close_waiters: Default::default(),
            timer_wake: Notify::new(),
            next_timer: std::sync::Mutex::new(None),
            next_schedule_look: std::sync::Mutex::new(0),
            metrics: crate::metrics::Metrics::default(),
            outbox_wake: Notify::new(),
            updates_changed: Notify::new(),
            runs: Default::default(),
            sticky_checked: Default::default(),
            delayed_wakes: Default::default(),
            wakes_changed: Notify::new(),
            queries: Default::default(),
        })
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
}
