//! What workers report about the tasks they hold: a workflow task's commands or failure, an
//! activity's result (with the workflow's next decision when made ahead, see `decide_ahead`) or
//! failure, and heartbeats. A report names its task by the token it was handed; its change is
//! decided by `history` on the run as it is and written through `commit`, so a report whose
//! lease moved on or whose run closed is refused there. Also here: handing the reporting worker
//! the tasks its report creates (eager dispatch), and counting activity attempts for metrics.

use super::Engine;
use super::completion::Completion;
use super::requests::{failure_len, identity, payload_len, sticky_queue_field};
use crate::clock::Millis;
use crate::error::EngineError;
use crate::history::{
    self, Lease, Run, RunCommit, TOKEN_KIND_ACTIVITY, TOKEN_KIND_WORKFLOW, TaskToken,
};
use crate::ids::{RunId, TaskQueue};
use martix_proto::v1 as pb;
use prost::Message;

/// What recording an activity's result answers.
enum Answer {
    /// The decision made ahead was recorded with it: the events appended, the activities
    /// leased to the worker.
    Decided {
        events: Vec<pb::HistoryEvent>,
        eager: Vec<crate::history::ActivityTask>,
    },
    /// The result alone; the workflow task it scheduled, if leased to the worker (its lease id
    /// and the run as written).
    Recorded(Option<Box<(String, Run)>>),
}

/// Leases to the reporting worker the workflow task a change schedules on `queue`, due now
/// (eager workflow task); returns its lease id and the run as it will be stored.
fn lease_workflow_task(commit: &mut RunCommit, queue: &str, now: Millis) -> Option<(String, Run)> {
    let timeout = commit.run.state.workflow_task_timeout_ms;
    let wft = commit
        .run
        .wft
        .as_mut()
        .filter(|w| w.queue == queue && w.lease.is_none() && w.visible_at <= now)?;
    let lease = Lease::new(now, timeout);
    let id = lease.id.clone();
    wft.lease = Some(lease);
    let mut written = commit.run.clone();
    written.version += 1;
    Some((id, written))
}

/// The type of `run`'s pending activity `scheduled_event_id` (empty if it is not pending), for
/// metrics.
fn activity_type_of(run: &Run, scheduled_event_id: i64) -> String {
    run.activity(scheduled_event_id)
        .map(|a| a.activity_type.clone())
        .unwrap_or_default()
}

impl Engine {
    /// Applies the commands of a workflow task.
    pub async fn complete_workflow_task(
        &self,
        req: pb::RespondWorkflowTaskCompletedRequest,
    ) -> Result<pb::RespondWorkflowTaskCompletedResponse, EngineError> {
        let (token, run_id) = self.decode_token(&req.task_token, TOKEN_KIND_WORKFLOW)?;
        let ident = identity(&req.identity)?;
        if !req.sticky_queue.is_empty() {
            sticky_queue_field("sticky_queue", &req.sticky_queue)?;
        }
        let size: usize = req.commands.iter().map(Message::encoded_len).sum();
        self.check_payload("commands", size)?;
        let eager_slots = usize::try_from(req.eager_activity_slots.clamp(0, 64)).unwrap_or(0);
        if eager_slots > 0 {
            TaskQueue::parse(&req.eager_activity_queue)?;
        }
        let return_history = req.return_history && !req.sticky_queue.is_empty();
        let (rejected, eager, events) = self
            .update(run_id, |run, now| {
                let decided = self.decide_completion(
                    run,
                    &token,
                    &req.commands,
                    ident,
                    &req.sticky_queue,
                    return_history,
                    (&req.eager_activity_queue, eager_slots),
                    (now, now),
                )?;
                Ok(match decided {
                    Completion::Applied { commit, eager } => {
                        let events = if return_history {
                            commit.events.clone()
                        } else {
                            Vec::new()
                        };
                        (Some(commit), (None, eager, events))
                    }
                    Completion::Refused { commit, error } => {
                        (Some(commit), (Some(error), Vec::new(), Vec::new()))
                    }
                })
            })
            .await?;
        if let Some(error) = rejected {
            return Err(error);
        }
        Ok(pb::RespondWorkflowTaskCompletedResponse {
            activity_tasks: eager
                .into_iter()
                .map(|t| self.activity_task_response(t))
                .collect::<Result<_, _>>()?,
            history: events,
        })
    }

