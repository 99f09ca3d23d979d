//! Running runs that are not progressing, each with why: what `martix stuck` prints and the
//! console's Stuck page shows, from one request. Reads only; the runs looked at are bounded.

use super::Engine;
use crate::error::{EngineError, duration_field};
use martix_proto::time::rfc3339_seconds as time;
use martix_proto::v1 as pb;

/// Running runs looked at per request, at most.
const MAX_EXAMINED: usize = 1000;
/// Runs listed per read of the store.
const PAGE: i32 = 250;

impl Engine {
    /// The namespace's running runs that are not progressing (no worker polls their queue,
    /// waiting for an operator, paused, a failing workflow task, an activity parked behind a
    /// breaker or at its `min_attempts`th attempt), each with why.
    pub async fn list_stuck_workflows(
        &self,
        req: pb::ListStuckWorkflowsRequest,
    ) -> Result<pb::ListStuckWorkflowsResponse, EngineError> {
        let older_than = duration_field("older_than", req.older_than.as_ref())?
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let min_attempts = match req.min_attempts {
            0 => 3,
            n if n < 0 => return Err(EngineError::invalid("min_attempts", "must not be negative")),
            n => n,
        };
        let mut list = pb::ListWorkflowsRequest {
            namespace: req.namespace.clone(),
            page_size: PAGE,
            statuses: vec![pb::WorkflowStatus::Running as i32],
            start_time_to: Some(martix_proto::time::to_timestamp(
                self.now().saturating_sub(older_than),
            )),
            ..Default::default()
        };
        let mut answer = pb::ListStuckWorkflowsResponse::default();
        let mut examined = 0;
        loop {
            let page = self.list_workflows(list.clone()).await?;
            for info in page.executions {
                if examined == MAX_EXAMINED {
                    answer.truncated = true;
                    break;
                }
                examined += 1;
                let d = match self
                    .describe_workflow(pb::DescribeWorkflowRequest {
                        namespace: req.namespace.clone(),
                        execution: info.execution.clone(),
                    })
                    .await
                {
                    Ok(d) => d,
                    // Closed and purged between the list and now: not stuck.
                    Err(EngineError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                if answer.open_breakers.is_empty() {
                    answer.open_breakers = d.open_breakers.clone();
                }
                let (why, retryable) = why_stuck(&d, min_attempts);
                if !why.is_empty() {
                    answer.workflows.push(pb::StuckWorkflow {
                        info: d.info.or(Some(info)),
                        why,
                        retryable,
                    });
                }
            }
            if answer.truncated || page.next_page_token.is_empty() {
                break;
            }
            list.next_page_token = page.next_page_token;
        }
        answer.examined = examined as i32;
        Ok(answer)
    }
}

/// Why a run described by `d` is not progressing (nothing: it is), and whether an activity of
/// it waits for its next attempt.
fn why_stuck(d: &pb::DescribeWorkflowResponse, min_attempts: i32) -> (Vec<String>, bool) {
    let info = d.info.clone().unwrap_or_default();
    let mut why = Vec::new();
    if d.pollers.is_empty() {
        why.push(format!(
            "no worker has polled queue '{}' in the last minute (a misspelled queue, or its workers are down)",
            info.task_queue
        ));
    }
    if info.paused_since.is_some() {
        why.push(format!(
            "paused since {} by {}: {}",
            time(info.paused_since.as_ref()),
            info.paused_by,
            info.paused_reason
        ));
    }
    if !info.attention.is_empty() {
        why.push(format!(
            "needs attention since {}: {}",
            time(info.attention_since.as_ref()),
            info.attention
        ));
    }
    if let Some(t) = d.pending_workflow_task.as_ref().filter(|t| t.attempt >= 2) {
        why.push(format!(
            "workflow task failing, attempt {}: {}",
            t.attempt,
            t.last_failure.as_ref().map_or("-", |f| f.message.as_str())
        ));
    }
    let mut retryable = false;
    for a in &d.pending_activities {
        if !a.parked_behind.is_empty() {
            why.push(format!(
                "activity {} ({}) parked behind the {} breaker since {}, at attempt {}",
                a.activity_id,
                a.activity_type,
                a.parked_behind,
                time(a.parked_since.as_ref()),
                a.attempt
            ));
        } else if a.attempt >= min_attempts {
            why.push(format!(
                "activity {} ({}) attempt {}, next {}, last error: {}",
                a.activity_id,
                a.activity_type,
                a.attempt,
                time(a.next_attempt_time.as_ref()),
                a.last_failure
                    .as_ref()
                    .map_or("-".into(), |f| format!("{} ({})", f.message, f.r#type))
            ));
        }
        // Waiting for its next attempt: RetryActivity runs it at once.
        retryable |= a.state == pb::PendingActivityState::BackingOff as i32;
    }
    if !why.is_empty() {
        for b in &d.open_breakers {
            why.push(format!(
                "breaker open: {} on worker {}",
                b.adapter, b.worker
            ));
        }
    }
    (why, retryable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use martix_proto::time::to_timestamp;

    fn activity(attempt: i32, state: pb::PendingActivityState) -> pb::PendingActivityInfo {
        pb::PendingActivityInfo {
            activity_id: "3".into(),
            activity_type: "charge_payment".into(),
            state: state as i32,
            attempt,
            last_failure: Some(pb::Failure {
                message: "gateway down".into(),
                r#type: "Unavailable".into(),
                ..Default::default()
            }),
            next_attempt_time: Some(to_timestamp(1_764_000_000_000)),
            ..Default::default()
        }
    }

    fn polled(d: pb::DescribeWorkflowResponse) -> pb::DescribeWorkflowResponse {
        pb::DescribeWorkflowResponse {
            pollers: vec![pb::PollerInfo {
                identity: "w1".into(),
                kind: "activity".into(),
                last_seen: None,
            }],
            ..d
        }
    }

    #[test]
    fn a_run_that_progresses_has_no_reason() {
        let d = polled(pb::DescribeWorkflowResponse {
            pending_activities: vec![activity(2, pb::PendingActivityState::BackingOff)],
            ..Default::default()
        });
        assert_eq!(why_stuck(&d, 3), (vec![], true));
    }

    #[test]
    fn each_reason_is_named_and_open_breakers_follow() {
        let d = pb::DescribeWorkflowResponse {
            info: Some(pb::WorkflowExecutionInfo {
                task_queue: "orders".into(),
                paused_since: Some(to_timestamp(1_764_000_000_000)),
                paused_by: "ops".into(),
                paused_reason: "stock count".into(),
                attention: "refund failed".into(),
                attention_since: Some(to_timestamp(1_764_000_001_000)),
                ..Default::default()
            }),
            pending_activities: vec![
                activity(4, pb::PendingActivityState::BackingOff),
                pb::PendingActivityInfo {
                    parked_behind: "payment".into(),
                    parked_since: Some(to_timestamp(1_764_000_002_000)),
                    ..activity(5, pb::PendingActivityState::Parked)
                },
            ],
            pending_workflow_task: Some(pb::PendingWorkflowTaskInfo {
                attempt: 2,
                last_failure: Some(pb::Failure {
                    message: "panic in workflow".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            open_breakers: vec![pb::OpenBreaker {
                worker: "w1".into(),
                adapter: "payment".into(),
                since: None,
            }],
            ..Default::default()
        };
        let (why, retryable) = why_stuck(&d, 3);
        assert!(retryable);
        assert_eq!(
            why,
            [
                "no worker has polled queue 'orders' in the last minute (a misspelled queue, or its workers are down)",
                "paused since 2025-11-24T16:00:00Z by ops: stock count",
                "needs attention since 2025-11-24T16:00:01Z: refund failed",
                "workflow task failing, attempt 2: panic in workflow",
                "activity 3 (charge_payment) attempt 4, next 2025-11-24T16:00:00Z, last error: gateway down (Unavailable)",
                "activity 3 (charge_payment) parked behind the payment breaker since 2025-11-24T16:00:02Z, at attempt 5",
                "breaker open: payment on worker w1",
            ]
        );
        // Below `min_attempts` an activity is not a reason; a parked one always is.
        let (why, _) = why_stuck(&polled(d), 5);
        assert!(!why.iter().any(|w| w.contains("attempt 4")), "{why:?}");
        assert!(why.iter().any(|w| w.contains("parked behind")), "{why:?}");
    }
}
