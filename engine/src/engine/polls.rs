//! Handing tasks to workers. A long poll takes a task held for it on this node (`matching`),
//! else claims one from the store, else waits until a commit on this node delivers one, a notice
//! of another node's task wakes it, or the recheck interval passes and it looks again. A claimed
//! workflow task is answered with the history its worker has not seen, from the run cache when
//! this node wrote it. Also here: what steers waiting polls from outside (other nodes' task
//! notices, shutdown) and giving back the tasks held for polls that never came. Tasks are leased
//! by the store's claim or at commit (`commit`); what a worker then reports is `worker`'s.

use super::Engine;
use super::requests::identity;
use crate::clock::{Millis, to_timestamp};
use crate::error::EngineError;
use crate::history::{self, ActivityTask, Decided, Lease, Run, TOKEN_KIND_ACTIVITY, TaskToken};
use crate::ids::TaskQueue;
use crate::matching::{Delivery, QueueKey, TaskKind};
use crate::store::StoreError;
use martix_proto::v1 as pb;
use prost::Message;
use std::time::Duration;
use tokio::time::Instant;

impl Engine {
    /// Waits for a workflow task of a queue, up to the long-poll timeout.
    ///
    /// # Cancel safety
    /// A task leased to a poll that is dropped is handed to the next poller on this node, or
    /// handed out again by the store when its lease runs out.
    pub async fn poll_workflow_task(
        &self,
        req: pb::PollWorkflowTaskRequest,
    ) -> Result<pb::PollWorkflowTaskResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let queue = TaskQueue::parse(&req.task_queue)?;
        let ident = identity(&req.identity)?;
        self.note_poller(&ns, &queue, "workflow", ident);
        let key = QueueKey::new(ns.as_str(), queue.as_str(), TaskKind::Workflow);
        let deadline = Instant::now() + self.config.long_poll_timeout;
        loop {
            let epoch = self.matching.epoch(&key);
            let now = self.now();
            // A task held for this node's next poll: taken without the store.
            let delivery = match self.matching.take_ready(&key, now) {
                Some(d) => Some(d),
                None => {
                    let seeking = self.matching.seek(&key);
                    let lease_id = Lease::new(0, 0).id;
                    let claimed = self
                        .claim_workflow(&key, ns.as_str(), queue.as_str(), &lease_id, now)
                        .await?;
                    if let Some(run) = claimed {
                        drop(seeking);
                        self.remember_claimed(&run);
                        if let Some(resp) = self.workflow_task_response(run, &lease_id).await? {
                            return Ok(resp);
                        }
                        continue;
                    }
                    drop(seeking);
                    self.wait_delivery(&key, epoch, deadline).await
                }
            };
            match delivery {
                Some(Delivery::Workflow { run_id, lease }) => {
                    // Just written with this lease by this node: no need to read it back (and if
                    // the copy says otherwise, the store decides).
                    if let Some(run) = self.cached(run_id)
                        && let Some(resp) = self.workflow_task_response(run, &lease.id).await?
                    {
                        return Ok(resp);
                    }
                    let run = self.load(run_id).await?;
                    if let Some(resp) = self.workflow_task_response(run, &lease.id).await? {
                        return Ok(resp);
                    }
                }
                // A query whose caller stopped waiting is skipped.
                Some(Delivery::Query { id, task }) => {
                    if self.query_awaited(&id) {
                        return Ok(*task);
                    }
                }
                Some(Delivery::Activity(_)) => {
                    return Err(EngineError::Internal(
                        "activity task delivered to a workflow poller".into(),
                    ));
                }
                Some(Delivery::Recheck) | None => {
                    if Instant::now() >= deadline || self.stopping.is_cancelled() {
                        return Ok(Default::default());
                    }
                }
            }
        }
    }

    /// Waits for an activity task of a queue, up to the long-poll timeout.
    ///
    /// # Cancel safety
    /// As `poll_workflow_task`.
    pub async fn poll_activity_task(
        &self,
        req: pb::PollActivityTaskRequest,
    ) -> Result<pb::PollActivityTaskResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let queue = TaskQueue::parse(&req.task_queue)?;
        let ident = identity(&req.identity)?;
        self.note_poller(&ns, &queue, "activity", ident);
        let key = QueueKey::new(ns.as_str(), queue.as_str(), TaskKind::Activity);
        let deadline = Instant::now() + self.config.long_poll_timeout;
        loop {
            let epoch = self.matching.epoch(&key);
            let delivery = match self.matching.take_ready(&key, self.now()) {
                Some(d) => Some(d),
                None => {
                    let lease_id = Lease::new(0, 0).id;
                    let now = self.now();
                    let claim =
                        self.store
                            .claim_activity_task(ns.as_str(), queue.as_str(), &lease_id, now);
                    if let Some(task) = self.claim_unless_empty(&key, now, claim).await? {
                        return self.activity_task_response(task);
                    }
                    self.wait_delivery(&key, epoch, deadline).await
                }
            };
            match delivery {
                Some(Delivery::Activity(task)) => return self.activity_task_response(*task),
                Some(Delivery::Workflow { .. } | Delivery::Query { .. }) => {
                    return Err(EngineError::Internal(
                        "workflow task delivered to an activity poller".into(),
                    ));
                }
                Some(Delivery::Recheck) | None => {
                    if Instant::now() >= deadline || self.stopping.is_cancelled() {
                        return Ok(Default::default());
                    }
                }
            }
        }
    }

    /// Waits for a delivery on `key`, unless the node is stopping.
    async fn wait_delivery(
        &self,
        key: &QueueKey,
        epoch: u64,
        deadline: Instant,
    ) -> Option<Delivery> {
        match self.matching.register(key, epoch, self.now()) {
            Err(d) => Some(d),
            Ok(wait) => {
                let now = Instant::now();
                if now >= deadline || self.stopping.is_cancelled() {
                    return None;
                }
                let step = deadline.min(now + self.config.recheck_interval);
                tokio::select! {
                    d = self.matching.wait(wait, step) => d,
                    () = self.stopping.cancelled() => None,
                }
            }
        }
    }

    /// Runs `claim` (a look in the store for a task of `key`) unless the store is known to
    /// hold none (see `Matching::known_empty`); remembers a look that found none. Under load
    /// most polls arrive with nothing claimable, and each look is a statement.
    async fn claim_unless_empty<T>(
        &self,
        key: &QueueKey,
        now: Millis,
        claim: impl std::future::Future<Output = Result<Option<T>, StoreError>>,
    ) -> Result<Option<T>, StoreError> {
        let within = self.config.recheck_interval.as_millis() as Millis;
        if self.matching.known_empty(key, now, within) {
            return Ok(None);
        }
        let epoch = self.matching.epoch(key);
        let claimed = claim.await?;
        if claimed.is_none() {
            self.matching.found_empty(key, epoch, now);
        }
        Ok(claimed)
    }

    /// Claims a workflow task of the queue from the store, then (once a second) one whose
    /// sticky worker did not take it in time.
    async fn claim_workflow(
        &self,
        key: &QueueKey,
        ns: &str,
        queue: &str,
        lease_id: &str,
        now: Millis,
    ) -> Result<Option<Run>, EngineError> {
        let claim = self.store.claim_workflow_task(ns, queue, lease_id, now);
        let claimed = self.claim_unless_empty(key, now, claim).await?;
        if claimed.is_some() || !self.sticky_check_due(key) {
            return Ok(claimed);
        }
        let stale_before = now - self.config.sticky_schedule_to_start_timeout.as_millis() as i64;
        let claimed = self
            .store
            .claim_expired_sticky(ns, queue, lease_id, now, stale_before)
            .await?;
        if claimed.is_some() {
            // There may be more (a worker went away with many runs): look again at once.
            self.sticky_checked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
        }
        Ok(claimed)
    }

    /// Whether a poller of `key` should look for runs whose sticky task went unclaimed: at
    /// most once per recheck interval per queue on this node after a look that found none
    /// (the sticky timeout is seconds, and each look is a read of the store).
    fn sticky_check_due(&self, key: &QueueKey) -> bool {
        let mut last = self
            .sticky_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match last.get(key) {
            Some(at) if now.duration_since(*at) < self.config.recheck_interval => false,
            _ => {
                if last.len() > 10_000 {
                    last.clear();
                }
                last.insert(key.clone(), now);
                true
            }
        }
    }

    /// Builds the poll answer for a workflow task leased to `lease_id`; `None` if the run no
    /// longer holds that lease.
    pub(super) async fn workflow_task_response(
        &self,
        mut run: Run,
        lease_id: &str,
    ) -> Result<Option<pb::PollWorkflowTaskResponse>, EngineError> {
        if !run.state.buffered.is_empty() {
            // A previous holder's lease ran out while events waited: deliver them now.
            run = self
                .update(run.run_id, |r, now, _| {
                    let holds = r
                        .wft
                        .as_ref()
                        .and_then(|w| w.lease.as_ref())
                        .is_some_and(|l| l.id == lease_id);
                    if !holds {
                        return Ok((None, None));
                    }
                    // The task is held: the change hands nothing to anyone.
                    let commit = history::flush_for_claim(r, now);
                    let mut after = commit.as_ref().map_or_else(|| r.clone(), |c| c.run.clone());
                    after.version += 1;
                    Ok((commit.map(Decided::from), Some(after)))
                })
                .await?
                .unwrap_or(run);
        }
        let Some(wft) = run
            .wft
            .as_ref()
            .filter(|w| w.lease.as_ref().is_some_and(|l| l.id == lease_id) && run.is_open())
        else {
            return Ok(None);
        };
        // On a sticky queue the worker has the run cached: send only what it has not seen.
        let from = if wft.queue != run.task_queue && run.state.sticky_from > 0 {
            run.state.sticky_from
        } else {
            1
        };
        // What this node wrote itself needs no read back.
        let history = match self.cached_events(run.run_id, from, run.next_event_id) {
            Some(events) => events,
            None if from >= run.next_event_id => Vec::new(),
            None => {
                self.store
                    .history(run.run_id, from, (run.next_event_id - from).max(0) as usize)
                    .await?
            }
        };
        let token = TaskToken::for_workflow_task(&run, wft, lease_id);
        self.metrics.schedule_to_start(
            "workflow",
            Duration::from_millis((self.now() - wft.visible_at).max(0) as u64),
        );
        Ok(Some(pb::PollWorkflowTaskResponse {
            task_token: token.encode_to_vec(),
            workflow_execution: Some(pb::WorkflowExecution {
                workflow_id: run.workflow_id.to_string(),
                run_id: run.run_id.to_text(),
            }),
            workflow_type: run.workflow_type.to_string(),
            history,
            attempt: wft.attempt,
            scheduled_time: Some(to_timestamp(wft.visible_at)),
            namespace: run.namespace.to_string(),
            traceparent: run.state.traceparent.clone(),
            query: None,
        }))
    }

    /// The answer to an activity poll for `task` (leased to the poller), counting how long it
    /// waited: the activity as scheduled, with this attempt's token, number and the details of
    /// the last attempt's heartbeat.
    pub(super) fn activity_task_response(
        &self,
        task: ActivityTask,
    ) -> Result<pb::PollActivityTaskResponse, EngineError> {
        let ActivityTask {
            namespace,
            run_id,
            scheduled_event_id,
            attempt,
            visible_at,
            lease,
            activity,
            heartbeat_details,
            ..
        } = task;
        let lease = lease.ok_or_else(|| {
            EngineError::Internal("activity task handed out without a lease".into())
        })?;
        self.metrics.schedule_to_start(
            "activity",
            Duration::from_millis((self.now() - visible_at).max(0) as u64),
        );
        let task_token = TaskToken {
            namespace: namespace.into(),
            run_id: run_id.to_text(),
            kind: TOKEN_KIND_ACTIVITY,
            scheduled_event_id,
            attempt,
            lease_id: lease.id,
            history_len: 0,
        }
        .encode_to_vec();
        Ok(pb::PollActivityTaskResponse {
            task_token,
            workflow_execution: activity.workflow_execution,
            workflow_type: activity.workflow_type,
            activity_id: activity.activity_id,
            activity_type: activity.activity_type,
            input: activity.input,
            attempt,
            scheduled_time: activity.scheduled_time,
            start_to_close_timeout: activity.start_to_close_timeout,
            heartbeat_timeout: activity.heartbeat_timeout,
            heartbeat_details: heartbeat_details.and_then(|d| pb::Payload::decode(&d[..]).ok()),
            namespace: activity.namespace,
            traceparent: activity.traceparent,
            scheduled_event_id,
            idempotency_run_id: activity.idempotency_run_id,
        })
    }

    /// Another node committed a task nobody there took: wake a poller of its queue here.
    pub fn task_committed_elsewhere(&self, notice: &crate::store::TaskNotice) {
        let kind = if notice.workflow {
            TaskKind::Workflow
        } else {
            TaskKind::Activity
        };
        self.matching
            .notify(&QueueKey::new(&notice.namespace, &notice.queue, kind));
    }

    /// Notices of other nodes' tasks were lost (this node fell behind reading them): every
    /// queue's next poll looks in the store instead of trusting what it knew.
    pub fn notices_lost(&self) {
        self.matching.notify_all();
    }

    /// Ends waiting long polls (with an empty answer) and refuses new waits: the node is
    /// shutting down. Their tasks stay in the store for other nodes or the next start.
    pub fn stop_polls(&self) {
        self.stopping.cancel();
    }

    /// Gives back to the store the workflow tasks held for polls of this node that did not
    /// come for them within the recheck interval (see `matching`), so that any poller of any
    /// node can claim them. Returns how many were given back (one that cannot be is left
    /// leased, and claimable when its lease runs out).
    /// Forgets the matching entries of queues idle since the last call (see
    /// `Matching::sweep_idle`); the timer loop calls it every half minute.
    pub fn sweep_idle_queues(&self) -> usize {
        self.sticky_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, at| at.elapsed() < Duration::from_secs(60));
        self.matching.sweep_idle()
    }

    /// Queues this node keeps a matching entry for.
    pub fn matching_queues(&self) -> usize {
        self.matching.queues()
    }

    pub async fn release_stale_holds(&self) -> usize {
        let before = self.now() - self.config.recheck_interval.as_millis() as Millis;
        let stale = self.matching.take_stale(before);
        let mut released = 0;
        for (key, delivery) in stale {
            let Delivery::Workflow { run_id, lease } = delivery else {
                continue;
            };
            // The copy here says leased: it must not outlive the release.
            self.forget(run_id);
            match self.store.release_workflow_task(run_id, &lease.id).await {
                Ok(true) => {
                    released += 1;
                    self.matching.notify(&key);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%run_id, error = %e, "cannot give a held workflow task back")
                }
            }
        }
        if released > 0 {
            tracing::info!(
                released,
                "held workflow tasks nobody took given back to the store"
            );
        }
        released
    }
}
