//! What workers report about the tasks they hold: a workflow task's commands or failure, an
//! activity's result (with the workflow's next decision when made ahead, see `decide_ahead`) or
//! failure, and heartbeats. A report names its task by the token it was handed; its change is
//! decided by `history` on the run as it is and written through `commit`, so a report whose
//! lease moved on or whose run closed is refused there. Also here: telling `history` what the
//! reporting worker can take of the tasks its report creates (eager dispatch) and answering it
//! with what the decision leased to it, and counting activity attempts for metrics.

use super::Engine;
use super::requests::{failure_len, identity, payload_len, sticky_queue_field};
use crate::clock::Millis;
use crate::error::EngineError;
use crate::history::{
    self, ActivityTask, Decided, Dispatch, EagerSlots, Run, Sticky, TOKEN_KIND_ACTIVITY,
    TOKEN_KIND_WORKFLOW, TaskToken, WftOutcome,
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
        eager: Vec<ActivityTask>,
    },
    /// The result alone, and the workflow task it scheduled if leased to the worker.
    Recorded {
        workflow_task: Option<Box<EagerWorkflowTask>>,
    },
}

/// The workflow task a change leased to the reporting worker: its lease and the run as
/// written, to answer the worker with.
struct EagerWorkflowTask {
    lease_id: String,
    run: Run,
}

impl EagerWorkflowTask {
    /// The workflow task `decided` leases to the reporting worker, taken out of it.
    fn take(decided: &mut Decided) -> Option<Box<Self>> {
        let lease = decided.to_reporter.workflow_task.take()?;
        let mut run = decided.commit.run.clone();
        run.version += 1;
        Some(Box::new(Self {
            lease_id: lease.id,
            run,
        }))
    }
}

/// The type of `run`'s pending activity `scheduled_event_id` (empty if it is not pending), for
/// metrics.
fn activity_type_of(run: &Run, scheduled_event_id: i64) -> String {
    run.activity(scheduled_event_id)
        .map(|a| a.activity_type.clone())
        .unwrap_or_default()
}

/// Longest part of a worker's failure message written to the log: a message may be as large
/// as a payload (2 MiB), the whole of it stays in history.
const LOGGED_MESSAGE_BYTES: usize = 512;

/// `text` cut to at most `max` bytes on a character boundary, with how much was left out.
pub(super) fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} more bytes)", &text[..end], text.len() - end).into()
}

