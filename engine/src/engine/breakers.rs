//! What workers report, and what their polls show: the engine records each worker's breaker
//! states (its own `breakers` table) so that operators see open ones in `DescribeWorkflow`,
//! `martix stuck` and `/metrics`, whatever adapters the worker guards; and the workers seen
//! polling each task queue (`pollers`), so that a run on a queue nobody polls says so.

use super::Engine;
use super::requests::identity;
use crate::clock::Millis;
use crate::error::EngineError;
use crate::store::{BreakerReport, BreakerState};
use martix_proto::v1 as pb;

/// Most breakers one report carries.
const MAX_REPORTS: usize = 64;

/// A worker polling one queue for one kind of task: (namespace, queue, kind, identity).
pub(super) type PollerKey = (String, String, &'static str, String);
/// A node records a poller at most this often.
const POLLER_NOTE_EVERY_MS: Millis = 15_000;
/// Pollers seen within this long count as polling the queue now.
pub(super) const POLLERS_RECENT_MS: Millis = 60_000;
/// Pollers remembered per node; past it a new one is not recorded until the map is swept (the
/// table stays bounded whatever identities callers make up).
const MAX_POLLERS_NOTED: usize = 10_000;
/// Pollers not seen for a day are deleted by the retention loop.
pub(super) const POLLERS_KEPT_MS: Millis = 24 * 3600 * 1000;

impl Engine {
    /// Records a worker's breaker states.
    pub async fn report_breakers(
        &self,
        req: pb::ReportBreakersRequest,
    ) -> Result<pb::ReportBreakersResponse, EngineError> {
        let namespace = self.namespace(&req.namespace).await?;
        let worker = identity(&req.identity)?;
        if worker.is_empty() {
            return Err(EngineError::invalid("identity", "must name the worker"));
        }
        if req.breakers.len() > MAX_REPORTS {
            return Err(EngineError::invalid(
                "breakers",
                format!("has {} reports, at most {MAX_REPORTS}", req.breakers.len()),
            ));
        }
        let mut reports = Vec::with_capacity(req.breakers.len());
        for (i, b) in req.breakers.iter().enumerate() {
            if b.adapter.is_empty()
                || b.adapter.len() > 255
                || b.adapter.chars().any(char::is_control)
            {
                return Err(EngineError::invalid(
                    "breakers.adapter",
                    format!("of report {i} must be 1 to 255 bytes without control characters"),
                ));
            }
            let state = match pb::BreakerState::try_from(b.state) {
                Ok(pb::BreakerState::Closed) => BreakerState::Closed,
                Ok(pb::BreakerState::Open) => BreakerState::Open,
                Ok(pb::BreakerState::HalfOpen) => BreakerState::HalfOpen,
                _ => {
                    return Err(EngineError::invalid(
                        "breakers.state",
                        format!("of report {i} must be CLOSED, OPEN or HALF_OPEN"),
                    ));
                }
            };
            reports.push(BreakerReport {
                adapter: b.adapter.clone(),
                state,
            });
        }
        self.store()
            .record_breakers(&namespace, worker, &reports, self.now())
            .await?;
        Ok(pb::ReportBreakersResponse {})
    }
}

impl Engine {
    /// Notes that `identity` polls `kind` tasks of `queue`: written to the store at most every
    /// 15 s per poller and node, off the poll's path.
    pub(super) fn note_poller(
        &self,
        namespace: &str,
        queue: &str,
        kind: &'static str,
        identity: &str,
    ) {
        let now = self.now();
        let key: PollerKey = (
            namespace.to_owned(),
            queue.to_owned(),
            kind,
            identity.to_owned(),
        );
        {
            let mut noted = self.pollers_noted.lock().unwrap_or_else(|p| p.into_inner());
            if noted
                .get(&key)
                .is_some_and(|at| now - at < POLLER_NOTE_EVERY_MS)
            {
                return;
            }
            if noted.len() >= MAX_POLLERS_NOTED {
                noted.retain(|_, at| now - *at < POLLER_NOTE_EVERY_MS);
                if noted.len() >= MAX_POLLERS_NOTED {
                    return;
                }
            }
            noted.insert(key.clone(), now);
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            let (ns, queue, kind, identity) = key;
            if let Err(e) = store.record_poller(&ns, &queue, kind, &identity, now).await {
                tracing::debug!(error = %e, "poller not recorded");
            }
        });
    }
}