    /// Records a failed workflow task; it is retried with backoff.
    pub async fn fail_workflow_task(
        &self,
        req: pb::RespondWorkflowTaskFailedRequest,
    ) -> Result<pb::RespondWorkflowTaskFailedResponse, EngineError> {
        let (token, run_id) = self.decode_token(&req.task_token, TOKEN_KIND_WORKFLOW)?;
        let ident = identity(&req.identity)?;
        self.check_payload("failure", failure_len(req.failure.as_ref()))?;
        let cause = pb::WorkflowTaskFailedCause::try_from(req.cause)
            .unwrap_or(pb::WorkflowTaskFailedCause::Unspecified);
        let failure = req.failure.unwrap_or_default();
        tracing::warn!(run_id = %run_id, cause = cause.as_str_name(), message = %failure.message, "workflow task failed");
        self.update(run_id, |run, now| {
            let c = history::fail_workflow_task(run, &token, cause, failure.clone(), ident, now)?;
            Ok((Some(c), ()))
        })
        .await?;
        Ok(pb::RespondWorkflowTaskFailedResponse {})
    }

    /// Records an activity's result, with the workflow's next decision when the worker made
    /// it ahead and the run has nothing else new.
    pub async fn complete_activity_task(
        &self,
        req: pb::RespondActivityTaskCompletedRequest,
    ) -> Result<pb::RespondActivityTaskCompletedResponse, EngineError> {
        let (token, run_id) = self.decode_token(&req.task_token, TOKEN_KIND_ACTIVITY)?;
        let ident = identity(&req.identity)?;
        self.check_payload("result", payload_len(req.result.as_ref()))?;
        let eager_queue = if req.eager_workflow_queue.is_empty() {
            None
        } else {
            Some(TaskQueue::parse(&req.eager_workflow_queue)?)
        };
        let decision = req
            .decision
            .as_ref()
            .map(|d| self.check_decision(d).map(|checked| (d, checked)))
            .transpose()?;
        let (activity_type, answer) = self
            .update(run_id, |run, now| {
                let activity_type = activity_type_of(run, token.scheduled_event_id);
                if let Some((d, checked)) = decision
                    && let Some((commit, eager)) = self.decide_ahead(
                        run,
                        &token,
                        req.result.clone(),
                        ident,
                        (d, checked),
                        now,
                    )?
                {
                    let events = commit.events.clone();
                    let answer = Answer::Decided { events, eager };
                    return Ok((Some(commit), (activity_type, answer)));
                }
                let mut commit =
                    history::complete_activity(run, &token, req.result.clone(), ident, now)?;
                let eager = eager_queue
                    .as_ref()
                    .and_then(|q| lease_workflow_task(&mut commit, q.as_str(), now))
                    .map(Box::new);
                Ok((Some(commit), (activity_type, Answer::Recorded(eager))))
            })
            .await?;
        self.metrics.attempt(&activity_type, "completed", false);
        if decision.is_some() {
            self.metrics
                .decision_ahead(matches!(answer, Answer::Decided { .. }));
        }
        match answer {
            Answer::Decided { events, eager } => Ok(pb::RespondActivityTaskCompletedResponse {
                workflow_task: None,
                decision_recorded: true,
                history: events,
                activity_tasks: eager
                    .into_iter()
                    .map(|t| self.activity_task_response(t))
                    .collect::<Result<_, _>>()?,
            }),
            // The result is recorded: a failure to build the eager task only leaves it to be
            // polled once its lease runs out, it must not fail the answer.
            Answer::Recorded(eager) => {
                let workflow_task = match eager.map(|b| *b) {
                    None => None,
                    Some((lease_id, run)) => self
                        .workflow_task_response(run, &lease_id)
                        .await
                        .unwrap_or(None),
                };
                Ok(pb::RespondActivityTaskCompletedResponse {
                    workflow_task,
                    ..Default::default()
                })
            }
        }
    }

