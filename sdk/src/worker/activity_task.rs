//! Running one activity task: its job in the task set (in a span under the run's trace),
//! running the registered function (a panic fails the attempt, not the worker) and reporting
//! the outcome through engine restarts; with a result, the workflow's next decision made
//! ahead and the work handed back eagerly, which `eager.rs` provides.

use super::{Worker, retry_unavailable};
use crate::activity::ActivityContext;
use crate::error::ActivityError;
use martix_proto::v1 as pb;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

impl Worker {
    /// An activity attempt as a job of the task set, in its span (a child of the run's trace).
    pub(super) fn activity_job(
        self: &Arc<Self>,
        t: pb::PollActivityTaskResponse,
        cancel: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let me = self.clone();
        let exec = t.workflow_execution.clone().unwrap_or_default();
        let span = tracing::info_span!(
            parent: None,
            "activity",
            otel.kind = "consumer",
            workflow_id = %exec.workflow_id,
            run_id = %exec.run_id,
            activity_type = %t.activity_type,
            activity_id = %t.activity_id,
            attempt = t.attempt,
        );
        martix_proto::trace::set_parent(&span, &t.traceparent);
        async move { me.run_activity(t, cancel).await }.instrument(span)
    }

    async fn run_activity(
        self: Arc<Self>,
        task: pb::PollActivityTaskResponse,
        cancel: CancellationToken,
    ) {
        let token = task.task_token.clone();
        let info = Arc::new(task);
        let outcome = match self.activities.get(&info.activity_type).cloned() {
            None => Err(ActivityError::retryable(
                "UnknownActivityType",
                format!(
                    "activity type '{}' is not registered on worker {}",
                    info.activity_type, self.options.identity
                ),
            )),
            Some(f) => {
                let input = info.input.clone();
                let ctx = ActivityContext {
                    info: info.clone(),
                    client: self.client.clone(),
                    cancel,
                };
                // A panic in the activity fails the attempt instead of the worker.
                match tokio::spawn(f(ctx, input).in_current_span()).await {
                    Ok(r) => r,
                    Err(e) => Err(ActivityError::retryable("Panic", e.to_string())),
                }
            }
        };
        let identity = self.options.identity.clone();
        // With the result, the workflow's next decision made on the cached run.
        let mut ahead = match &outcome {
            Ok(result) => self.decide_ahead(&info, result),
            Err(_) => None,
        };
        let mut permits = match &mut ahead {
            Some((_, decision)) => {
                let permits = self.eager_activity_permits(&decision.commands);
                decision.eager_activity_slots = permits.len() as i32;
                permits
            }
            None => Vec::new(),
        };
        let decision = ahead.as_ref().map(|(_, d)| d.clone());
        // The run's next workflow task may come back with the result when it goes alone.
        let eager_permit = self.eager_workflow_permit(&info, decision.as_ref());
        let eager_queue = if eager_permit.is_some() {
            self.sticky_queue.clone()
        } else {
            String::new()
        };
        // A finished activity's outcome is worth delivering through an engine restart.
        let client = &self.client;
        let (token, identity, outcome, eager_queue) = (&token, &identity, &outcome, &eager_queue);
        let report = |decision: Option<pb::WorkflowDecision>| {
            retry_unavailable(move || {
                let mut client = client.clone();
                let (token, identity) = (token.clone(), identity.clone());
                let (outcome, eager_queue) = (outcome.clone(), eager_queue.clone());
                let decision = decision.clone();
                async move {
                    match outcome {
                        Ok(result) => client
                            .respond_activity_task_completed(
                                pb::RespondActivityTaskCompletedRequest {
                                    task_token: token,
                                    result: Some(result),
                                    identity,
                                    eager_workflow_queue: eager_queue,
                                    decision,
                                },
                            )
                            .await
                            .map(|r| Some(r.into_inner())),
                        Err(e) => client
                            .respond_activity_task_failed(pb::RespondActivityTaskFailedRequest {
                                task_token: token,
                                failure: Some(e.to_failure()),
                                identity,
                            })
                            .await
                            .map(|_| None),
                    }
                }
            })
        };
        let mut r = report(decision.clone()).await;
        // Whatever the engine held against the decision, the result itself must not be lost.
        if let Err(status) = &r
            && decision.is_some()
            && status.code() != tonic::Code::NotFound
        {
            tracing::warn!(error = %status, "decision made ahead refused with an error; reporting the result alone");
            r = report(None).await;
        }
        let answer = match r {
            Err(status) => {
                tracing::info!(error = %status, "activity outcome not recorded (stale or cancelled)");
                None
            }
            Ok(answer) => answer,
        };
        if let Some((d, _)) = ahead {
            self.settle_decision(d, &info, answer.as_ref());
        }
        let Some(answer) = answer else { return };
        self.spawn_eager_activities(answer.activity_tasks, &mut permits);
        self.spawn_eager_workflow_task(answer.workflow_task, eager_permit);
    }
}
