//! Answering one query: the engine hands it with the run's whole history as a workflow poll's
//! answer. The run is replayed into a fresh copy (the cached one, if any, is neither used nor
//! touched: it may be ahead of what history holds), the handler is called on the state after
//! the last completed workflow task, and the answer goes back; nothing is leased or recorded.

use super::{Worker, retry_unavailable};
use crate::workflow::{QueryFailure, run_driver};
use martix_proto::v1 as pb;
use std::sync::Arc;

impl Worker {
    pub(super) async fn run_query_task(self: Arc<Self>, task: pb::PollWorkflowTaskResponse) {
        let query = task.query.clone().unwrap_or_default();
        let answer = self.answer_query(&task, &query);
        let (result, failure) = match answer {
            Ok(result) => (Some(result), None),
            Err(f) => (
                None,
                Some(pb::Failure {
                    message: f.message,
                    r#type: f.kind.to_owned(),
                    non_retryable: true,
                    ..Default::default()
                }),
            ),
        };
        let request = pb::RespondQueryTaskCompletedRequest {
            task_token: task.task_token,
            result,
            failure,
            identity: self.options.identity.clone(),
        };
        let r = retry_unavailable(|| {
            let mut client = self.client.clone();
            let request = request.clone();
            async move { client.respond_query_task_completed(request).await }
        })
        .await;
        if let Err(status) = r {
            // The caller stopped waiting (its deadline passed): nothing to do.
            tracing::debug!(query = %query.query_type, error = %status, "query answer not taken");
        }
    }

    fn answer_query(
        &self,
        task: &pb::PollWorkflowTaskResponse,
        query: &pb::WorkflowQuery,
    ) -> Result<pb::Payload, QueryFailure> {
        let Some(workflow) = self.workflows.get(&task.workflow_type).cloned() else {
            return Err(QueryFailure::new(
                "QueryFailed",
                format!(
                    "workflow type '{}' is not registered on the worker that took the query",
                    task.workflow_type
                ),
            ));
        };
        let exec = task.workflow_execution.clone().unwrap_or_default();
        let Some(started) = crate::history::started(&task.history) else {
            return Err(QueryFailure::new(
                "QueryFailed",
                "the query came without the run's start event",
            ));
        };
        let mut driver = run_driver(
            workflow,
            task.namespace.clone(),
            exec.workflow_id,
            exec.run_id,
            started,
        );
        driver.apply_history(&task.history).map_err(|e| {
            QueryFailure::new("QueryFailed", format!("replaying the run failed: {e}"))
        })?;
        driver.query(&query.query_type, query.query_args.as_ref())
    }
}
