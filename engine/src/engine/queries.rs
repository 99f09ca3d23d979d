//! Queries: a question a run's own code answers without changing the run. The engine writes
//! nothing: it hands the question, naming the run, to a worker of the run's task queue as a
//! poll's answer (`matching`, in this node's memory only), and waits for that worker's answer
//! until the query's deadline. The worker reads the run's history, replays it (issuing no
//! command) and calls the workflow's handler on the state after its last completed workflow
//! task, so an open run and a closed one are asked the same way.
//!
//! Bounds: at most [`MAX_PENDING_QUERIES`] queries wait on a node (more are refused with
//! RESOURCE_EXHAUSTED), each waits at most `EngineConfig::query_timeout` (less under the
//! request deadline), a query's arguments are at most [`MAX_QUERY_ARGS_BYTES`], and a query
//! kept for a poll holds only its arguments (the worker reads the history), taken back from
//! matching as soon as its caller stops waiting.

use super::Engine;
use super::requests::{identity, payload_len};
use crate::error::EngineError;
use crate::history::{Lease, Run, TOKEN_KIND_QUERY, TaskToken};
use crate::ids::{Namespace, QueryName};
use crate::matching::{QueueKey, TaskKind};
use martix_proto::v1 as pb;
use prost::Message;
use std::time::Duration;
use tokio::sync::oneshot;

/// Queries waiting for answers on one node.
pub const MAX_PENDING_QUERIES: usize = 1_000;
/// The largest arguments a query may carry.
pub const MAX_QUERY_ARGS_BYTES: usize = 64 * 1024;

/// A worker's answer to a query: the handler's result, or why there is none.
pub(super) type QueryAnswer = Result<Option<pb::Payload>, pb::Failure>;

/// A query waiting for its answer: where to send it, and the run it asks (an answer must come
/// with a token naming the same).
pub(super) struct PendingQuery {
    tx: oneshot::Sender<QueryAnswer>,
    namespace: String,
    run_id: String,
}

/// The queries of this node waiting for answers, by id (the query token's lease id).
pub(super) type PendingQueries = std::sync::Mutex<std::collections::HashMap<String, PendingQuery>>;

/// Removes a query from the pending ones, and from matching if no poll took it yet, when its
/// caller stops waiting, answered or not.
struct Pending<'a> {
    engine: &'a Engine,
    id: String,
    key: QueueKey,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.engine
            .queries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.engine.matching.withdraw_query(&self.key, &self.id);
    }
}

