//! The client's changes to workflows: start (per the id-reuse policy), signal-with-start,
//! signal, cancel, terminate, reset, and running now the activities that wait for their next
//! attempt. Each checks its request, names the run, and writes `history`'s decision through
//! `commit`. A start and a reset redo their own write on a conflict instead of going through
//! `update`: a start decides from the workflow id's latest run (or from none, for an id never
//! used), a reset from the run's whole history. What the client reads is in `reads`.

use super::Engine;
use super::commit::MAX_CONFLICT_RETRIES;
use super::requests::{Execution, Signal, identity, payload_len};
use crate::error::{EngineError, duration_field};
use crate::history::{self, Dispatch, Run, StartParams};
use crate::ids::{RunId, TaskQueue, WorkflowId, WorkflowType};
use crate::store::StoreError;
use martix_proto::v1 as pb;
use std::sync::Arc;

/// A domain's say over the input of the runs of one workflow type, given who starts them: a
/// domain whose input records its caller (an order's `placed_by`) writes it there itself, so
/// no client can name someone else. Applied to starts over gRPC and from messages; a domain's
/// own edge (REST) writes its input as it builds it.
pub trait StartInput: Send + Sync + 'static {
    /// Rewrites `input` for a start by `caller`: the authenticated subject, `None` when
    /// authentication is off or the start comes from a message. An input it does not know
    /// is left as it is (the workflow refuses it as it would have).
    fn stamp(&self, caller: Option<&str>, input: &mut Option<pb::Payload>);
}

impl Engine {
    /// Starts a run, or returns the open run of the workflow id.
    pub async fn start_workflow(
        &self,
        req: pb::StartWorkflowRequest,
    ) -> Result<pb::StartWorkflowResponse, EngineError> {
        let start = self.parse_start(req).await?;
        self.start_run(start, None).await
    }

    /// [`Self::start_workflow`] by `caller` (see [`StartInput`]).
    pub async fn start_workflow_as(
        &self,
        mut req: pb::StartWorkflowRequest,
        caller: Option<String>,
    ) -> Result<pb::StartWorkflowResponse, EngineError> {
        self.stamp_start(&mut req, caller.as_deref());
        self.start_workflow(req).await
    }

    /// [`Self::signal_with_start_workflow`] by `caller` (see [`StartInput`]).
    pub async fn signal_with_start_workflow_as(
        &self,
        mut req: pb::SignalWithStartWorkflowRequest,
        caller: Option<String>,
    ) -> Result<pb::SignalWithStartWorkflowResponse, EngineError> {
        if let Some(start) = req.start.as_mut() {
            self.stamp_start(start, caller.as_deref());
        }
        self.signal_with_start_workflow(req).await
    }

    /// Signals the open run of the id, or starts one that begins with the signal.
    pub async fn signal_with_start_workflow(
        &self,
        req: pb::SignalWithStartWorkflowRequest,
    ) -> Result<pb::SignalWithStartWorkflowResponse, EngineError> {
        let start = req
            .start
            .ok_or_else(|| EngineError::invalid("start", "is required"))?;
        let start = self.parse_start(start).await?;
        let signal = self.signal(&req.signal_name, req.signal_input, &req.request_id)?;
        let (ns, wid) = (&start.0.namespace, &start.0.workflow_id);
        if let Some(key) = signal.key(wid)
            && let Some(recorded) = self
                .store
                .request_recorded(ns, &signal.recorded_keys(&key))
                .await?
        {
            // Applied before: the same answer (the id reused for another signal is refused).
            signal.check_recorded(wid, recorded)?;
            let latest = self.store.latest_run(ns, wid).await?;
            return Ok(pb::SignalWithStartWorkflowResponse {
                run_id: latest.map(|r| r.run_id.to_text()).unwrap_or_default(),
                started: false,
            });
        }
        let r = self.start_run(start, Some(signal)).await?;
        Ok(pb::SignalWithStartWorkflowResponse {
            run_id: r.run_id,
            started: r.started,
        })
    }

