//! Updates: a caller asks a run to change through its update handler, and gets the handler's
//! result. First the validator: the engine hands the update, as a query naming the history's
//! length, to a worker of the run's queue (`ask_worker`), which replays that much history and
//! asks the validator; a rejection is the caller's answer and nothing is written. Then the
//! engine records the update (`history::accept_update`) only if the run is still where the
//! validator looked; if it moved on (an event, a workflow task outstanding) it asks again. The
//! handler runs in the workflow, which completes the update with a command; the caller waits
//! for that (bounded), or hears ACCEPTED and asks again with the same id.
//!
//! An update id is recorded with its acceptance (as a signal's request id, scoped by the
//! workflow id), so asking again with it never records it twice: it answers with the same
//! update's outcome, or ALREADY_EXISTS if the id was used for another update.

use super::Engine;
use super::queries::MAX_QUERY_ARGS_BYTES;
use super::requests::{KEY_SEPARATOR, fingerprint, identity, payload_len};
use crate::error::{EngineError, duration_field};
use crate::history::{self, Dispatch, Run, UpdateRequest};
use crate::ids::{Namespace, QueryName, RunId};
use martix_proto::v1 as pb;
use pb::history_event::Attributes as A;
use std::time::Duration;
use tokio::time::Instant;

/// The longest an update call waits for the handler's result.
pub(super) const MAX_UPDATE_WAIT: Duration = Duration::from_secs(60);

/// How long the engine waits for an outstanding workflow task to complete before it looks
/// again whether the run is idle (for the validator to look at a state that holds).
const IDLE_RECHECK: Duration = Duration::from_millis(20);

impl Engine {
    /// [`Self::update_workflow`] by `caller` (see [`super::StartInput`]: a start it carries is
    /// stamped as a start by the caller is).
    pub async fn update_workflow_as(
        &self,
        mut req: pb::UpdateWorkflowRequest,
        caller: Option<String>,
    ) -> Result<pb::UpdateWorkflowResponse, EngineError> {
        if let Some(start) = req.start.as_mut() {
            self.stamp_start(start, caller.as_deref());
        }
        self.update_workflow(req).await
    }