impl Engine {
    /// Asks a run's query handler, through a worker of its task queue.
    pub async fn query_workflow(
        &self,
        req: pb::QueryWorkflowRequest,
    ) -> Result<pb::QueryWorkflowResponse, EngineError> {
        let ns = self.namespace(&req.namespace).await?;
        let name = QueryName::parse(&req.query_type)?;
        let args_len = payload_len(req.query_args.as_ref());
        if args_len > MAX_QUERY_ARGS_BYTES {
            return Err(EngineError::TooLarge {
                field: "query_args",
                size: args_len,
                limit: MAX_QUERY_ARGS_BYTES,
            });
        }
        let run = self.resolve(&ns, req.execution.as_ref()).await?;
        // A first workflow task completes at event 4 at the earliest (start, scheduled,
        // started, completed): a shorter history has run no code, so no handler answers. Said
        // here without a worker; past that, the worker that replays the run says it.
        if run.next_event_id <= 4 {
            return Err(EngineError::FailedPrecondition(if run.is_open() {
                format!(
                    "run {} of workflow '{}' has not completed a workflow task yet, so its \
                     code registered no query handler; ask again once it has",
                    run.run_id, run.workflow_id
                )
            } else {
                format!(
                    "run {} of workflow '{}' closed before completing a workflow task: its \
                     code never ran, so it registered no query handler",
                    run.run_id, run.workflow_id
                )
            }));
        }
        let asked = pb::WorkflowQuery {
            query_type: name.to_string(),
            query_args: req.query_args,
            ..Default::default()
        };
        match self
            .ask_worker(&ns, &run, asked, &format!("query '{name}'"))
            .await?
        {
            Ok(result) => Ok(pb::QueryWorkflowResponse {
                result,
                execution: Some(pb::WorkflowExecution {
                    workflow_id: run.workflow_id.to_string(),
                    run_id: run.run_id.to_text(),
                }),
            }),
            Err(failure) => Err(match failure.r#type.as_str() {
                "UnknownQuery" => EngineError::invalid("query_type", failure.message),
                "InvalidQueryArgs" => EngineError::invalid("query_args", failure.message),
                "NotStarted" => EngineError::FailedPrecondition(failure.message),
                _ => EngineError::FailedPrecondition(format!(
                    "query '{name}' failed: {}",
                    failure.message
                )),
            }),
        }
    }

    /// Hands `asked` (a query, or an update for its validator) about `run` to a worker of the
    /// run's task queue polling this node, and waits for its answer until the query timeout:
    /// `what` names it in the error then.
    pub(super) async fn ask_worker(
        &self,
        ns: &Namespace,
        run: &Run,
        asked: pb::WorkflowQuery,
        what: &str,
    ) -> Result<QueryAnswer, EngineError> {
        let id = Lease::new(0, 0).id;
        let key = QueueKey::new(ns.as_str(), run.task_queue.as_str(), TaskKind::Workflow);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.queries.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= MAX_PENDING_QUERIES {
                return Err(EngineError::Overloaded {
                    what: format!("{MAX_PENDING_QUERIES} queries wait for answers on this node"),
                    retry_after: Duration::from_secs(1),
                });
            }
            pending.insert(
                id.clone(),
                PendingQuery {
                    tx,
                    namespace: ns.to_string(),
                    run_id: run.run_id.to_text(),
                },
            );
        }
        let _pending = Pending {
            engine: self,
            id: id.clone(),
            key: key.clone(),
        };
        let token = TaskToken {
            namespace: ns.to_string(),
            run_id: run.run_id.to_text(),
            kind: TOKEN_KIND_QUERY,
            lease_id: id.clone(),
            ..Default::default()
        };
        let task = pb::PollWorkflowTaskResponse {
            task_token: token.encode_to_vec(),
            workflow_execution: Some(pb::WorkflowExecution {
                workflow_id: run.workflow_id.to_string(),
                run_id: run.run_id.to_text(),
            }),
            workflow_type: run.workflow_type.to_string(),
            history: Vec::new(),
            attempt: 1,
            scheduled_time: Some(crate::clock::to_timestamp(self.now())),
            namespace: ns.to_string(),
            traceparent: run.state.traceparent.clone(),
            query: Some(asked),
        };
        let timeout = self.config.query_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        self.matching
            .offer_query(&key, deadline, id, Box::new(task));
        let answer = tokio::select! {
            a = tokio::time::timeout_at(deadline, rx) => a,
            () = self.stopping.cancelled() => {
                return Err(EngineError::Unavailable("the node is shutting down".into()));
            }
        };
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) | Err(_) => Err(EngineError::DeadlineExceeded(format!(
                "no worker polling task queue '{}' on this node answered {what} within \
                 {}s; is a worker of the queue running?",
                run.task_queue,
                timeout.as_secs_f64()
            ))),
        }
    }

    /// A worker's answer to a query it was handed.
    pub async fn respond_query_task(
        &self,
        req: pb::RespondQueryTaskCompletedRequest,
    ) -> Result<pb::RespondQueryTaskCompletedResponse, EngineError> {
        let (token, _) = self.decode_token(&req.task_token, TOKEN_KIND_QUERY)?;
        identity(&req.identity)?;
        self.check_payload("result", payload_len(req.result.as_ref()))?;
        let answer = match req.failure {
            Some(mut f) => {
                // The caller reads the message; a worker's long one is cut.
                f.message = super::worker::clip(&f.message, 4096).into_owned();
                Err(f)
            }
            None => Ok(req.result),
        };
        let waiting = {
            let mut pending = self.queries.lock().unwrap_or_else(|p| p.into_inner());
            // The token must name the run the query asks, in the namespace it was admitted
            // for: a worker of another namespace cannot answer it.
            let ours = pending
                .get(&token.lease_id)
                .is_some_and(|q| q.namespace == token.namespace && q.run_id == token.run_id);
            if ours {
                pending.remove(&token.lease_id)
            } else {
                None
            }
        };
        match waiting.map(|q| q.tx.send(answer).is_ok()) {
            Some(true) => Ok(pb::RespondQueryTaskCompletedResponse {}),
            _ => Err(EngineError::NotFound(
                "the query is no longer awaited (its deadline passed)".into(),
            )),
        }
    }

    /// Whether a query's caller still waits for its answer.
    pub(super) fn query_awaited(&self, id: &str) -> bool {
        self.queries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }
}
