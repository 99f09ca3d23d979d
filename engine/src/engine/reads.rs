//! What a client reads without changing anything: a run's description, the list of runs, a
//! page of history, a run's outcome (waiting for it with `waiters`), and this node's metrics
//! text. Reads go to the store, not to this node's cache, since they must show what other nodes
//! wrote. The page tokens they hand out are versioned text (`l1:`, `h1:`), made and decoded here
//! and nowhere else.

use super::Engine;
use crate::clock::{from_timestamp, to_timestamp};
use crate::error::{EngineError, duration_field};
use crate::history::{PendingActivity, Run};
use crate::ids::{InvalidId, RunId, TaskQueue, WorkflowType};
use crate::store::{ListAfter, ListQuery};
use martix_proto::v1 as pb;
use std::time::Duration;
use tokio::time::Instant;

const PAGE_TOKEN_MALFORMED: &str = "is malformed: pass back the token a previous response gave";

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

impl Engine {
    /// The latest run of a workflow id (or the run `execution` names): its id and status, in
    /// one read of the store. What a cache of views derived from a closed run checks before
    /// it answers: a reset makes another run the latest, retention removes it.
    pub async fn run_status(
        &self,
        req: pb::DescribeWorkflowRequest,
    ) -> Result<(String, pb::WorkflowStatus), EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        Ok((run.run_id.to_text(), run.status))
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
        let pending_activities = pending_activities(&run, &leases, now);
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
        let pending_workflow_task = pending_workflow_task(&run, now);
        let open_breakers = self.open_breakers_in(&run.namespace, now).await?;
        // Who polls the queue matters while the run waits for work: not once it closed.
        let pollers = if run.is_open() {
            self.store
                .pollers(
                    &run.namespace,
                    &run.task_queue,
                    now - super::breakers::POLLERS_RECENT_MS,
                )
                .await?
        } else {
            Vec::new()
        };
        let pollers = pollers
            .into_iter()
            .map(|p| pb::PollerInfo {
                identity: p.identity,
                kind: p.kind,
                last_seen: Some(to_timestamp(p.last_seen)),
            })
            .collect();
        Ok(pb::DescribeWorkflowResponse {
            pollers,
            open_breakers,
            info: Some(info(&run, memo)),
            pending_activities,
            pending_timers,
            pending_workflow_task,
            cancel_requested: run.state.cancel_requested,
            pending_children: run
                .state
                .children
                .iter()
                .map(|c| pb::PendingChildInfo {
                    workflow_id: c.workflow_id.clone(),
                    workflow_type: c.workflow_type.clone(),
                    run_id: c.run_id.clone(),
                    initiated_event_id: c.initiated_event_id,
                    parent_close_policy: c.parent_close_policy,
                    cancel_requested: c.cancel_requested,
                })
                .collect(),
            parent: run.state.parent.clone(),
        })
    }

    /// The breakers workers of `namespace` reported open lately.
    pub(super) async fn open_breakers_in(
        &self,
        namespace: &str,
        now: crate::clock::Millis,
    ) -> Result<Vec<pb::OpenBreaker>, EngineError> {
        Ok(self
            .store
            .open_breakers(Some(namespace), now - crate::store::BREAKER_REPORT_FRESH_MS)
            .await?
            .into_iter()
            .map(|b| pb::OpenBreaker {
                worker: b.worker,
                adapter: b.adapter,
                since: Some(to_timestamp(b.since)),
            })
            .collect())
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
        let query = ListQuery {
            statuses,
            workflow_type: optional(WorkflowType::parse, &req.workflow_type)?,
            task_queue: optional(TaskQueue::parse, &req.task_queue)?,
            workflow_id_prefix: (!req.workflow_id_prefix.is_empty())
                .then(|| req.workflow_id_prefix.clone()),
            start_time_from: req.start_time_from.as_ref().map(from_timestamp),
            start_time_to: req.start_time_to.as_ref().map(from_timestamp),
            after,
            filter: if req.query.trim().is_empty() {
                None
            } else {
                Some(crate::visibility::parse(&req.query)?)
            },
            ..ListQuery::new(ns, limit + 1)
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
        let deadline = Instant::now() + wait.min(MAX_RESULT_WAIT);
        let (run, closing_event) = self
            .wait_closed(&ns, req.execution.as_ref(), deadline)
            .await?;
        if run.is_open() {
            return Ok(pb::GetWorkflowResultResponse {
                status: run.status as i32,
                closed: false,
                run_id: run.run_id.to_text(),
                ..Default::default()
            });
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
        match last.and_then(|e| e.attributes) {
            Some(pb::history_event::Attributes::WorkflowExecutionContinuedAsNew(a)) => {
                out.new_run_id = a.new_run_id
            }
            Some(a) if closing_outcome(&a).is_some() => {
                (out.result, out.failure) = closing_outcome(&a).unwrap_or_default()
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

    /// The Prometheus text of this node's metrics, with the store's backlog and breakers.
    pub async fn metrics_text(&self) -> Result<String, EngineError> {
        let (workflow, activity) = self.matching.waiting_by_kind();
        let backlog = self.store.backlog(self.now()).await?;
        let mut breakers: Vec<String> = self
            .store
            .open_breakers(None, self.now() - crate::store::BREAKER_REPORT_FRESH_MS)
            .await?
            .into_iter()
            .map(|b| b.adapter)
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
}

/// Longest a result wait waits: a client that wants longer asks again (the SDK's `result`
/// does), so that no wait holds a slot of its identity's long polls for an hour.
pub(crate) const MAX_RESULT_WAIT: Duration = Duration::from_secs(300);

/// An optional filter: none when empty, else by its kind's rules.
fn optional<T>(
    parse: fn(&str) -> Result<T, InvalidId>,
    raw: &str,
) -> Result<Option<T>, EngineError> {
    if raw.is_empty() {
        Ok(None)
    } else {
        Ok(Some(parse(raw)?))
    }
}

fn decode_list_token(raw: &[u8]) -> Result<ListAfter, EngineError> {
    let bad = || EngineError::invalid("next_page_token", PAGE_TOKEN_MALFORMED);
    let s = std::str::from_utf8(raw).map_err(|_| bad())?;
    let rest = s.strip_prefix("l1:").ok_or_else(bad)?;
    let (time, run) = rest.split_once(':').ok_or_else(bad)?;
    let time = time.parse::<i64>().map_err(|_| bad())?;
    RunId::parse("next_page_token", run).map_err(|_| bad())?;
    Ok(ListAfter {
        start_time: time,
        run_id: run.to_owned(),
    })
}

/// A run's activities waiting for an attempt or running one (`leases`: the tasks' leases; none
/// known, none counts as started).
pub(super) fn pending_activities(
    run: &Run,
    leases: &[crate::store::ActivityLease],
    now: crate::clock::Millis,
) -> Vec<pb::PendingActivityInfo> {
    run.state
        .activities
        .iter()
        .map(|a: &PendingActivity| {
            let lease = leases
                .iter()
                .find(|l| l.scheduled_event_id == a.scheduled_event_id);
            let started = lease.and_then(|l| l.lease_until).is_some_and(|u| u > now);
            let state = if !a.parked_behind.is_empty() {
                pb::PendingActivityState::Parked
            } else if started {
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
                parked_behind: a.parked_behind.clone(),
                parked_since: (!a.parked_behind.is_empty()).then(|| to_timestamp(a.parked_since)),
            }
        })
        .collect()
}

/// A run's workflow task, if it has one.
pub(super) fn pending_workflow_task(
    run: &Run,
    now: crate::clock::Millis,
) -> Option<pb::PendingWorkflowTaskInfo> {
    run.wft.as_ref().map(|w| pb::PendingWorkflowTaskInfo {
        attempt: w.attempt,
        scheduled_time: Some(to_timestamp(w.visible_at)),
        started: w.in_flight(now),
        last_failure: run.state.wft_last_failure.clone(),
    })
}

pub(super) fn info(
    run: &Run,
    memo: std::collections::HashMap<String, pb::Payload>,
) -> pb::WorkflowExecutionInfo {
    pb::WorkflowExecutionInfo {
        execution: Some(pb::WorkflowExecution {
            workflow_id: run.workflow_id.to_string(),
            run_id: run.run_id.to_text(),
        }),
        workflow_type: run.workflow_type.to_string(),
        task_queue: run.task_queue.to_string(),
        status: run.status as i32,
        start_time: Some(to_timestamp(run.start_time)),
        close_time: run.close_time.map(to_timestamp),
        history_length: run.next_event_id - 1,
        memo,
        attention: run.state.attention.clone(),
        attention_since: (!run.state.attention.is_empty())
            .then(|| to_timestamp(run.state.attention_since)),
        paused_since: run
            .state
            .is_paused()
            .then(|| to_timestamp(run.state.paused_at)),
        paused_by: run.state.paused_by.clone(),
        paused_reason: run.state.paused_reason.clone(),
        search_attributes: run.state.search_attributes.clone(),
    }
}

/// What a run's closing event says: its result (completed, compensated) or why it has none
/// (failed, canceled, terminated, timed out); `None` for any other event.
pub(super) fn closing_outcome(
    a: &pb::history_event::Attributes,
) -> Option<(Option<pb::Payload>, Option<pb::Failure>)> {
    use pb::history_event::Attributes as A;
    let failure = |kind: &str, message: String, details: Option<pb::Payload>| pb::Failure {
        message,
        r#type: kind.to_owned(),
        details,
        ..Default::default()
    };
    Some(match a {
        A::WorkflowExecutionCompleted(a) => (a.result.clone(), None),
        A::WorkflowExecutionFailed(a) => (None, a.failure.clone()),
        A::WorkflowExecutionCanceled(a) => (
            None,
            Some(failure(
                "Canceled",
                "workflow canceled".into(),
                a.details.clone(),
            )),
        ),
        A::WorkflowExecutionTerminated(a) => (
            None,
            Some(failure(
                "Terminated",
                format!("workflow terminated: {}", a.reason),
                None,
            )),
        ),
        A::WorkflowExecutionTimedOut(_) => (
            None,
            Some(failure("TimedOut", "workflow timed out".into(), None)),
        ),
        _ => return None,
    })
}
