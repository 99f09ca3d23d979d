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

/// An operator's hold on a breaker (`martix breaker open|close`), which the worker applies to
/// its own breaker of that name whatever its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerHold {
    /// Refuse every call (the tasks are parked in the engine).
    Open,
    /// Call through whatever the breaker's state.
    Closed,
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
    /// per worker and adapter, and the time it changed, and answers with the operators' holds
    /// on the namespace's breakers, for the worker to apply.
    ///
    /// # Errors
    /// The engine refused the report (an adapter name over 255 bytes, more than 64 reports)
    /// or could not be reached.
    pub async fn report(
        &self,
        breakers: &[(String, BreakerState)],
    ) -> Result<Vec<(String, BreakerHold)>, crate::ClientError> {
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
        let answer = self.client.clone().report_breakers(request).await?;
        Ok(answer
            .into_inner()
            .holds
            .into_iter()
            .filter_map(|h| {
                let hold = match pb::BreakerHold::try_from(h.hold) {
                    Ok(pb::BreakerHold::Open) => BreakerHold::Open,
                    Ok(pb::BreakerHold::Closed) => BreakerHold::Closed,
                    _ => return None,
                };
                Some((h.breaker, hold))
            })
            .collect())
    }
}
