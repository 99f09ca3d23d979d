//! Circuit breakers as workers report them: the engine records each worker's breaker states
//! (its own `breakers` table) so that operators see open ones in `DescribeWorkflow`,
//! `martix stuck` and `/metrics`, whatever adapters the worker guards.

use super::Engine;
use super::requests::identity;
use crate::error::EngineError;
use crate::store::{BreakerReport, BreakerState};
use martix_proto::v1 as pb;

/// Most breakers one report carries.
const MAX_REPORTS: usize = 64;

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
