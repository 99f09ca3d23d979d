//! Reporting a worker's circuit breakers to the engine, so that operators see open ones
//! (`DescribeWorkflow`, `martix stuck`, `/metrics`) whatever the worker's adapters are.

use crate::connection::Transport;
use martix_proto::v1 as pb;
use pb::worker_service_client::WorkerServiceClient;

/// The state of one circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast.
    Open,
    /// A trial call goes through.
    HalfOpen,
}

/// Sends this worker's breaker states to the engine (cheap to clone; see
/// [`crate::Worker::breaker_reporter`]).
#[derive(Clone, Debug)]
pub struct BreakerReporter {
    pub(super) client: WorkerServiceClient<Transport>,
    pub(super) namespace: String,
    pub(super) identity: String,
}

impl BreakerReporter {
    /// Reports the current state of each `(adapter, state)`. The engine keeps the latest state
    /// per worker and adapter, and the time it changed.
    ///
    /// # Errors
    /// The engine refused the report (an adapter name over 255 bytes, more than 64 reports)
    /// or could not be reached.
    pub async fn report(
        &self,
        breakers: &[(String, BreakerState)],
    ) -> Result<(), crate::ClientError> {
        let request = pb::ReportBreakersRequest {
            namespace: self.namespace.clone(),
            identity: self.identity.clone(),
            breakers: breakers
                .iter()
                .map(|(adapter, state)| pb::BreakerReport {
                    adapter: adapter.clone(),
                    state: match state {
                        BreakerState::Closed => pb::BreakerState::Closed,
                        BreakerState::Open => pb::BreakerState::Open,
                        BreakerState::HalfOpen => pb::BreakerState::HalfOpen,
                    } as i32,
                })
                .collect(),
        };
        self.client.clone().report_breakers(request).await?;
        Ok(())
    }
}
