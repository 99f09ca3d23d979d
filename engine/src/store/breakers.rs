//! Breakers: the circuit breakers workers report, recorded by the engine in its own table so
//! that operators see the open ones (`DescribeWorkflow`, `martix stuck`, `/metrics`) whatever
//! adapters a worker guards.

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

/// The breakers workers report. Every method is atomic.
#[async_trait::async_trait]
pub trait BreakerStore: Send + Sync {
    /// Records the states `worker` reports of its breakers; a state unchanged keeps its time.
    async fn record_breakers(
        &self,
        worker: &str,
        reports: &[BreakerReport],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Circuit breakers workers report open, the most recently opened first (at most 100).
    async fn open_breakers(&self) -> Result<Vec<OpenBreaker>, StoreError>;
}
