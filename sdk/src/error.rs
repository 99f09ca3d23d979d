//! Errors of the SDK: of calls to the engine, of workflows, of activities.

use martix_proto::v1 as pb;
use std::time::Duration;

/// A call to the engine failed. Its `Display` is one line a person can act on: the engine's
/// message (which names the field or the thing at fault), with what kind of failure it is when
/// the message does not say.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The engine answered with an error status.
    #[error("{}", status_line(.0))]
    Status(#[from] tonic::Status),
    /// The workflow has no run in the namespace (or not the run named): the engine answered
    /// `NOT_FOUND` to an operation on a [`WorkflowHandle`](crate::WorkflowHandle).
    #[error(
        "{}workflow '{workflow_id}' not found in namespace '{namespace}'",
        if run_id.is_empty() { String::new() } else { format!("run '{run_id}' of ") }
    )]
    WorkflowNotFound {
        /// The client's namespace.
        namespace: String,
        /// The workflow id asked for.
        workflow_id: String,
        /// The run asked for; empty: the latest.
        run_id: String,
    },
    /// The engine could not be reached at `address` (nothing listens there, a name that does
    /// not resolve, a TLS handshake that failed).
    #[error("cannot reach the engine at {address}: {}", transport_reason(source))]
    Unreachable {
        /// The address dialled.
        address: String,
        /// What the connection attempt failed with.
        #[source]
        source: tonic::transport::Error,
    },
    /// The connection settings are unusable (an address, a CA file, a token).
    #[error("connection settings: {0}")]
    Config(String),
    /// A value the engine sent could not be decoded as JSON into the type asked for.
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// A value to send could not be encoded as JSON; nothing was sent.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What it was: `the input of workflow 'order'`, `signal 'approve'`, ...
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// An update's handler failed (or, for an update sent with a start, its validator refused
    /// it): the workflow recorded why.
    #[error("update '{name}' failed: {failure}")]
    UpdateFailed {
        /// The update's name.
        name: String,
        /// Why.
        failure: Failure,
    },
    /// The workflow ended without a result.
    #[error("workflow {status}: {failure}")]
    WorkflowFailed {
        /// How it ended.
        status: String,
        /// Why.
        failure: String,
    },
}

/// A status as one line: the engine's messages name what is wrong (`invalid workflow_id: must
/// not be empty`, `permission denied: ...`), so they stand alone; a code whose message may come
/// from elsewhere (a proxy, the transport) says what kind of failure it is first.
fn status_line(s: &tonic::Status) -> String {
    use tonic::Code;
    let message = s.message().split_whitespace().collect::<Vec<_>>().join(" ");
    let kind = match s.code() {
        Code::Ok => "no error",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "the engine did not answer in time",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "over a limit",
        Code::FailedPrecondition => "not possible now",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "not implemented by this engine",
        Code::Internal => "internal error",
        Code::Unavailable => "the engine is unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "not authenticated",
    };
    let line = match s.code() {
        _ if message.is_empty() => kind.to_owned(),
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::Unauthenticated
        | Code::ResourceExhausted
        // The engine's own deadlines say what did not answer (a query no worker took).
        | Code::DeadlineExceeded => message,
        _ if message.starts_with(kind) => message,
        _ => format!("{kind}: {message}"),
    };
    match s
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
    {
        Some(ms) => format!("{line} (retry in {ms} ms)"),
        None => line,
    }
}

/// Why a connection failed, from the innermost cause: `connection refused`, `timed out`, a
/// name that does not resolve, a certificate refused.
fn transport_reason(e: &tonic::transport::Error) -> String {
    let mut innermost: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = innermost.source() {
        innermost = next;
    }
    if let Some(io) = innermost.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind as K;
        match io.kind() {
            K::ConnectionRefused => return "connection refused".into(),
            K::TimedOut => return "timed out".into(),
            K::ConnectionReset => return "connection reset".into(),
            _ => {}
        }
    }
    let text = innermost.to_string();
    // `Connection refused (os error 111)` and the like: the number helps no one.
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if !chars.as_str().starts_with(char::is_uppercase) => {
            first.to_lowercase().chain(chars).collect()
        }
        _ => text,
    }
}

