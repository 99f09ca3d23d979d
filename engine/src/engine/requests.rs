//! Requests parsed once, at the edge: each operation turns its protobuf request into typed
//! values here (ids by `ids`' rules, identities, request ids, payload sizes, sticky queues,
//! the execution a request names, a signal) before it decides anything. A malformed or
//! oversized request is refused with the field it is wrong in, so that `history`'s decisions
//! see only well-formed input. Namespaces are checked by `namespaces`; task tokens by `worker`,
//! which reads them.

use super::Engine;
use crate::error::EngineError;
use crate::history::Run;
use crate::ids::{Namespace, RunId, SignalName, TaskQueue, WorkflowId};
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
pub(super) fn sticky_queue_field(field: &'static str, raw: &str) -> Result<TaskQueue, EngineError> {
    Ok(TaskQueue::parse_field(field, raw)?)
}

/// The run a request names: a workflow id, and one of its runs or (none) its newest.
pub(super) struct Execution {
    pub(super) workflow_id: WorkflowId,
    pub(super) run_id: Option<RunId>,
}

impl Execution {
    /// Parses the request's `execution` field.
    pub(super) fn parse(execution: Option<&pb::WorkflowExecution>) -> Result<Self, EngineError> {
        let execution =
            execution.ok_or_else(|| EngineError::invalid("execution", "must be given"))?;
        Ok(Self {
            workflow_id: WorkflowId::parse_field("execution.workflow_id", &execution.workflow_id)?,
            run_id: if execution.run_id.is_empty() {
                None
            } else {
                Some(RunId::parse("execution.run_id", &execution.run_id)?)
            },
        })
    }
}

/// A signal as a request gives it: its name, input and request id (for deduplication).
pub(super) struct Signal {
    pub(super) name: SignalName,
    pub(super) input: Option<pb::Payload>,
    pub(super) request_id: Option<String>,
}

/// Separates the workflow id from the request id in a recorded request key (a control
/// character: no id contains one).
pub(super) const KEY_SEPARATOR: char = '\u{1f}';

/// What a request with a name and a payload says, as a number recorded with its request id:
/// FNV-1a over both (stable across versions and nodes). A retry has the same; another request
/// reusing the id, almost surely not.
pub(super) fn fingerprint(name: &str, payload: Option<&pb::Payload>) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(name.as_bytes());
    if let Some(p) = payload {
        eat(p.encoding.as_bytes());
        eat(&p.data);
    }
    h as i64
}

impl Signal {
    /// The request id as recorded: scoped by the workflow it signals, so that two workflows'
    /// signals that happen to share an id (a message id, a client's counter) are both taken.
    pub(super) fn key(&self, workflow_id: &str) -> Option<String> {
        self.request_id
            .as_ref()
            .map(|id| format!("{workflow_id}{KEY_SEPARATOR}{id}"))
    }

    /// The keys a recorded request of this signal may have: scoped, then as recorded before
    /// ids were scoped (still there until purged).
    pub(super) fn recorded_keys<'a>(&'a self, scoped: &'a str) -> Vec<&'a str> {
        let mut keys = vec![scoped];
        keys.extend(self.request_id.as_deref());
        keys
    }

    /// What the signal says, as a number recorded with its request id: FNV-1a over its name
    /// and payload (stable across versions and nodes). A retry has the same; another signal
    /// reusing the id, almost surely not.
    pub(super) fn fingerprint(&self) -> i64 {
        fingerprint(&self.name, self.input.as_ref())
    }

    /// A request id recorded before: a retry (the same signal, answered as applied) or the id
    /// reused for another signal (refused).
    pub(super) fn check_recorded(
        &self,
        workflow_id: &str,
        recorded: Option<i64>,
    ) -> Result<(), EngineError> {
        match recorded {
            Some(f) if f != self.fingerprint() => Err(EngineError::AlreadyExists(format!(
                "request id '{}' was used for another signal to workflow '{workflow_id}'; \
                 a retry must send the same signal, another signal needs another id",
                self.request_id.as_deref().unwrap_or_default()
            ))),
            _ => Ok(()),
        }
    }
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

    /// Parses a signal's fields (`signal_name`, its input, `request_id`).
    pub(super) fn signal(
        &self,
        name: &str,
        input: Option<pb::Payload>,
        request_id: &str,
    ) -> Result<Signal, EngineError> {
        let name = SignalName::parse(name)?;
        self.check_payload("signal_input", payload_len(input.as_ref()))?;
        Ok(Signal {
            name,
            input,
            request_id: self::request_id(request_id)?,
        })
    }

    /// The run an execution names: the given run id, or the newest run of the workflow id.
    pub(super) async fn resolve(
        &self,
        ns: &Namespace,
        execution: Option<&pb::WorkflowExecution>,
    ) -> Result<Run, EngineError> {
        let e = Execution::parse(execution)?;
        let wid = &e.workflow_id;
        let run = match e.run_id {
            None => self.store.latest_run(ns, wid).await?,
            Some(run_id) => self
                .store
                .load_run(run_id)
                .await?
                .filter(|r| r.namespace == *ns && r.workflow_id == *wid),
        };
        run.ok_or_else(|| {
            EngineError::NotFound(format!(
                "workflow '{wid}' has no run{} in namespace '{ns}'",
                e.run_id.map(|r| format!(" '{r}'")).unwrap_or_default()
            ))
        })
    }
}
