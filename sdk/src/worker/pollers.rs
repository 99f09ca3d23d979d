//! The long-poll loops: each poller takes a slot, long-polls one queue for a workflow or an
//! activity task and starts it in the task set holding that slot; it backs off while the
//! engine is unreachable and stops when shutdown begins.

use super::{Worker, spawn_holding};
use martix_proto::v1 as pb;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

impl Worker {
    async fn backoff(shutdown: &CancellationToken, failures: &mut u32) {
        let ms = (100u64 << (*failures).min(6)).min(5_000);
        *failures += 1;
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(ms)) => {}
        }
    }

    /// Polls one queue while a slot is free and hands each task to `run` in the task set;
    /// backs off while the engine is unreachable; stops at `shutdown`. `poll` answers `None`
    /// for an empty long poll.
    async fn poll_loop<T, P, PF, R, RF>(
        shutdown: CancellationToken,
        slots: Arc<Semaphore>,
        tasks: Arc<Mutex<JoinSet<()>>>,
        what: &'static str,
        poll: P,
        run: R,
    ) where
        P: Fn() -> PF,
        PF: std::future::Future<Output = Result<Option<T>, tonic::Status>>,
        R: Fn(T) -> RF,
        RF: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut failures = 0;
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => return,
                p = slots.clone().acquire_owned() => p.expect("semaphore open"),
            };
            let task = tokio::select! {
                () = shutdown.cancelled() => return,
                r = poll() => r,
            };
            match task {
                Ok(None) => failures = 0,
                Ok(Some(t)) => {
                    failures = 0;
                    spawn_holding(&tasks, run(t), permit);
                }
                Err(status) => {
                    tracing::warn!(error = %status, what, "poll failed; retrying");
                    Self::backoff(&shutdown, &mut failures).await;
                }
            }
        }
    }

    pub(super) async fn poll_workflows(
        self: Arc<Self>,
        queue: String,
        shutdown: CancellationToken,
        slots: Arc<Semaphore>,
        tasks: Arc<Mutex<JoinSet<()>>>,
    ) {
        let poll = || {
            let mut client = self.client.clone();
            let request = pb::PollWorkflowTaskRequest {
                namespace: self.options.namespace.clone(),
                task_queue: queue.clone(),
                identity: self.options.identity.clone(),
            };
            async move {
                let t = client.poll_workflow_task(request).await?.into_inner();
                Ok((!t.task_token.is_empty()).then_some(t))
            }
        };
        let run = |t: pb::PollWorkflowTaskResponse| self.workflow_job(t);
        Self::poll_loop(shutdown, slots, tasks, "workflow", poll, run).await;
    }

    pub(super) async fn poll_activities(
        self: Arc<Self>,
        shutdown: CancellationToken,
        work: CancellationToken,
        slots: Arc<Semaphore>,
        tasks: Arc<Mutex<JoinSet<()>>>,
    ) {
        let poll = || {
            let mut client = self.client.clone();
            let request = pb::PollActivityTaskRequest {
                namespace: self.options.namespace.clone(),
                task_queue: self.options.task_queue.clone(),
                identity: self.options.identity.clone(),
            };
            async move {
                let t = client.poll_activity_task(request).await?.into_inner();
                Ok((!t.task_token.is_empty()).then_some(t))
            }
        };
        let run = |t: pb::PollActivityTaskResponse| self.activity_job(t, work.child_token());
        Self::poll_loop(shutdown, slots, tasks, "activity", poll, run).await;
    }
}
