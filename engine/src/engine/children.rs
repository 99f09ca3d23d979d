//! Child workflows, the engine's part: the timer rows by which runs tell each other what they
//! must act on (see `history::decide::children`). On the parent: `c:<initiated>:start` starts
//! the child and records the outcome; `c:<initiated>:closed:<run>` records how the child's
//! workflow ended. On a child: `p:terminate` and `p:cancel`, the parent's close policy or its
//! request. Each is acted on at least once and its effect is idempotent: a start finds the
//! child it made before (its start event names this parent and event), recording an outcome
//! twice is refused by the row it deletes, a terminated run is not terminated again and a
//! cancellation asked twice changes nothing.

use super::Engine;
use super::commit::MAX_CONFLICT_RETRIES;
use crate::error::EngineError;
use crate::history::{self, ChildKey, Dispatch, Run, StartParams};
use crate::ids::{RunId, TaskQueue, WorkflowId, WorkflowType};
use crate::store::StoreError;
use martix_proto::v1 as pb;
use pb::history_event::Attributes;

impl Engine {
    /// Acts on a timer row of a child workflow's (`c:`) or a parent's (`p:`): `None` when
    /// `key` is neither.
    pub(super) async fn fire_family_timer(
        &self,
        run_id: RunId,
        key: &str,
    ) -> Option<Result<(), EngineError>> {
        let result = if let Some(child) = ChildKey::parse(key) {
            match child {
                ChildKey::Start(initiated) => self.start_child(run_id, initiated, key).await,
                ChildKey::Closed(initiated, child) => {
                    self.record_child_closed(run_id, initiated, child, key)
                        .await
                }
            }
        } else if key == history::PARENT_TERMINATES_KEY || key == history::PARENT_CANCELS_KEY {
            self.obey_parent(run_id, key).await
        } else if key.starts_with("c:") || key.starts_with("p:") {
            // Not a key this engine writes: it would come due forever.
            tracing::warn!(run_id = %run_id, timer = %key, "unknown timer row deleted");
            Ok(false)
        } else {
            return None;
        };
        Some(match result {
            Ok(true) => Ok(()),
            // Nothing to do (or the run is gone): the row goes.
            Ok(false) | Err(EngineError::NotFound(_)) => self
                .store
                .delete_timer(run_id, key)
                .await
                .map_err(Into::into),
            Err(e) => Err(e),
        })
    }

    /// Starts the child the parent's event `initiated` asked for and records the outcome on
    /// the parent; `Ok(false)` when there is nothing (left) to do.
    async fn start_child(
        &self,
        parent_id: RunId,
        initiated: i64,
        key: &str,
    ) -> Result<bool, EngineError> {
        let parent = self.load(parent_id).await?;
        let pending = parent
            .state
            .children
            .iter()
            .any(|c| c.initiated_event_id == initiated && c.run_id.is_empty());
        if !parent.is_open() || !pending {
            return Ok(false);
        }
        let event = self.store.history(parent_id, initiated, 1).await?;
        let Some(Attributes::StartChildWorkflowExecutionInitiated(asked)) =
            event.into_iter().next().and_then(|e| e.attributes)
        else {
            return Err(EngineError::Internal(format!(
                "run {parent_id}: event {initiated} is not a child's start"
            )));
        };
        let policy = history::children::close_policy_key(&history::PendingChild {
            parent_close_policy: asked.parent_close_policy,
            ..Default::default()
        });
        let outcome = self.start_child_run(&parent, initiated, asked).await?;
        let recorded = self
            .update(parent_id, |run, now, pollers| {
                let d = Dispatch::pollers(pollers, now);
                let decided = history::child_started(run, initiated, outcome.clone(), key, now, d);
                let recorded = decided.is_some();
                Ok((decided, recorded))
            })
            .await?;
        if !recorded
            && let (Ok(child), Some(policy)) = (&outcome, policy)
            && !self.load(parent_id).await?.is_open()
        {
            // The parent closed while its child was being started: its close could not see the
            // child, so the child gets the close policy now.
            self.obey_parent(*child, &policy).await?;
        }
        Ok(recorded)
    }