    /// Asks a run's update handler to change it (see the module).
    pub async fn update_workflow(
        &self,
        req: pb::UpdateWorkflowRequest,
    ) -> Result<pb::UpdateWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let update_id = QueryName::parse_field("update_id", &req.update_id)?.to_string();
        let name = QueryName::parse_field("update_name", &req.update_name)?;
        let args_len = payload_len(req.args.as_ref());
        if args_len > MAX_QUERY_ARGS_BYTES {
            return Err(EngineError::TooLarge {
                field: "args",
                size: args_len,
                limit: MAX_QUERY_ARGS_BYTES,
            });
        }
        let ident = identity(&req.identity)?.to_owned();
        let wait = duration_field("wait", req.wait.as_ref())?
            .unwrap_or_default()
            .min(MAX_UPDATE_WAIT);
        let u = UpdateRequest {
            update_id,
            name: name.to_string(),
            args: req.args,
            identity: ident,
        };
        let print = fingerprint(&u.name, u.args.as_ref());
        let started_with = req.start.is_some();
        let (run, started) = match req.start {
            Some(mut start) => {
                // The namespace the caller was admitted for, whatever the start names.
                start.namespace = ns.to_string();
                self.start_with_update(start, req.execution.as_ref(), &u, print)
                    .await?
            }
            None => (self.resolve(&ns, req.execution.as_ref()).await?, false),
        };
        let accepted_at = self.accept(&ns, run, &u, print, started_with).await?;
        let mut answer = self
            .wait_update(accepted_at.0, &u.update_id, accepted_at.1, wait)
            .await?;
        answer.started = started;
        Ok(answer)
    }

    /// Update-with-start: starts the run with `u` recorded after its start (the workflow
    /// validates it), or finds the open run of the id, which then takes `u` as any update.
    async fn start_with_update(
        &self,
        start: pb::StartWorkflowRequest,
        execution: Option<&pb::WorkflowExecution>,
        u: &UpdateRequest,
        print: i64,
    ) -> Result<(Run, bool), EngineError> {
        if let Some(e) = execution
            && !e.workflow_id.is_empty()
            && e.workflow_id != start.workflow_id
        {
            return Err(EngineError::invalid(
                "start.workflow_id",
                format!(
                    "is '{}', and the update names workflow '{}': they must be the same",
                    start.workflow_id, e.workflow_id
                ),
            ));
        }
        let (mut params, policy) = self.parse_start(start).await?;
        let key = update_key(&params.workflow_id.to_string(), &u.update_id);
        params.initial_update = Some(u.clone());
        let (ns, wid) = (params.namespace.clone(), params.workflow_id.clone());
        let started = self
            .start_run_with((params, policy), None, Some((key, print)))
            .await?;
        let run = self
            .store
            .latest_run(ns.as_str(), wid.as_str())
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("workflow '{wid}' has no run")))?;
        Ok((run, started.started))
    }

    /// Records `u` on `run` once its validator accepted it on the run's state as it stands
    /// (or finds it recorded before): the run and the update's accepted event.
    async fn accept(
        &self,
        ns: &Namespace,
        mut run: Run,
        u: &UpdateRequest,
        print: i64,
        with_start: bool,
    ) -> Result<(RunId, i64), EngineError> {
        let key = update_key(run.workflow_id.as_str(), &u.update_id);
        let deadline = Instant::now() + self.config.query_timeout;
        loop {
            if let Some(at) = self.accepted_before(&run, &key, u, print).await? {
                return Ok((run.run_id, at));
            }
            if !run.is_open() {
                return Err(EngineError::FailedPrecondition(format!(
                    "workflow '{}' run {} is closed ({}); it takes no update",
                    run.workflow_id,
                    run.run_id,
                    run.status.as_str_name()
                )));
            }
            if with_start && !self.ran_code(&run).await? {
                // Sent with a start to a run whose code has not run yet (another caller's
                // start won): no worker can validate it; the workflow does, as for the start.
                self.update(run.run_id, |r, now, pollers| {
                    let d = Dispatch::pollers(pollers, now);
                    let mut d = history::accept_unvalidated(r, u, now, d)?;
                    d.commit.request_id = Some(key.clone());
                    d.commit.request_fingerprint = print;
                    Ok((Some(d), ()))
                })
                .await?;
                run = self.load(run.run_id).await?;
                continue;
            }
            if run.next_event_id <= 4 {
                // As for queries: no workflow task completed, so no handler was registered.
                return Err(EngineError::FailedPrecondition(format!(
                    "run {} of workflow '{}' has not completed a workflow task yet, so its code \
                     registered no update handler; ask again once it has (or send the update \
                     with the start)",
                    run.run_id, run.workflow_id
                )));
            }
            if run.wft.is_some() {
                // A workflow task is outstanding: the state the validator would see may change
                // under it. Wait for the run to be idle.
                if Instant::now() >= deadline {
                    return Err(EngineError::DeadlineExceeded(format!(
                        "workflow '{}' kept a workflow task outstanding for {}s (is a worker of \
                         queue '{}' running?); update '{}' waits for the run to be idle",
                        run.workflow_id,
                        self.config.query_timeout.as_secs_f64(),
                        run.task_queue,
                        u.name
                    )));
                }
                tokio::time::sleep(IDLE_RECHECK).await;
                run = self.load(run.run_id).await?;
                continue;
            }
            let len = run.next_event_id - 1;
            let asked = pb::WorkflowQuery {
                query_type: u.name.clone(),
                query_args: u.args.clone(),
                update_id: u.update_id.clone(),
                history_length: len,
            };
            let what = format!("the validator of update '{}'", u.name);
            if let Err(f) = self.ask_worker(ns, &run, asked, &what).await? {
                return Err(match f.r#type.as_str() {
                    "UnknownUpdate" => EngineError::invalid("update_name", f.message),
                    "InvalidUpdateArgs" => EngineError::invalid("args", f.message),
                    "Rejected" => EngineError::FailedPrecondition(format!(
                        "update '{}' rejected: {}",
                        u.name, f.message
                    )),
                    _ => EngineError::FailedPrecondition(format!(
                        "update '{}' could not be validated: {}",
                        u.name, f.message
                    )),
                });
            }
            self.update(run.run_id, |r, now, pollers| {
                let d = Dispatch::pollers(pollers, now);
                let decided = history::accept_update(r, u, len, now, d)?.map(|mut d| {
                    d.commit.request_id = Some(key.clone());
                    d.commit.request_fingerprint = print;
                    d
                });
                Ok((decided, ()))
            })
            .await?;
            // Recorded (by this call, or by another with the same id: found next turn), or
            // the run moved on since the validator looked: look again.
            run = self.load(run.run_id).await?;
        }
    }

    /// The accepted event of update `u` if it was recorded before; an id recorded for
    /// another update is refused.
    async fn accepted_before(
        &self,
        run: &Run,
        key: &str,
        u: &UpdateRequest,
        print: i64,
    ) -> Result<Option<i64>, EngineError> {
        if let Some(p) = run
            .state
            .updates
            .iter()
            .find(|p| p.update_id == u.update_id)
        {
            return Ok(Some(p.accepted_event_id));
        }
        let recorded = self.store.request_recorded(&run.namespace, &[key]).await?;
        let Some(recorded) = recorded else {
            return Ok(None);
        };
        if recorded.is_some_and(|f| f != print) {
            return Err(EngineError::AlreadyExists(format!(
                "update id '{}' was used for another update of workflow '{}'; a retry must \
                 send the same update, another update needs another id",
                u.update_id, run.workflow_id
            )));
        }
        match self
            .find_event(
                run.run_id,
                1,
                |a| matches!(a, A::WorkflowUpdateAccepted(x) if x.update_id == u.update_id),
            )
            .await?
        {
            Some((id, _)) => Ok(Some(id)),
            None => Err(EngineError::FailedPrecondition(format!(
                "update id '{}' was taken by another run of workflow '{}'; ask that run, or \
                 use another id",
                u.update_id, run.workflow_id
            ))),
        }
    }

    /// Waits up to `wait` for update `update_id` (accepted at event `accepted_at` of run
    /// `run_id`) to complete.
    async fn wait_update(
        &self,
        run_id: RunId,
        update_id: &str,
        accepted_at: i64,
        wait: Duration,
    ) -> Result<pb::UpdateWorkflowResponse, EngineError> {
        let until = Instant::now() + wait;
        let mut trust_cache = true;
        loop {
            let changed = self.updates_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let run = match self.cached(run_id).filter(|_| trust_cache) {
                Some(run) => run,
                None => self.load(run_id).await?,
            };
            let pending = run.state.updates.iter().any(|u| u.update_id == update_id);
            if !pending {
                let done = self
                    .find_event(
                        run_id,
                        accepted_at,
                        |a| matches!(a, A::WorkflowUpdateCompleted(c) if c.update_id == update_id),
                    )
                    .await?;
                match done {
                    Some((_, A::WorkflowUpdateCompleted(c))) => {
                        return Ok(pb::UpdateWorkflowResponse {
                            run_id: run_id.to_text(),
                            stage: pb::UpdateStage::Completed as i32,
                            result: c.result,
                            failure: c.failure,
                            started: false,
                        });
                    }
                    _ if !run.is_open() => {
                        return Err(EngineError::FailedPrecondition(format!(
                            "workflow '{}' run {run_id} closed ({}) before its handler completed \
                             update '{update_id}'",
                            run.workflow_id,
                            run.status.as_str_name()
                        )));
                    }
                    // This node's copy is behind the store: read it.
                    _ => {}
                }
            }
            let now = Instant::now();
            if now >= until {
                return Ok(pb::UpdateWorkflowResponse {
                    run_id: run_id.to_text(),
                    stage: pb::UpdateStage::Accepted as i32,
                    ..Default::default()
                });
            }
            // Commits on this node wake the wait; another node's are seen at the recheck.
            trust_cache = tokio::select! {
                () = &mut changed => true,
                () = tokio::time::sleep(self.config.recheck_interval.min(until - now)) => false,
                () = self.stopping.cancelled() => {
                    return Err(EngineError::Unavailable("the node is shutting down".into()));
                }
            };
        }
    }

    /// Whether the run completed a workflow task (its code ran and registered its handlers).
    async fn ran_code(&self, run: &Run) -> Result<bool, EngineError> {
        // Past this many events a run has surely run its code; below, its history says.
        const LOOK: i64 = 64;
        if run.next_event_id > LOOK {
            return Ok(true);
        }
        Ok(self
            .find_event(run.run_id, 1, |a| matches!(a, A::WorkflowTaskCompleted(_)))
            .await?
            .is_some())
    }

    /// The first event of run `run_id` from `from` on that `is` picks, with its id.
    async fn find_event(
        &self,
        run_id: RunId,
        from: i64,
        is: impl Fn(&A) -> bool,
    ) -> Result<Option<(i64, A)>, EngineError> {
        const PAGE: usize = 1_000;
        let mut next = from.max(1);
        loop {
            let page = self.store.history(run_id, next, PAGE).await?;
            let full = page.len() == PAGE;
            for e in page {
                next = e.event_id + 1;
                if let Some(a) = e.attributes
                    && is(&a)
                {
                    return Ok(Some((e.event_id, a)));
                }
            }
            if !full {
                return Ok(None);
            }
        }
    }
}

/// An update id as recorded: scoped by the workflow, apart from signals' request ids (two
/// separators: a request id of a signal holds none).
fn update_key(workflow_id: &str, update_id: &str) -> String {
    format!("{workflow_id}{KEY_SEPARATOR}{KEY_SEPARATOR}{update_id}")
}
