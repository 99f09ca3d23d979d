//! Answering one query: the engine hands it, naming the run, as a workflow poll's answer. The
//! worker reads the run's history, replays it into a fresh copy (the cached one, if any, is
//! neither used nor touched: it may be ahead of what history holds), checks the replay matched
//! every recorded command, calls the handler on the state after the last completed workflow
//! task, and answers; nothing is leased or recorded. An update's validator is asked the same
//! way, on the history's first events as the engine names them.

use super::{Worker, retry_unavailable};
use crate::workflow::{QueryFailure, run_driver};
use martix_proto::v1 as pb;
use pb::history_event::Attributes as A;
use std::sync::Arc;

impl Worker {
    pub(super) async fn run_query_task(self: Arc<Self>, task: pb::PollWorkflowTaskResponse) {
        let query = task.query.clone().unwrap_or_default();
        let answer = match crate::client::read_history(
            &self.history,
            &task.namespace,
            task.workflow_execution.clone(),
        )
        .await
        {
            Ok(mut history) => {
                // An update's validator looks at the state the engine will record it on.
                if query.history_length > 0 {
                    history.retain(|e| e.event_id <= query.history_length);
                }
                self.answer_query(&task, &history, &query)
            }
            Err(status) => Err(QueryFailure::new(
                "QueryFailed",
                format!("the worker could not read the run's history: {status}"),
            )),
        };
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
        history: &[pb::HistoryEvent],
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
        if !history
            .iter()
            .any(|e| matches!(e.attributes, Some(A::WorkflowTaskCompleted(_))))
        {
            let closed = history.last().is_some_and(|e| {
                matches!(
                    e.attributes,
                    Some(
                        A::WorkflowExecutionTerminated(_)
                            | A::WorkflowExecutionTimedOut(_)
                            | A::WorkflowExecutionFailed(_)
                    )
                )
            });
            return Err(QueryFailure::new(
                "NotStarted",
                if closed {
                    "the run closed before completing a workflow task: its code never ran, so \
                     it registered no query handler"
                } else {
                    "the run has not completed a workflow task yet, so its code registered no \
                     query handler; ask again once it has"
                },
            ));
        }
        let exec = task.workflow_execution.clone().unwrap_or_default();
        let Some(started) = crate::history::started(history) else {
            return Err(QueryFailure::new(
                "QueryFailed",
                "the run's history does not start with its start event",
            ));
        };
        let mut driver = run_driver(
            workflow,
            task.namespace.clone(),
            exec.workflow_id,
            exec.run_id,
            started,
        );
        driver
            .apply_history(history)
            .map_err(|e| e.to_string())
            .and_then(|()| driver.finish_replay().map_err(|e| e.to_string()))
            .map_err(|e| {
                QueryFailure::new("QueryFailed", format!("replaying the run failed: {e}"))
            })?;
        if query.update_id.is_empty() {
            driver.query(&query.query_type, query.query_args.as_ref())
        } else {
            driver.validate_update(&query.query_type, query.query_args.as_ref())?;
            Ok(pb::Payload::default())
        }
    }
}
