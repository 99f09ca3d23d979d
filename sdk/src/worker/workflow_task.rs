//! Running one workflow task: its job in the task set (in a span under the run's trace),
//! finding the run in the cache or replaying it from history, running its activation and
//! reporting the commands (or failing the task), and keeping or dropping the cached copy by
//! what the engine answered.

use super::{Worker, retry_unavailable};
use crate::workflow::run_driver;
use martix_proto::v1 as pb;
use std::sync::Arc;
use tracing::Instrument;

impl Worker {
    /// A workflow task as a job of the task set, in its span (a child of the run's trace).
    pub(super) fn workflow_job(
        self: &Arc<Self>,
        t: pb::PollWorkflowTaskResponse,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let me = self.clone();
        let exec = t.workflow_execution.clone().unwrap_or_default();
        // A root in this process (a task handed over with another must not keep that one's
        // span open); its trace parent is the run's.
        let span = tracing::info_span!(
            parent: None,
            "workflow_task",
            otel.kind = "consumer",
            workflow_id = %exec.workflow_id,
            run_id = %exec.run_id,
            workflow_type = %t.workflow_type,
            attempt = t.attempt,
        );
        martix_proto::trace::set_parent(&span, &t.traceparent);
        async move {
            if t.query.is_some() {
                me.run_query_task(t).await;
            } else {
                me.run_workflow_task(t).await;
            }
        }
        .instrument(span)
    }

    async fn run_workflow_task(self: Arc<Self>, mut task: pb::PollWorkflowTaskResponse) {
        use std::sync::atomic::Ordering::Relaxed;
        let exec = task.workflow_execution.clone().unwrap_or_default();
        let run_id = exec.run_id.clone();
        self.stats
            .events_received
            .fetch_add(task.history.len() as u64, Relaxed);
        let Some(workflow) = self.workflows.get(&task.workflow_type).cloned() else {
            self.fail_workflow_task(
                &task,
                pb::WorkflowTaskFailedCause::UnknownWorkflowType,
                format!(
                    "workflow type '{}' is not registered on this worker",
                    task.workflow_type
                ),
            )
            .await;
            return;
        };
        // The first event delivered; a sticky task may deliver none (its worker was given them
        // with the completion that scheduled it).
        let first = task.history.first().map(|e| e.event_id);
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&run_id);
        // The cached run is usable if it is still the cached one once locked (a refused
        // completion, made under this lock, evicts it: its state went beyond what history
        // recorded) and nothing is missing between it and this task's events.
        let mut usable = None;
        if let Some(d) = cached {
            let guard = d.clone().lock_owned().await;
            let current = self
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&run_id)
                .is_some_and(|c| Arc::ptr_eq(&c, &d));
            if current && first.is_none_or(|f| guard.processed + 1 >= f) {
                usable = Some(guard);
            }
        }
        let mut d = match usable {
            Some(guard) => {
                self.stats.cache_hits.fetch_add(1, Relaxed);
                guard
            }
            None => {
                self.stats.cache_misses.fetch_add(1, Relaxed);
                if first != Some(1) {
                    // A sticky task for a run this worker no longer holds: read it all.
                    match crate::client::read_history(
                        &self.history,
                        &task.namespace,
                        task.workflow_execution.clone(),
                    )
                    .await
                    {
                        Ok(events) => task.history = events,
                        Err(status) => {
                            tracing::warn!(run_id = %run_id, error = %status, "cannot read history; the task will time out and be retried");
                            return;
                        }
                    }
                }
                // The history starts with the run's start event here; should it not, the
                // task's type and this worker's queue stand in for it.
                let fallback;
                let started = match crate::history::started(&task.history) {
                    Some(s) => s,
                    None => {
                        fallback = pb::WorkflowExecutionStartedAttributes {
                            workflow_type: task.workflow_type.clone(),
                            task_queue: self.options.task_queue.clone(),
                            ..Default::default()
                        };
                        &fallback
                    }
                };
                let driver = run_driver(
                    workflow,
                    task.namespace.clone(),
                    exec.workflow_id.clone(),
                    run_id.clone(),
                    started,
                );
                let d = Arc::new(tokio::sync::Mutex::new(driver));
                let guard = d.clone().lock_owned().await;
                self.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(&run_id, d);
                guard
            }
        };
        // The run stays locked until the engine has answered: another task of this run
        // waits, and finds the run evicted if this completion is refused.
        let outcome = d
            .apply_history(&task.history)
            .and_then(|()| d.activate_live());
        let finished = d.finished;
        let keep = match outcome {
            Ok(commands) => {
                let mut permits = self.eager_activity_permits(&commands);
                let sticky_queue = if finished {
                    String::new()
                } else {
                    self.sticky_queue.clone()
                };
                let request = pb::RespondWorkflowTaskCompletedRequest {
                    task_token: task.task_token.clone(),
                    commands,
                    identity: self.options.identity.clone(),
                    return_history: !sticky_queue.is_empty(),
                    sticky_queue,
                    eager_activity_queue: if permits.is_empty() {
                        String::new()
                    } else {
                        self.options.task_queue.clone()
                    },
                    eager_activity_slots: permits.len() as i32,
                };
                let r = retry_unavailable(|| {
                    let mut client = self.client.clone();
                    let request = request.clone();
                    async move { client.respond_workflow_task_completed(request).await }
                })
                .await;
                match r {
                    Err(status) => {
                        tracing::info!(run_id = %run_id, error = %status, "workflow task completion refused; replaying next time");
                        false
                    }
                    Ok(resp) => {
                        let resp = resp.into_inner();
                        self.spawn_eager_activities(resp.activity_tasks, &mut permits);
                        // The copy takes what the engine recorded, so it can decide ahead.
                        !finished && self.catch_up(&mut d, &run_id, &resp.history)
                    }
                }
            }
            Err(e) => {
                let cause = match e {
                    crate::workflow::ActivationError::Nondeterminism(_) => {
                        pb::WorkflowTaskFailedCause::NonDeterminism
                    }
                    _ => pb::WorkflowTaskFailedCause::WorkflowWorkerError,
                };
                tracing::error!(run_id = %run_id, error = %e, "workflow task failed");
                self.fail_workflow_task(&task, cause, e.to_string()).await;
                false
            }
        };
        if !keep {
            self.evict(&run_id);
        }
        drop(d);
    }

    async fn fail_workflow_task(
        &self,
        task: &pb::PollWorkflowTaskResponse,
        cause: pb::WorkflowTaskFailedCause,
        message: String,
    ) {
        let r = self
            .client
            .clone()
            .respond_workflow_task_failed(pb::RespondWorkflowTaskFailedRequest {
                task_token: task.task_token.clone(),
                cause: cause as i32,
                failure: Some(pb::Failure {
                    message,
                    r#type: cause.as_str_name().into(),
                    ..Default::default()
                }),
                identity: self.options.identity.clone(),
            })
            .await;
        if let Err(status) = r {
            tracing::warn!(error = %status, "could not report a failed workflow task");
        }
    }
}
