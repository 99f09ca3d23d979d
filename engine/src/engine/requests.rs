//! The checks an operation makes of its request before it decides anything: identities,
//! request ids, payload sizes, sticky queues, and the run an execution names. A malformed or
//! oversized request is refused here, with the field it is wrong in, so that `history`'s
//! decisions see only well-formed input. Namespaces are checked by `namespaces`; task tokens by
//! `worker`, which reads them.

use super::Engine;
use crate::error::EngineError;
use crate::history::Run;
use crate::ids::{Namespace, RunId, TaskQueue, WorkflowId};
use martix_proto::v1 as pb;

pub(super) fn payload_len(p: Option<&pb::Payload>) -> usize {
    p.map_or(0, |p| p.data.len())
}

pub(super) fn failure_len(f: Option<&pb::Failure>) -> usize {
    f.map_or(0, |f| {
        f.message.len() + payload_len(f.details.as_ref()) + failure_len(f.cause.as_deref())
    })
}

pub(super) fn identity(raw: &str) -> Result<&str, EngineError> {
    if raw.len() > 255 {
        return Err(EngineError::invalid(
            "identity",
            format!("is {} bytes, at most 255", raw.len()),
        ));
    }
    Ok(raw)
}

/// An optional request id: empty for none, else 1 to 255 bytes.
pub(super) fn request_id(id: &str) -> Result<Option<String>, EngineError> {
    match id.len() {
        0 => Ok(None),
        1..=255 => Ok(Some(id.to_owned())),
        n => Err(EngineError::invalid(
            "request_id",
            format!("is {n} bytes, at most 255"),
        )),
    }
}

/// Validates a worker's sticky queue, given in request field `field`.
pub(super) fn sticky_queue_field(field: &'static str, raw: &str) -> Result<(), EngineError> {
    TaskQueue::parse(raw)
        .map(|_| ())
        .map_err(|_| EngineError::invalid(field, "must be 1 to 255 bytes, no control characters"))
}

impl Engine {
    pub(super) fn check_payload(
        &self,
        field: &'static str,
        size: usize,
    ) -> Result<(), EngineError> {
        if size > self.config.max_payload_bytes {
            return Err(EngineError::TooLarge {
                field,
                size,
                limit: self.config.max_payload_bytes,
            });
        }
        Ok(())
    }

    /// The run an execution names: the given run id, or the newest run of the workflow id.
    pub(super) async fn resolve(
        &self,
        ns: &Namespace,
        execution: Option<&pb::WorkflowExecution>,
    ) -> Result<Run, EngineError> {
        let execution =
            execution.ok_or_else(|| EngineError::invalid("execution", "must be given"))?;
        let wid = WorkflowId::parse(&execution.workflow_id)?;
        let run = if execution.run_id.is_empty() {
            self.store.latest_run(ns.as_str(), wid.as_str()).await?
        } else {
            let run_id = RunId::parse("execution.run_id", &execution.run_id)?;
            self.store
                .load_run(run_id)
                .await?
                .filter(|r| r.namespace == ns.as_str() && r.workflow_id == wid.as_str())
        };
        run.ok_or_else(|| {
            EngineError::NotFound(format!(
                "workflow '{}' has no run{} in namespace '{ns}'",
                wid,
                if execution.run_id.is_empty() {
                    String::new()
                } else {
                    format!(" '{}'", execution.run_id)
                }
            ))
        })
    }
}