impl Engine {
    /// Applies the commands of a workflow task.
    pub async fn complete_workflow_task(
        &self,
        req: pb::RespondWorkflowTaskCompletedRequest,
    ) -> Result<pb::RespondWorkflowTaskCompletedResponse, EngineError> {
        let (token, run_id) = self.decode_token(&req.task_token, TOKEN_KIND_WORKFLOW)?;
        let ident = identity(&req.identity)?;
        let sticky_queue = (!req.sticky_queue.is_empty())
            .then(|| sticky_queue_field("sticky_queue", &req.sticky_queue))
            .transpose()?;
        let size: usize = req.commands.iter().map(Message::encoded_len).sum();
        self.check_payload("commands", size)?;
        let eager_slots = usize::try_from(req.eager_activity_slots.clamp(0, 64)).unwrap_or(0);
        let eager_queue = if eager_slots > 0 {
            Some(TaskQueue::parse_field(
                "eager_activity_queue",
                &req.eager_activity_queue,
            )?)
        } else {
            None
        };
        let sticky = sticky_queue.as_ref().map(|queue| Sticky {
            queue,
            returns_history: req.return_history,
        });
        let return_history = sticky.is_some_and(|s| s.returns_history);
        let eager_activities = EagerSlots {
            queue: eager_queue.as_deref().unwrap_or_default(),
            slots: eager_slots,
        };
        let (rejected, eager, events) = self
            .update(run_id, |run, now, pollers| {
                let d = Dispatch {
                    sticky,
                    eager_activities,
                    ..Dispatch::pollers(pollers, now)
                };
                Ok(
                    match self.decide_completion(run, &token, &req.commands, ident, now, d)? {
                        WftOutcome::Applied(mut decided) => {
                            let events = if return_history {
                                decided.commit.events.clone()
                            } else {
                                Vec::new()
                            };
                            let eager = std::mem::take(&mut decided.to_reporter.activities);
                            (Some(decided), (None, eager, events))
                        }
                        WftOutcome::Rejected { decided, error } => {
                            (Some(decided), (Some(error), Vec::new(), Vec::new()))
                        }
                    },
                )
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
        tracing::warn!(
            run_id = %run_id,
            cause = cause.as_str_name(),
            message = %clip(&failure.message, LOGGED_MESSAGE_BYTES),
            "workflow task failed"
        );
        self.update(run_id, |run, now, pollers| {
            let d = Dispatch::pollers(pollers, now);
            let c =
                history::fail_workflow_task(run, &token, cause, failure.clone(), ident, now, d)?;
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
            Some(TaskQueue::parse_field(
                "eager_workflow_queue",
                &req.eager_workflow_queue,
            )?)
        };
        let decision = req
            .decision
            .as_ref()
            .map(|d| self.check_decision(d))
            .transpose()?;
        let (activity_type, answer) = self
            .update(run_id, |run, now, pollers| {
                let activity_type = activity_type_of(run, token.scheduled_event_id);
                if let Some(checked) = &decision
                    && let Some(mut decided) = self.decide_ahead(
                        run,
                        &token,
                        req.result.clone(),
                        ident,
                        checked,
                        now,
                        pollers,
                    )?
                {
                    let events = decided.commit.events.clone();
                    let eager = std::mem::take(&mut decided.to_reporter.activities);
                    let answer = Answer::Decided { events, eager };
                    return Ok((Some(decided), (activity_type, answer)));
                }
                let d = Dispatch {
                    eager_workflow_queue: eager_queue.as_ref().map(TaskQueue::as_str),
                    ..Dispatch::pollers(pollers, now)
                };
                let mut decided =
                    history::complete_activity(run, &token, req.result.clone(), ident, now, d)?;
                let workflow_task = EagerWorkflowTask::take(&mut decided);
                Ok((
                    Some(decided),
                    (activity_type, Answer::Recorded { workflow_task }),
                ))
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
            Answer::Recorded { workflow_task } => {
                let workflow_task = match workflow_task {
                    None => None,
                    Some(eager) => self
                        .workflow_task_response(eager.run, &eager.lease_id)
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
        self.activity_update(run_id, token.scheduled_event_id, "failed", |run, now, d| {
            history::fail_activity(run, &token, failure.clone(), ident, now, jitter, false, d)
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
                // The token's namespace, which the edge authorized: a token edited to name
                // another namespace holds nothing there.
                &token.namespace,
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
        decide: impl Fn(&Run, Millis, Dispatch<'_>) -> Result<Decided, EngineError>,
    ) -> Result<(), EngineError> {
        let (activity_type, retried) = self
            .update(run_id, |run, now, pollers| {
                let decided = decide(run, now, Dispatch::pollers(pollers, now))?;
                let activity_type = activity_type_of(run, scheduled_event_id);
                // Still pending after a failure: another attempt was scheduled.
                let retried = decided.commit.run.activity(scheduled_event_id).is_some();
                Ok((Some(decided), (activity_type, retried)))
            })
            .await?;
        self.metrics.attempt(&activity_type, outcome, retried);
        Ok(())
    }

    pub(super) fn decode_token(
        &self,
        raw: &[u8],
        kind: i32,
    ) -> Result<(TaskToken, RunId), EngineError> {
        let (token, run_id) = TaskToken::decode_from(raw)?;
        if token.kind != kind {
            return Err(EngineError::invalid(
                "task_token",
                format!(
                    "names {}, not {}",
                    history::token_kind_name(token.kind),
                    history::token_kind_name(kind)
                ),
            ));
        }
        Ok((token, run_id))
    }
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn long_messages_are_clipped_on_a_character_boundary() {
        assert_eq!(clip("short", 512), "short");
        let long = "é".repeat(400); // 800 bytes
        let clipped = clip(&long, 511);
        assert!(clipped.starts_with(&"é".repeat(255)), "{clipped}");
        assert!(clipped.ends_with("... (290 more bytes)"), "{clipped}");
    }
}