    /// Starts the child's first run, or finds the one an earlier attempt started: `Err` is
    /// why it cannot start (its id runs another workflow, or was used and may not be again).
    async fn start_child_run(
        &self,
        parent: &Run,
        initiated: i64,
        asked: pb::StartChildWorkflowExecutionInitiatedAttributes,
    ) -> Result<Result<RunId, pb::Failure>, EngineError> {
        let link = pb::ParentExecution {
            workflow_execution: Some(pb::WorkflowExecution {
                workflow_id: parent.workflow_id.to_string(),
                run_id: parent.run_id.to_text(),
            }),
            initiated_event_id: initiated,
            parent_close_policy: asked.parent_close_policy,
        };
        let failed = |kind: &str, message: String| {
            Ok(Err(pb::Failure {
                message,
                r#type: kind.to_owned(),
                non_retryable: true,
                ..Default::default()
            }))
        };
        // Checked when the command was applied.
        let (Ok(wid), Ok(wtype), Ok(queue)) = (
            WorkflowId::parse(&asked.workflow_id),
            WorkflowType::parse(&asked.workflow_type),
            TaskQueue::parse(&asked.task_queue),
        ) else {
            return failed("InvalidStart", "the child's ids do not parse".into());
        };
        let ms = |d: Option<&pbjson_types::Duration>| history::duration_to_ms(d);
        let mut params = StartParams {
            input: asked.input,
            execution_timeout_ms: ms(asked.workflow_execution_timeout.as_ref()),
            run_timeout_ms: ms(asked.workflow_run_timeout.as_ref()),
            task_timeout_ms: ms(asked.workflow_task_timeout.as_ref()),
            identity: format!("parent {}", parent.workflow_id),
            traceparent: parent.state.traceparent.clone(),
            parent: Some(link.clone()),
            ..StartParams::new(parent.namespace.clone(), wid.clone(), wtype.clone(), queue)
        };
        let ns = parent.namespace.as_str();
        for _ in 0..MAX_CONFLICT_RETRIES {
            if let Some(last) = self.store.latest_run(ns, wid.as_str()).await? {
                if last.state.parent.as_ref() == Some(&link) {
                    // Started by an earlier attempt (it may have continued as new since).
                    let first =
                        RunId::parse("run_id", &last.state.first_run_id).unwrap_or(last.run_id);
                    return Ok(Ok(first));
                }
                if last.is_open() {
                    return failed(
                        "WorkflowAlreadyRunning",
                        format!(
                            "workflow id '{wid}' is in use by a running workflow (run {}, type {})",
                            last.run_id, last.workflow_type
                        ),
                    );
                }
                if self.id_reuse_default(&wtype) == pb::IdReusePolicy::RejectDuplicate {
                    return failed(
                        "WorkflowIdReused",
                        format!(
                            "workflow id '{wid}' already ran (run {}, {}) and workflow type \
                             '{wtype}' allows one run per id",
                            last.run_id,
                            last.status.as_str_name()
                        ),
                    );
                }
                params.events_published = last.state.events_published;
            }
            let run_id = RunId::new();
            let mut pollers = self.matching.reserving();
            let now = self.now();
            let d = Dispatch::pollers(&mut pollers, now);
            let decided = history::new_run(&params, run_id, now, d);
            match self.write(decided, pollers).await {
                Ok(()) => {
                    self.metrics.started(&params.workflow_type);
                    return Ok(Ok(run_id));
                }
                // Another start of the id won the race: look again.
                Err(StoreError::IdUsed | StoreError::AlreadyOpen) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Unavailable(format!(
            "child workflow '{wid}' start kept conflicting; will retry"
        )))
    }

    /// Records on the parent how its child's workflow ended (`child`: the run that closed).
    async fn record_child_closed(
        &self,
        parent_id: RunId,
        initiated: i64,
        child: RunId,
        key: &str,
    ) -> Result<bool, EngineError> {
        let run = self.load(child).await?;
        if run.is_open() {
            return Err(EngineError::Internal(format!(
                "child run {child} told its parent it closed, and it is open"
            )));
        }
        let last = self
            .store
            .last_event(child)
            .await?
            .and_then(|e| e.attributes);
        let (result, failure) = last
            .as_ref()
            .and_then(super::reads::closing_outcome)
            .ok_or_else(|| {
                EngineError::Internal(format!("closed run {child} ends with no closing event"))
            })?;
        let closed = pb::ChildWorkflowExecutionClosedAttributes {
            initiated_event_id: initiated,
            workflow_execution: Some(pb::WorkflowExecution {
                workflow_id: run.workflow_id.to_string(),
                run_id: child.to_text(),
            }),
            status: run.status as i32,
            result,
            failure,
        };
        let first = RunId::parse("run_id", &run.state.first_run_id).unwrap_or(child);
        self.update(parent_id, |parent, now, pollers| {
            let d = Dispatch::pollers(pollers, now);
            let decided =
                history::child_closed(parent, initiated, first, closed.clone(), key, now, d);
            let recorded = decided.is_some();
            Ok((decided, recorded))
        })
        .await
    }

    /// Does what the parent's row on this child asks, on the workflow's current run (the
    /// child may have continued as new since the parent knew its run); the row is deleted
    /// after (`Ok(false)`), as the effect is idempotent.
    async fn obey_parent(&self, run_id: RunId, key: &str) -> Result<bool, EngineError> {
        let run = self.load(run_id).await?;
        // The child may have continued as new, or been reset, since: its workflow's current
        // run, if it is still this parent's child.
        let target = if !run.is_open() {
            match self
                .store
                .latest_run(run.namespace.as_str(), run.workflow_id.as_str())
                .await?
            {
                Some(latest) if latest.state.parent == run.state.parent => latest.run_id,
                _ => return Ok(false),
            }
        } else {
            run_id
        };
        let terminate = key == history::PARENT_TERMINATES_KEY;
        let done = self
            .update(target, |run, now, pollers| {
                if !run.is_open() {
                    return Ok((None, ()));
                }
                let decided = if terminate {
                    Some(
                        history::terminate(run, "its parent workflow closed", "martix", now)?
                            .into(),
                    )
                } else {
                    let d = Dispatch::pollers(pollers, now);
                    history::request_cancel(run, "its parent workflow asked", "martix", now, d)?
                };
                Ok((decided, ()))
            })
            .await;
        match done {
            Ok(()) | Err(EngineError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