    /// Records a failed activity attempt: retried per its policy, or final.
    pub async fn fail_activity_task(
        &self,
        req: pb::RespondActivityTaskFailedRequest,
    ) -> Result<pb::RespondActivityTaskFailedResponse, EngineError> {
        let (token, run_id) = self.decode_token(&req.task_token, TOKEN_KIND_ACTIVITY)?;
        let ident = identity(&req.identity)?;
        self.check_payload("failure", failure_len(req.failure.as_ref()))?;
        let failure = req.failure.unwrap_or_default();
        let jitter: f64 = rand::random();
        self.activity_update(run_id, token.scheduled_event_id, "failed", |run, now| {
            history::fail_activity(run, &token, failure.clone(), ident, now, jitter, false)
        })
        .await?;
        Ok(pb::RespondActivityTaskFailedResponse {})
    }

    /// Records a heartbeat; answers whether the activity should stop.
    pub async fn record_activity_heartbeat(
        &self,
        req: pb::RecordActivityHeartbeatRequest,
    ) -> Result<pb::RecordActivityHeartbeatResponse, EngineError> {
        let (token, run_id) = self.decode_token(&req.task_token, TOKEN_KIND_ACTIVITY)?;
        self.check_payload("details", payload_len(req.details.as_ref()))?;
        let details = req.details.as_ref().map(Message::encode_to_vec);
        let held = self
            .store
            .heartbeat_activity(
                run_id,
                token.scheduled_event_id,
                &token.lease_id,
                details.as_deref(),
                self.now(),
            )
            .await?;
        if held {
            return Ok(pb::RecordActivityHeartbeatResponse {
                cancel_requested: false,
            });
        }
        // Not held any more: cancelled, the run closed, or the lease moved on.
        let run = self.load(run_id).await?;
        history::same_namespace(&run, &token)?;
        let pending = run
            .activity(token.scheduled_event_id)
            .is_some_and(|a| a.attempt == token.attempt);
        if !run.is_open() || !pending {
            return Ok(pb::RecordActivityHeartbeatResponse {
                cancel_requested: true,
            });
        }
        Err(EngineError::NotFound(
            "activity task is no longer held by this attempt".into(),
        ))
    }

    /// Records a failed attempt (`outcome`: `failed`, `timed_out`) and counts it.
    pub(super) async fn activity_update(
        &self,
        run_id: RunId,
        scheduled_event_id: i64,
        outcome: &str,
        decide: impl Fn(&Run, Millis) -> Result<RunCommit, EngineError>,
    ) -> Result<(), EngineError> {
        let (activity_type, retried) = self
            .update(run_id, |run, now| {
                let commit = decide(run, now)?;
                let activity_type = activity_type_of(run, scheduled_event_id);
                // Still pending after a failure: another attempt was scheduled.
                let retried = commit.run.activity(scheduled_event_id).is_some();
                Ok((Some(commit), (activity_type, retried)))
            })
            .await?;
        self.metrics.attempt(&activity_type, outcome, retried);
        Ok(())
    }

    fn decode_token(&self, raw: &[u8], kind: i32) -> Result<(TaskToken, RunId), EngineError> {
        let (token, run_id) = TaskToken::decode_from(raw)?;
        if token.kind != kind {
            return Err(EngineError::invalid(
                "task_token",
                if kind == TOKEN_KIND_WORKFLOW {
                    "names an activity task, not a workflow task"
                } else {
                    "names a workflow task, not an activity task"
                },
            ));
        }
        Ok((token, run_id))
    }
}
