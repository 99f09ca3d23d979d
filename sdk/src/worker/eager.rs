//! Work handed over with a report instead of polled, and deciding ahead: the activities a
//! workflow task's completion hands back and the workflow task an activity's result hands
//! back, each run on a slot taken before the report; and the worker's side of reporting an
//! activity's result with the workflow's next decision, made on the cached run, and of
//! keeping or dropping that run by whether the engine recorded the decision.

use super::{Worker, spawn_holding};
use crate::workflow::RunDriver;
use martix_proto::decide_ahead::ResultEvents;
use martix_proto::v1 as pb;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Where work handed over eagerly runs (activities with a workflow task's completion, a
/// workflow task with an activity's result), and whether any may be taken still.
pub(super) struct Eager {
    slots: Arc<Semaphore>,
    workflow_slots: Arc<Semaphore>,
    tasks: Arc<Mutex<JoinSet<()>>>,
    work: CancellationToken,
    /// Once shutdown begins, no more work is taken eagerly.
    shutdown: CancellationToken,
}

impl Eager {
    /// Eager work on the worker's activity and workflow slots, run among its `tasks`;
    /// activities are cancelled through children of `work`.
    pub(super) fn new(
        slots: Arc<Semaphore>,
        workflow_slots: Arc<Semaphore>,
        tasks: Arc<Mutex<JoinSet<()>>>,
        work: CancellationToken,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            slots,
            workflow_slots,
            tasks,
            work,
            shutdown,
        }
    }

    /// Runs `job`, work handed over eagerly, holding `permit` (its slot) until it ends.
    fn spawn(
        &self,
        job: impl std::future::Future<Output = ()> + Send + 'static,
        permit: OwnedSemaphorePermit,
    ) {
        spawn_holding(&self.tasks, job, permit);
    }
}

impl Worker {
    /// Free activity slots, taken now, for the activities `commands` schedule on this
    /// worker's queue: they may come back eagerly with the answer.
    pub(super) fn eager_activity_permits(
        &self,
        commands: &[pb::Command],
    ) -> Vec<OwnedSemaphorePermit> {
        let mut permits = Vec::new();
        let Some(e) = self.eager.as_ref().filter(|e| !e.shutdown.is_cancelled()) else {
            return permits;
        };
        let wanted = commands
            .iter()
            .filter(|c| {
                matches!(
                    &c.attributes,
                    Some(pb::command::Attributes::ScheduleActivity(a))
                        if a.task_queue.is_empty() || a.task_queue == self.options.task_queue
                )
            })
            .count()
            .min(self.options.max_eager_activities);
        while permits.len() < wanted {
            match e.slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        permits
    }

    /// Runs activities handed over eagerly, each holding one of `permits`.
    pub(super) fn spawn_eager_activities(
        self: &Arc<Self>,
        tasks: Vec<pb::PollActivityTaskResponse>,
        permits: &mut Vec<OwnedSemaphorePermit>,
    ) {
        let Some(e) = &self.eager else { return };
        for t in tasks {
            let Some(permit) = permits.pop() else { break };
            self.stats
                .eager_activities
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            e.spawn(self.activity_job(t, e.work.child_token()), permit);
        }
    }

    /// Runs the workflow's next decision on the cached run as if a workflow task delivered
    /// this activity's result: the run, locked, and the request's decision. `None` when the run
    /// is not cached, busy, or behind the engine; a run the activation fails on is dropped
    /// (its workflow task then fails it the usual way).
    pub(super) fn decide_ahead(
        &self,
        task: &pb::PollActivityTaskResponse,
        result: &pb::Payload,
    ) -> Option<(
        tokio::sync::OwnedMutexGuard<RunDriver>,
        pb::WorkflowDecision,
    )> {
        if !self.options.decide_ahead
            || self.sticky_queue.is_empty()
            || task.scheduled_event_id < 1
            || self
                .eager
                .as_ref()
                .is_none_or(|e| e.shutdown.is_cancelled())
        {
            return None;
        }
        let run_id = &task.workflow_execution.as_ref()?.run_id;
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)?;
        let mut d = cached.clone().try_lock_owned().ok()?;
        let still_cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .is_some_and(|c| Arc::ptr_eq(&c, &cached));
        // With other activities in flight their results would race this one (and a refused
        // decision costs a replay): then the result goes alone.
        if !still_cached || !d.is_current() || d.activities_in_flight() != 1 {
            return None;
        }
        let history_len = d.processed;
        let at = d.decision_time();
        let time = martix_proto::time::to_timestamp(at);
        let events = ResultEvents::new(history_len, task.scheduled_event_id).events(
            task.attempt,
            &self.options.identity,
            Some(result.clone()),
            &self.sticky_queue,
            time,
        );
        match d.apply_history(&events).and_then(|()| d.activate_live()) {
            Ok(commands) => {
                let decision = pb::WorkflowDecision {
                    history_len,
                    decided_at: Some(time),
                    commands,
                    sticky_queue: self.sticky_queue.clone(),
                    eager_activity_queue: self.options.task_queue.clone(),
                    eager_activity_slots: 0,
                };
                Some((d, decision))
            }
            Err(e) => {
                tracing::info!(run_id = %run_id, error = %e, "cannot decide ahead; the workflow task will");
                self.evict(run_id);
                None
            }
        }
    }

