//! What an operator asks when work does not move: the running runs that are not progressing,
//! each with why (what `martix stuck` prints and the console's Stuck page shows), and the task
//! queues with their pollers and backlog. Reads only; what is looked at is bounded.

use super::Engine;
use super::reads::{info, pending_activities, pending_workflow_task};
use crate::error::{EngineError, duration_field};
use crate::store::ListQuery;
use martix_proto::time::{rfc3339_seconds as time, to_timestamp};
use martix_proto::v1 as pb;
use std::collections::HashMap;

/// Running runs looked at per request, at most.
const MAX_EXAMINED: usize = 1000;
/// The longest failure message a reason quotes.
const MAX_MESSAGE_BYTES: usize = 500;

impl Engine {
    /// The namespace's running runs that are not progressing (no worker polls their queue,
    /// waiting for an operator, paused, a failing workflow task, an activity parked behind a
    /// breaker or at its `min_attempts`th attempt), each with why. Looks at the 1,000 running
    /// runs started longest ago (and before `older_than`), from their checkpoints, in three
    /// reads of the store whatever their number.
    pub async fn list_stuck_workflows(
        &self,
        req: pb::ListStuckWorkflowsRequest,
    ) -> Result<pb::ListStuckWorkflowsResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let older_than = duration_field("older_than", req.older_than.as_ref())?
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let min_attempts = match req.min_attempts {
            0 => 3,
            n if n < 0 => return Err(EngineError::invalid("min_attempts", "must not be negative")),
            n => n,
        };
        let now = self.now();
        let mut runs = self
            .store
            .list_runs(&ListQuery {
                statuses: vec![pb::WorkflowStatus::Running],
                start_time_to: Some(now.saturating_sub(older_than)),
                oldest_first: true,
                ..ListQuery::new(ns.clone(), MAX_EXAMINED + 1)
            })
            .await?;
        let truncated = runs.len() > MAX_EXAMINED;
        runs.truncate(MAX_EXAMINED);
        let open_breakers = self.open_breakers_in(ns.as_str(), now).await?;
        let mut pollers: HashMap<String, Vec<pb::PollerInfo>> = HashMap::new();
        for (queue, p) in self
            .store
            .queue_pollers(
                ns.as_str(),
                now - super::breakers::POLLERS_RECENT_MS,
                MAX_POLLERS,
            )
            .await?
        {
            pollers.entry(queue).or_default().push(pb::PollerInfo {
                identity: p.identity,
                kind: p.kind,
                last_seen: Some(to_timestamp(p.last_seen)),
            });
        }
        let mut answer = pb::ListStuckWorkflowsResponse {
            examined: runs.len() as i32,
            truncated,
            ..Default::default()
        };
        for run in runs.iter().filter(|r| r.is_open()) {
            let d = pb::DescribeWorkflowResponse {
                info: Some(info(run, Default::default())),
                pending_activities: pending_activities(run, &[], now),
                pending_workflow_task: pending_workflow_task(run, now),
                open_breakers: open_breakers.clone(),
                pollers: pollers
                    .get(run.task_queue.as_str())
                    .cloned()
                    .unwrap_or_default(),
                ..Default::default()
            };
            let (why, retryable) = why_stuck(&d, min_attempts);
            if !why.is_empty() {
                answer.workflows.push(pb::StuckWorkflow {
                    info: d.info,
                    why,
                    retryable,
                });
            }
        }
        answer.open_breakers = open_breakers;
        Ok(answer)
    }
}

/// Pollers listed per namespace, at most.
const MAX_POLLERS: usize = 1000;

impl Engine {
    /// The namespace's task queues polled in the last minute or holding tasks due, with their
    /// pollers and backlog, by name.
    pub async fn list_task_queues(
        &self,
        req: pb::ListTaskQueuesRequest,
    ) -> Result<pb::ListTaskQueuesResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let now = self.now();
        let mut queues: std::collections::BTreeMap<String, pb::TaskQueueInfo> = Default::default();
        let seen = self
            .store
            .queue_pollers(
                ns.as_str(),
                now - super::breakers::POLLERS_RECENT_MS,
                MAX_POLLERS,
            )
            .await?;
        let truncated = seen.len() >= MAX_POLLERS;
        for (queue, p) in seen {
            let q = queues
                .entry(queue.clone())
                .or_insert_with(|| pb::TaskQueueInfo {
                    name: queue,
                    ..Default::default()
                });
            q.pollers.push(pb::PollerInfo {
                identity: p.identity,
                kind: p.kind,
                last_seen: Some(to_timestamp(p.last_seen)),
            });
        }
        for b in self.store.backlog(now).await? {
            if b.namespace != ns.as_str() {
                continue;
            }
            let q = queues
                .entry(b.queue.clone())
                .or_insert_with(|| pb::TaskQueueInfo {
                    name: b.queue.clone(),
                    ..Default::default()
                });
            match b.kind {
                crate::store::TaskKind::Workflow => q.workflow_backlog += b.tasks,
                crate::store::TaskKind::Activity => q.activity_backlog += b.tasks,
            }
        }
        Ok(pb::ListTaskQueuesResponse {
            queues: queues.into_values().collect(),
            truncated,
        })
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
            super::worker::clip(
                t.last_failure.as_ref().map_or("-", |f| f.message.as_str()),
                MAX_MESSAGE_BYTES
            )
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
                a.last_failure.as_ref().map_or("-".into(), |f| format!(
                    "{} ({})",
                    super::worker::clip(&f.message, MAX_MESSAGE_BYTES),
                    f.r#type
                ))
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

    fn activity(attempt: i32, state: pb::PendingActivityState) -> pb::PendingActivityInfo {
        pb::PendingActivityInfo {
            activity_id: "3".into(),
            activity_type: "call_gateway".into(),
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
                task_queue: "jobs".into(),
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
                    parked_behind: "gateway".into(),
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
                adapter: "gateway".into(),
                since: None,
            }],
            ..Default::default()
        };
        let (why, retryable) = why_stuck(&d, 3);
        assert!(retryable);
        assert_eq!(
            why,
            [
                "no worker has polled queue 'jobs' in the last minute (a misspelled queue, or its workers are down)",
                "paused since 2025-11-24T16:00:00Z by ops: stock count",
                "needs attention since 2025-11-24T16:00:01Z: refund failed",
                "workflow task failing, attempt 2: panic in workflow",
                "activity 3 (call_gateway) attempt 4, next 2025-11-24T16:00:00Z, last error: gateway down (Unavailable)",
                "activity 3 (call_gateway) parked behind the gateway breaker since 2025-11-24T16:00:02Z, at attempt 5",
                "breaker open: gateway on worker w1",
            ]
        );
        // Below `min_attempts` an activity is not a reason; a parked one always is.
        let (why, _) = why_stuck(&polled(d), 5);
        assert!(!why.iter().any(|w| w.contains("attempt 4")), "{why:?}");
        assert!(why.iter().any(|w| w.contains("parked behind")), "{why:?}");
    }
}