/// How a workflow ends other than with a result. Returned from workflow code with `?` or
/// `Err(...)`; everything but `ContinueAsNew` and `Canceled` fails the run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// The workflow failed, for a business or technical reason.
    #[error("{message}")]
    Failed {
        /// What happened.
        message: String,
        /// A type name operators and callers can match on.
        error_type: String,
    },
    /// An activity ended in failure and the workflow gave up.
    #[error("activity failed: {0}")]
    Activity(#[from] ActivityFailure),
    /// The workflow accepted a cancellation request.
    #[error("canceled")]
    Canceled,
    /// The workflow continues as a new run with this input (see
    /// `WorkflowContext::continue_as_new`).
    #[error("continue as new")]
    ContinueAsNew(Box<ContinueAsNew>),
    /// A value could not be encoded or decoded.
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// A signal's payload could not be decoded as the type its stream reads.
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// A child workflow could not start or ended without a result, and the workflow gave up.
    #[error(transparent)]
    Child(#[from] ChildWorkflowError),
}

/// Why a child workflow has no result: it could not start, or it ended another way.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ChildWorkflowError {
    /// Nothing was started: the failure says why (`WorkflowAlreadyRunning`: its id runs
    /// another workflow; `WorkflowIdReused`: its type allows one run per id and it ran;
    /// `BadPayload`: its input did not encode).
    #[error("child workflow '{workflow_id}' could not start: {failure}")]
    StartFailed {
        /// The child's workflow id.
        workflow_id: String,
        /// Why.
        failure: Failure,
    },
    /// It ran and ended without a result (or with one that did not decode).
    #[error("child workflow '{workflow_id}' ended {status}: {failure}")]
    Closed {
        /// The child's workflow id.
        workflow_id: String,
        /// How it ended: FAILED, CANCELED, TERMINATED, TIMED_OUT (COMPLETED: its result did
        /// not decode).
        status: String,
        /// Why.
        failure: Failure,
    },
}

impl ChildWorkflowError {
    /// The child's workflow id.
    pub fn workflow_id(&self) -> &str {
        match self {
            Self::StartFailed { workflow_id, .. } | Self::Closed { workflow_id, .. } => workflow_id,
        }
    }

    /// Why it could not start, or how its run failed.
    pub fn failure(&self) -> &Failure {
        match self {
            Self::StartFailed { failure, .. } | Self::Closed { failure, .. } => failure,
        }
    }

    /// Its id runs another workflow: nothing was started.
    pub fn is_already_running(&self) -> bool {
        matches!(self, Self::StartFailed { failure, .. } if failure.error_type == "WorkflowAlreadyRunning")
    }
}

/// The new run a workflow continues as: made by `WorkflowContext::continue_as_new`, carried
/// by [`WorkflowError::ContinueAsNew`] to the SDK, which ends the run with it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContinueAsNew {
    pub(crate) command: pb::ContinueAsNewWorkflowExecutionCommand,
}

impl WorkflowError {
    /// A failure with a message and a type.
    pub fn failed(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            error_type: error_type.into(),
        }
    }

    pub(crate) fn to_failure(&self) -> pb::Failure {
        match self {
            WorkflowError::Failed {
                message,
                error_type,
            } => pb::Failure {
                message: message.clone(),
                r#type: error_type.clone(),
                ..Default::default()
            },
            WorkflowError::Activity(a) => pb::Failure {
                message: self.to_string(),
                r#type: "ActivityFailed".into(),
                cause: Some(Box::new(pb::Failure::from(&a.failure))),
                ..Default::default()
            },
            WorkflowError::Child(c) => pb::Failure {
                message: self.to_string(),
                r#type: "ChildWorkflowFailed".into(),
                cause: Some(Box::new(pb::Failure::from(c.failure()))),
                ..Default::default()
            },
            other => pb::Failure {
                message: other.to_string(),
                r#type: "WorkflowError".into(),
                ..Default::default()
            },
        }
    }
}

/// A signal whose payload is not the type its [`SignalStream`](crate::SignalStream) reads:
/// which signal, and why. The item of the stream, not a skip: the workflow decides whether to
/// wait for the next one or fail (`?` turns it into [`WorkflowError::Signal`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("signal '{signal}': cannot decode its payload: {reason}")]
#[non_exhaustive]
pub struct SignalError {
    /// The signal's name.
    pub signal: String,
    /// Why its payload did not decode.
    pub reason: String,
}

/// Why something failed, as the engine records it: an activity attempt, a workflow task, a
/// run. Its `Display` is the message with the type in parentheses.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({})", if error_type.is_empty() { "error" } else { error_type })]
#[non_exhaustive]
pub struct Failure {
    /// What happened.
    pub message: String,
    /// A type name callers and retry policies match on (`Declined`, `TimedOut`, `Canceled`);
    /// empty when the failing side gave none.
    pub error_type: String,
    /// Retrying could not help: the failing side said so.
    pub non_retryable: bool,
    /// The failure that caused this one, if any.
    pub cause: Option<Box<Failure>>,
    /// The failing side asked for the next attempt no sooner than this.
    pub next_retry_delay: Option<Duration>,
}

impl Failure {
    /// A failure with a type and a message.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            error_type: error_type.into(),
            ..Self::default()
        }
    }
}

impl From<pb::Failure> for Failure {
    fn from(f: pb::Failure) -> Self {
        Self {
            message: f.message,
            error_type: f.r#type,
            non_retryable: f.non_retryable,
            cause: f.cause.map(|c| Box::new(Failure::from(*c))),
            next_retry_delay: f
                .next_retry_delay
                .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)),
        }
    }
}

impl From<&Failure> for pb::Failure {
    fn from(f: &Failure) -> Self {
        pb::Failure {
            message: f.message.clone(),
            r#type: f.error_type.clone(),
            non_retryable: f.non_retryable,
            details: None,
            cause: f.cause.as_deref().map(|c| Box::new(pb::Failure::from(c))),
            next_retry_delay: f.next_retry_delay.map(crate::workflow::options::dur),
            breaker: String::new(),
        }
    }
}