    /// A workflow slot, taken now, for the run's next workflow task to come back with this
    /// activity's result: if the result goes alone and this worker keeps the run cached and
    /// has a slot free. Not with a decision made ahead, which the engine records unless the
    /// run has other new events: the slot would sit unused for the request's whole round trip,
    /// and with one activity in flight per run such slots can take all the workflow slots;
    /// the pollers, which need a slot before they poll, would then stop polling and each new
    /// run's first task wait in the store for a claim of its own. A refused decision's
    /// workflow task goes to the sticky queue.
    pub(super) fn eager_workflow_permit(
        &self,
        info: &pb::PollActivityTaskResponse,
        decision: Option<&pb::WorkflowDecision>,
    ) -> Option<OwnedSemaphorePermit> {
        if let (Some(e), Some(exec), None) = (&self.eager, &info.workflow_execution, decision)
            && !e.shutdown.is_cancelled()
            && !self.sticky_queue.is_empty()
            && self
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&exec.run_id)
        {
            return e.workflow_slots.clone().try_acquire_owned().ok();
        }
        None
    }

    /// Once the engine answered an activity's result reported with a decision made ahead on
    /// the run `d` (locked since): a recorded decision brings the run's copy up to what
    /// history holds; otherwise the copy is dropped. Unlocks the run.
    pub(super) fn settle_decision(
        &self,
        mut d: OwnedMutexGuard<RunDriver>,
        info: &pb::PollActivityTaskResponse,
        answer: Option<&pb::RespondActivityTaskCompletedResponse>,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        let run_id = info
            .workflow_execution
            .as_ref()
            .map(|e| e.run_id.clone())
            .unwrap_or_default();
        let keep = match answer {
            Some(a) if a.decision_recorded => {
                self.stats.decisions_recorded.fetch_add(1, Relaxed);
                self.catch_up(&mut d, &run_id, &a.history)
            }
            _ => {
                self.stats.decisions_refused.fetch_add(1, Relaxed);
                false
            }
        };
        // The copy went past what history recorded: without the record it is dropped.
        if !keep {
            self.evict(&run_id);
        }
        drop(d);
    }

    /// Runs the workflow task handed over with an activity's result, holding `permit`, the
    /// workflow slot taken for it.
    pub(super) fn spawn_eager_workflow_task(
        self: &Arc<Self>,
        task: Option<pb::PollWorkflowTaskResponse>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        if let (Some(task), Some(e), Some(permit)) = (task, &self.eager, permit)
            && !task.task_token.is_empty()
        {
            self.stats
                .eager_workflow_tasks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            e.spawn(self.workflow_job(task), permit);
        }
    }
}