    /// Parses a start request: the new run's parameters and the id-reuse policy.
    pub(super) async fn parse_start(
        &self,
        req: pb::StartWorkflowRequest,
    ) -> Result<(StartParams, pb::IdReusePolicy), EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let wid = WorkflowId::parse(&req.workflow_id)?;
        let wtype = WorkflowType::parse(&req.workflow_type)?;
        let queue = TaskQueue::parse(&req.task_queue)?;
        let ident = identity(&req.identity)?;
        self.check_payload("input", payload_len(req.input.as_ref()))?;
        let memo_len: usize = req.memo.iter().map(|(k, v)| k.len() + v.data.len()).sum();
        self.check_payload("memo", memo_len)?;
        let ms = |field, d: Option<&pbjson_types::Duration>| -> Result<i64, EngineError> {
            Ok(duration_field(field, d)?.map_or(0, |d| d.as_millis() as i64))
        };
        let policy = match pb::IdReusePolicy::try_from(req.id_reuse_policy)
            .map_err(|_| EngineError::invalid("id_reuse_policy", "is not a known policy"))?
        {
            pb::IdReusePolicy::Unspecified => self.id_reuse_default(&wtype),
            given => given,
        };
        let task_timeout_ms = ms("workflow_task_timeout", req.workflow_task_timeout.as_ref())?;
        history::check_task_timeout(task_timeout_ms)
            .map_err(|e| EngineError::invalid("workflow_task_timeout", e))?;
        let params = StartParams {
            input: req.input,
            execution_timeout_ms: ms(
                "workflow_execution_timeout",
                req.workflow_execution_timeout.as_ref(),
            )?,
            run_timeout_ms: ms("workflow_run_timeout", req.workflow_run_timeout.as_ref())?,
            task_timeout_ms,
            identity: ident.to_owned(),
            memo: req.memo,
            // The RPC's span: a child of the caller's trace when it sent one.
            traceparent: martix_proto::trace::current(),
            ..StartParams::new(ns, wid, wtype, queue)
        };
        Ok((params, policy))
    }

    /// Starts a run (with a first signal for signal-with-start), or finds the open one (and,
    /// for signal-with-start, signals it).
    async fn start_run(
        &self,
        start: (StartParams, pb::IdReusePolicy),
        signal: Option<Signal>,
    ) -> Result<pb::StartWorkflowResponse, EngineError> {
        self.start_run_with(start, signal, None).await
    }

    /// As `start_run`, recording request key `recorded` (with its fingerprint) with a new
    /// run (update-with-start's update id).
    pub(super) async fn start_run_with(
        &self,
        (mut params, policy): (StartParams, pb::IdReusePolicy),
        signal: Option<Signal>,
        recorded: Option<(String, i64)>,
    ) -> Result<pb::StartWorkflowResponse, EngineError> {
        params.initial_signal = signal.as_ref().map(|s| (s.name.clone(), s.input.clone()));
        let (ns, wid) = (params.namespace.clone(), params.workflow_id.clone());
        let ident = params.identity.clone();
        // A plain start goes first as if the id was never used (business keys are mostly new): the insert
        // checks that, and saves reading the id's latest run. A used id is read and decided on
        // as usual. Signal-with-start mostly meets a running workflow: it reads first.
        let mut fresh = signal.is_none();
        for _ in 0..MAX_CONFLICT_RETRIES {
            let last = if fresh {
                None
            } else {
                self.store.latest_run(ns.as_str(), wid.as_str()).await?
            };
            if let Some(last) = last {
                // A new run of a used id goes on with its events' sequence: per workflow id
                // (per business key), sequence numbers never repeat.
                params.events_published = last.state.events_published;
                if signal.is_none() && policy == pb::IdReusePolicy::RejectDuplicate {
                    // One run per id: a start again with the same input is answered with that
                    // run (a retry, a second placement of the same order), with another input
                    // it is a conflict naming the id, whether the run is open or closed.
                    self.same_start(&last, &params).await?;
                    return Ok(pb::StartWorkflowResponse {
                        run_id: last.run_id.to_text(),
                        started: false,
                    });
                }
                if last.is_open() {
                    if let Some(signal) = &signal {
                        let signalled = self
                            .update_refusing(last.run_id, |run, now, pollers| {
                                let d = Dispatch::pollers(pollers, now);
                                let mut c = history::signal(
                                    run,
                                    &signal.name,
                                    signal.input.clone(),
                                    &ident,
                                    now,
                                    d,
                                )?;
                                c.commit.request_id = signal.key(&wid);
                                c.commit.request_fingerprint = signal.fingerprint();
                                Ok((Some(c), ()))
                            })
                            .await;
                        match signalled {
                            Ok(()) => {}
                            // It closed meanwhile: start a new run (per the policy).
                            Err(EngineError::FailedPrecondition(_)) => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    return Ok(pb::StartWorkflowResponse {
                        run_id: last.run_id.to_text(),
                        started: false,
                    });
                }
                let allowed = match policy {
                    pb::IdReusePolicy::Unspecified | pb::IdReusePolicy::AllowDuplicate => true,
                    pb::IdReusePolicy::RejectDuplicate => false,
                    pb::IdReusePolicy::AllowDuplicateFailedOnly => matches!(
                        last.status,
                        pb::WorkflowStatus::Failed
                            | pb::WorkflowStatus::Canceled
                            | pb::WorkflowStatus::Terminated
                            | pb::WorkflowStatus::TimedOut
                    ),
                };
                if !allowed {
                    return Err(EngineError::AlreadyExists(format!(
                        "workflow '{wid}' already ran (run {}, {}) and the id-reuse policy forbids another run",
                        last.run_id,
                        last.status.as_str_name()
                    )));
                }
            }
            let run_id = RunId::new();
            let mut pollers = self.matching.reserving();
            let now = self.now();
            let d = Dispatch::pollers(&mut pollers, now);
            let mut decided = history::new_run(&params, run_id, now, d);
            decided.commit.request_id = signal.as_ref().and_then(|s| s.key(&wid));
            decided.commit.request_fingerprint = signal.as_ref().map_or(0, Signal::fingerprint);
            if let Some((key, print)) = &recorded {
                decided.commit.request_id = Some(key.clone());
                decided.commit.request_fingerprint = *print;
            }
            decided.commit.fresh_id = fresh;
            match self.write(decided, pollers).await {
                Ok(()) => {
                    self.metrics.started(&params.workflow_type);
                    tracing::debug!(namespace = %ns, workflow_id = %wid, run_id = %run_id, "workflow started");
                    return Ok(pb::StartWorkflowResponse {
                        run_id: run_id.to_text(),
                        started: true,
                    });
                }
                // The id was used, or another start of it won the race: read its runs.
                Err(StoreError::IdUsed | StoreError::AlreadyOpen) => {
                    fresh = false;
                    continue;
                }
                // Signal-with-start whose request id was recorded: it was applied before.
                Err(StoreError::Duplicate) => {
                    return Ok(pb::StartWorkflowResponse {
                        run_id: self
                            .store
                            .latest_run(ns.as_str(), wid.as_str())
                            .await?
                            .map(|r| r.run_id.to_text())
                            .unwrap_or_default(),
                        started: false,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Unavailable(
            "workflow start kept conflicting; try again".into(),
        ))
    }

    /// Declares the id-reuse policy a start of `workflow_type` gets when it names none.
    pub fn declare_id_reuse(&self, workflow_type: &str, policy: pb::IdReusePolicy) {
        self.id_reuse_defaults
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(workflow_type.to_owned(), policy);
    }

    /// Declares what a start of `workflow_type` writes into its input, given its caller.
    pub fn declare_start_input(&self, workflow_type: &str, stamp: Arc<dyn StartInput>) {
        self.start_inputs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(workflow_type.to_owned(), stamp);
    }

    /// Applies the [`StartInput`] declared for the request's workflow type, if any.
    pub(super) fn stamp_start(&self, req: &mut pb::StartWorkflowRequest, caller: Option<&str>) {
        let stamp = self
            .start_inputs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&req.workflow_type)
            .cloned();
        if let Some(stamp) = stamp {
            stamp.stamp(caller, &mut req.input);
        }
    }

    /// The policy of a start of `workflow_type` that names none: the declared one, else
    /// allow-duplicate.
    pub(super) fn id_reuse_default(&self, workflow_type: &str) -> pb::IdReusePolicy {
        self.id_reuse_defaults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(workflow_type)
            .copied()
            .unwrap_or(pb::IdReusePolicy::AllowDuplicate)
    }

    /// Whether `params` starts what `last` was started as (type and input), or the conflict.
    async fn same_start(&self, last: &Run, params: &StartParams) -> Result<(), EngineError> {
        let first = self.store.history(last.run_id, 1, 1).await?;
        let started = first.first().and_then(|e| match &e.attributes {
            Some(pb::history_event::Attributes::WorkflowExecutionStarted(s)) => Some(s),
            _ => None,
        });
        let same = started.is_some_and(|s| {
            s.workflow_type == *params.workflow_type
                && s.input.as_ref().map(|p| &p.data) == params.input.as_ref().map(|p| &p.data)
        });
        if same {
            return Ok(());
        }
        Err(EngineError::AlreadyExists(format!(
            "workflow '{}' was started before (run {}, {}) with another type or input; \
             its id-reuse policy allows one run per id",
            params.workflow_id,
            last.run_id,
            last.status.as_str_name()
        )))
    }

    /// Delivers a signal to an open run.
    pub async fn signal_workflow(
        &self,
        req: pb::SignalWorkflowRequest,
    ) -> Result<pb::SignalWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let signal = self.signal(&req.signal_name, req.input, &req.request_id)?;
        let ident = identity(&req.identity)?;
        let execution = Execution::parse(req.execution.as_ref())?;
        let key = signal.key(&execution.workflow_id);
        if let Some(key) = &key
            && let Some(recorded) = self
                .store
                .request_recorded(&ns, &signal.recorded_keys(key))
                .await?
        {
            // Applied before (a retry, a redelivered message): even if the run has closed
            // since, the answer is the same; the id reused for another signal is refused.
            signal.check_recorded(&execution.workflow_id, recorded)?;
            return Ok(pb::SignalWorkflowResponse {});
        }
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        let fingerprint = signal.fingerprint();
        self.update_refusing(run.run_id, |run, now, pollers| {
            let d = Dispatch::pollers(pollers, now);
            let mut c = history::signal(run, &signal.name, signal.input.clone(), ident, now, d)?;
            c.commit.request_id.clone_from(&key);
            c.commit.request_fingerprint = fingerprint;
            Ok((Some(c), ()))
        })
        .await?;
        Ok(pb::SignalWorkflowResponse {})
    }

    /// Asks a run to cancel.
    pub async fn cancel_workflow(
        &self,
        req: pb::CancelWorkflowRequest,
    ) -> Result<pb::CancelWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let ident = identity(&req.identity)?;
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        self.update_refusing(run.run_id, |run, now, pollers| {
            let d = Dispatch::pollers(pollers, now);
            Ok((
                history::request_cancel(run, &req.reason, ident, now, d)?,
                (),
            ))
        })
        .await?;
        Ok(pb::CancelWorkflowResponse {})
    }

    /// Stops a run now.
    pub async fn terminate_workflow(
        &self,
        req: pb::TerminateWorkflowRequest,
    ) -> Result<pb::TerminateWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let ident = identity(&req.identity)?;
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        self.update(run.run_id, |run, now, _| {
            let closed = history::terminate(run, &req.reason, ident, now)?;
            Ok((Some(closed.into()), ()))
        })
        .await?;
        Ok(pb::TerminateWorkflowResponse {})
    }

    /// [`Self::pause_workflow`] by `caller`: the authenticated subject, when there is one, is
    /// who paused it (not the identity the request names).
    pub async fn pause_workflow_as(
        &self,
        mut req: pb::PauseWorkflowRequest,
        caller: Option<String>,
    ) -> Result<pb::PauseWorkflowResponse, EngineError> {
        req.identity = caller.unwrap_or(req.identity);
        self.pause_workflow(req).await
    }

    /// [`Self::resume_workflow`] by `caller`, as [`Self::pause_workflow_as`].
    pub async fn resume_workflow_as(
        &self,
        mut req: pb::ResumeWorkflowRequest,
        caller: Option<String>,
    ) -> Result<pb::ResumeWorkflowResponse, EngineError> {
        req.identity = caller.unwrap_or(req.identity);
        self.resume_workflow(req).await
    }

    /// Pauses a run: none of its tasks is handed out until it is resumed (see
    /// `history::pause`). Pausing a paused run changes nothing.
    pub async fn pause_workflow(
        &self,
        req: pb::PauseWorkflowRequest,
    ) -> Result<pb::PauseWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let ident = identity(&req.identity)?;
        let reason = operator_reason(&req.reason, true)?;
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        let changed = self
            .update(run.run_id, |run, now, _| {
                let paused = history::pause(run, reason, ident, now)?;
                let changed = paused.is_some();
                Ok((paused.map(history::Decided::from), changed))
            })
            .await?;
        if changed {
            tracing::info!(workflow_id = %run.workflow_id, run_id = %run.run_id, identity = ident, reason, "workflow paused");
        }
        Ok(pb::PauseWorkflowResponse { changed })
    }

    /// Resumes a paused run: its tasks are available again. A run not paused is left as it
    /// is.
    pub async fn resume_workflow(
        &self,
        req: pb::ResumeWorkflowRequest,
    ) -> Result<pb::ResumeWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let ident = identity(&req.identity)?;
        let reason = operator_reason(&req.reason, false)?;
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        let changed = self
            .update(run.run_id, |run, now, pollers| {
                let d = Dispatch::pollers(pollers, now);
                let resumed = history::resume(run, now, d)?;
                let changed = resumed.is_some();
                Ok((resumed, changed))
            })
            .await?;
        if changed {
            tracing::info!(workflow_id = %run.workflow_id, run_id = %run.run_id, identity = ident, reason, "workflow resumed");
        }
        Ok(pb::ResumeWorkflowResponse { changed })
    }

    /// Starts a new run from a workflow-task boundary of a run and terminates the old one.
    pub async fn reset_workflow(
        &self,
        req: pb::ResetWorkflowRequest,
    ) -> Result<pb::ResetWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let ident = identity(&req.identity)?;
        if req.reason.is_empty() {
            return Err(EngineError::invalid(
                "reason",
                "must say why the workflow is reset",
            ));
        }
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        let mut new_run = None;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let current = self.load(run.run_id).await?;
            if !current.is_open() {
                return Err(EngineError::FailedPrecondition(format!(
                    "run {} is closed; reset a running workflow",
                    current.run_id
                )));
            }
            let history = self
                .store
                .history(
                    current.run_id,
                    1,
                    (current.next_event_id - 1).max(0) as usize,
                )
                .await?;
            let point = history::reset_point(&history, req.workflow_task_finish_event_id)?;
            let mut pollers = self.matching.reserving();
            let now = self.now();
            let d = Dispatch::pollers(&mut pollers, now);
            let (decided, id) =
                history::reset(&current, &history, point, &req.reason, ident, now, d)?;
            match self.write(decided, pollers).await {
                Ok(()) => {
                    new_run = Some(id);
                    break;
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let id = new_run.ok_or_else(|| {
            EngineError::Unavailable("the run kept changing during the reset; try again".into())
        })?;
        tracing::info!(run_id = %run.run_id, new_run_id = %id, reason = %req.reason, "workflow reset");
        Ok(pb::ResetWorkflowResponse {
            run_id: id.to_text(),
        })
    }

    /// Runs now the activities of a run that wait for their next attempt.
    pub async fn retry_activity(
        &self,
        req: pb::RetryActivityRequest,
    ) -> Result<pb::RetryActivityResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        let activity_ids = self
            .update(run.run_id, |run, now, pollers| {
                let d = Dispatch::pollers(pollers, now);
                let (decided, ids) = history::retry_activities_now(
                    run,
                    &req.activity_id,
                    req.reset_attempts,
                    now,
                    d,
                )?;
                Ok((Some(decided), ids))
            })
            .await?;
        tracing::info!(run_id = %run.run_id, ?activity_ids, "activities retried now by an operator");
        Ok(pb::RetryActivityResponse { activity_ids })
    }
}

/// The longest reason an operator may give for a pause (kept in the run's checkpoint).
const MAX_REASON_BYTES: usize = 1_000;

/// An operator's reason, checked: at most `MAX_REASON_BYTES`, and given when `required`.
fn operator_reason(raw: &str, required: bool) -> Result<&str, EngineError> {
    if required && raw.trim().is_empty() {
        return Err(EngineError::invalid("reason", "must say why"));
    }
    if raw.len() > MAX_REASON_BYTES {
        return Err(EngineError::invalid(
            "reason",
            format!("is {} bytes, at most {MAX_REASON_BYTES}", raw.len()),
        ));
    }
    Ok(raw)
}