/// The final failure of an activity, as the workflow sees it (after all retries).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{failure}")]
pub struct ActivityFailure {
    /// What the activity (or the engine, for timeouts and cancellation, or the SDK, for an
    /// input or result it could not encode) reported.
    pub failure: Failure,
}

impl ActivityFailure {
    /// The error type the activity reported.
    pub fn error_type(&self) -> &str {
        &self.failure.error_type
    }

    /// What the activity reported.
    pub fn message(&self) -> &str {
        &self.failure.message
    }

    /// Whether the activity was cancelled rather than failed.
    pub fn is_canceled(&self) -> bool {
        self.failure.error_type == "Canceled"
    }
}

/// How an activity attempt fails. Retryable unless marked otherwise.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct ActivityError {
    /// What happened.
    pub message: String,
    /// A type name, matched against the retry policy's non-retryable types.
    pub error_type: String,
    /// Retrying cannot help.
    pub non_retryable: bool,
    /// Retry no sooner than this (for example an open circuit breaker's hint).
    pub retry_after: Option<Duration>,
    /// The circuit breaker that refused the attempt without calling (see
    /// [`ActivityError::circuit_open`]).
    pub breaker: Option<String>,
}

impl ActivityError {
    /// A retryable failure.
    pub fn retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            error_type: error_type.into(),
            non_retryable: false,
            retry_after: None,
            breaker: None,
        }
    }

    /// The worker's circuit breaker `breaker` refused the attempt without calling the system
    /// behind it. This is no attempt: the engine keeps the attempt count and parks the task
    /// behind the breaker until a worker reports it closed (with [`crate::BreakerReporter`]),
    /// sending one task now and then meanwhile to probe; `describe`
    /// shows it parked. `retry_after`, the breaker's remaining wait, is kept for engines that
    /// retry instead.
    pub fn circuit_open(breaker: impl Into<String>, retry_after: Duration) -> Self {
        let breaker = breaker.into();
        Self {
            breaker: Some(breaker.clone()),
            ..Self::retryable(
                "CircuitOpen",
                format!("circuit breaker {breaker} is open; nothing was called"),
            )
            .with_retry_after(retry_after)
        }
    }

    /// A failure that no retry can fix (a declined card, an invalid order).
    pub fn non_retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            non_retryable: true,
            ..Self::retryable(error_type, message)
        }
    }

    /// Asks for the next attempt no sooner than `delay`.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    pub(crate) fn to_failure(&self) -> pb::Failure {
        pb::Failure {
            message: self.message.clone(),
            r#type: self.error_type.clone(),
            non_retryable: self.non_retryable,
            next_retry_delay: self.retry_after.map(crate::workflow::options::dur),
            breaker: self.breaker.clone().unwrap_or_default(),
            ..Default::default()
        }
    }
}

impl From<serde_json::Error> for ActivityError {
    fn from(e: serde_json::Error) -> Self {
        Self::non_retryable("BadPayload", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_workflow_is_named_with_its_namespace() {
        let latest = ClientError::WorkflowNotFound {
            namespace: "default".into(),
            workflow_id: "o-17".into(),
            run_id: String::new(),
        };
        assert_eq!(
            latest.to_string(),
            "workflow 'o-17' not found in namespace 'default'"
        );
        let run = ClientError::WorkflowNotFound {
            namespace: "shop".into(),
            workflow_id: "o-17".into(),
            run_id: "r1".into(),
        };
        assert_eq!(
            run.to_string(),
            "run 'r1' of workflow 'o-17' not found in namespace 'shop'"
        );
    }

    #[test]
    fn a_value_that_does_not_encode_is_named() {
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), "a tuple key is not a JSON key");
        let e = ClientError::Encode {
            what: "signal 'approve'".into(),
            source: serde_json::to_vec(&map).unwrap_err(),
        };
        assert!(
            e.to_string()
                .starts_with("cannot encode signal 'approve': key must be a string"),
            "{e}"
        );
    }

    #[test]
    fn statuses_read_as_one_line_without_the_code_spelled_out() {
        let line = |s: tonic::Status| ClientError::from(s).to_string();
        assert_eq!(
            line(tonic::Status::invalid_argument(
                "invalid workflow_id: must not be empty"
            )),
            "invalid workflow_id: must not be empty"
        );
        assert_eq!(
            line(tonic::Status::unavailable("store unavailable: gone")),
            "the engine is unavailable: store unavailable: gone"
        );
        assert_eq!(
            line(tonic::Status::internal("internal error: corrupt")),
            "internal error: corrupt"
        );
        assert_eq!(line(tonic::Status::unknown("")), "unknown error");
        assert_eq!(
            line(tonic::Status::failed_precondition(
                "run is closed\nfor good"
            )),
            "run is closed for good"
        );
        let mut limited = tonic::Status::resource_exhausted("start rate limit");
        limited
            .metadata_mut()
            .insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(line(limited), "start rate limit (retry in 250 ms)");
    }
}
