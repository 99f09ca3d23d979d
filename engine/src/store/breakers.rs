//! Breakers: the circuit breakers workers report, recorded by the engine in its own table so
//! that operators see the open ones (`DescribeWorkflow`, `martix stuck`, `/metrics`) whatever
//! adapters a worker guards. With them, the workers seen polling each task queue, so that a
//! queue nobody polls is told apart from a busy one.

use crate::clock::Millis;
use crate::store::StoreError;

/// A breaker's state as a worker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The name the `breakers` table keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

impl std::str::FromStr for BreakerState {
    type Err = String;
    /// The name the `breakers` table keeps.
    fn from_str(s: &str) -> Result<Self, String> {
        [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ]
        .into_iter()
        .find(|b| b.as_str() == s)
        .ok_or_else(|| format!("'{s}' is not a breaker state"))
    }
}

/// One breaker of a worker's report: the adapter it guards and its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerReport {
    pub adapter: String,
    pub state: BreakerState,
}

/// A circuit breaker a worker reports open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenBreaker {
    pub worker: String,
    pub adapter: String,
    /// When it opened.
    pub since: Millis,
}

/// An operator's hold on a breaker: held open or closed by hand, whatever workers report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerHold {
    /// `Open` or `Closed`.
    pub state: BreakerState,
    pub reason: String,
    pub by: String,
    pub since: Millis,
}

/// A breaker's state as one worker reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerBreaker {
    pub worker: String,
    pub adapter: String,
    pub state: BreakerState,
    pub changed_at: Millis,
    pub reported_at: Millis,
}

/// How long a report stands: an unchanged report is written once a minute, so a breaker not
/// reported for this long belongs to a worker that is gone and no longer shows.
pub const BREAKER_REPORT_FRESH_MS: Millis = 5 * 60 * 1000;
/// Reports older than this are deleted by the retention loop.
pub const BREAKER_REPORT_KEPT_MS: Millis = 24 * 3600 * 1000;

/// The breakers workers report. Every method is atomic.
#[async_trait::async_trait]
pub trait BreakerStore: Send + Sync {
    /// Records the states `worker` reports of its breakers in `namespace`; a state unchanged
    /// keeps the time it changed, every report moves the time it was reported.
    async fn record_breakers(
        &self,
        namespace: &str,
        worker: &str,
        reports: &[BreakerReport],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Circuit breakers reported open since `reported_since`, in `namespace` (`None`: every
    /// namespace), the most recently opened first (at most 100).
    async fn open_breakers(
        &self,
        namespace: Option<&str>,
        reported_since: Millis,
    ) -> Result<Vec<OpenBreaker>, StoreError>;

    /// Whether the latest change of state reported (since `reported_since`) of the breakers
    /// of `adapter` in `namespace`, by any worker, was to open or half-open (a trial call is
    /// under way): while it is, the engine keeps the tasks parked behind that breaker, but for
    /// a probe now and then.
    async fn breaker_open(
        &self,
        namespace: &str,
        adapter: &str,
        reported_since: Millis,
    ) -> Result<bool, StoreError>;

    /// Holds `breaker` of `namespace` as `hold` says, or lifts its hold (`None`).
    async fn set_breaker_hold(
        &self,
        namespace: &str,
        breaker: &str,
        hold: Option<&BreakerHold>,
    ) -> Result<(), StoreError>;

    /// The holds on breakers of `namespace`, by breaker name (at most 100).
    async fn breaker_holds(
        &self,
        namespace: &str,
    ) -> Result<Vec<(String, BreakerHold)>, StoreError>;

    /// What workers reported since `since` of the breakers of `namespace` (at most 1,000).
    async fn breaker_reports(
        &self,
        namespace: &str,
        since: Millis,
    ) -> Result<Vec<WorkerBreaker>, StoreError>;

    /// How many tasks of `namespace` are parked behind each breaker (counted up to 10,000).
    async fn parked_counts(&self, namespace: &str) -> Result<Vec<(String, i64)>, StoreError>;

    /// The namespaces and breakers with tasks parked behind them, in order (at most 1,000
    /// pairs).
    async fn parked_breakers(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// Up to `limit` tasks parked behind `breaker` in `namespace`: their runs and scheduled
    /// event ids.
    async fn parked_tasks(
        &self,
        namespace: &str,
        breaker: &str,
        limit: usize,
    ) -> Result<Vec<(crate::ids::RunId, i64)>, StoreError>;

    /// Deletes the reports not renewed since `before`; how many went.
    async fn purge_breakers(&self, before: Millis) -> Result<u64, StoreError>;

    /// Records that `identity` polled `kind` (`workflow` or `activity`) tasks of `task_queue`
    /// at `now`.
    async fn record_poller(
        &self,
        namespace: &str,
        task_queue: &str,
        kind: &str,
        identity: &str,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// The workers seen polling `task_queue` since `since`, the latest first (at most 20).
    async fn pollers(
        &self,
        namespace: &str,
        task_queue: &str,
        since: Millis,
    ) -> Result<Vec<PollerSeen>, StoreError>;

    /// Every task queue of `namespace` polled since `since`, with its pollers (the latest
    /// first), at most `limit` pollers in all, by queue name.
    async fn queue_pollers(
        &self,
        namespace: &str,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<(String, PollerSeen)>, StoreError>;

    /// Deletes the pollers not seen since `before`.
    async fn purge_pollers(&self, before: Millis) -> Result<u64, StoreError>;
}

/// A worker seen polling a task queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollerSeen {
    pub identity: String,
    /// `workflow` or `activity`.
    pub kind: String,
    pub last_seen: Millis,
}
