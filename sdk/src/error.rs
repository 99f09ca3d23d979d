//! Errors of the SDK: of calls to the engine, of workflows, of activities.

use martix_proto::v1 as pb;
use std::time::Duration;

/// A call to the engine failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The engine answered with an error status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The engine could not be reached.
    #[error("cannot reach the engine: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The connection settings are unusable (a CA file, a token).
    #[error("connection settings: {0}")]
    Config(String),
    /// A value could not be encoded or decoded as JSON.
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// The workflow ended without a result.
    #[error("workflow {status}: {failure}")]
    WorkflowFailed {
        /// How it ended.
        status: String,
        /// Why.
        failure: String,
    },
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
    ContinueAsNew(Box<pb::ContinueAsNewWorkflowExecutionCommand>),
    /// A value could not be encoded or decoded.
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
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
                cause: Some(Box::new(a.failure.clone())),
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

/// The final failure of an activity, as the workflow sees it (after all retries).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{} ({})", failure.message, if failure.r#type.is_empty() { "error" } else { &failure.r#type })]
pub struct ActivityFailure {
    /// What the activity (or the engine, for timeouts and cancellation) reported.
    pub failure: pb::Failure,
}

impl ActivityFailure {
    /// The error type the activity reported.
    pub fn error_type(&self) -> &str {
        &self.failure.r#type
    }

    /// Whether the activity was cancelled rather than failed.
    pub fn is_canceled(&self) -> bool {
        self.failure.r#type == "Canceled"
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
}

impl ActivityError {
    /// A retryable failure.
    pub fn retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            error_type: error_type.into(),
            non_retryable: false,
            retry_after: None,
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
            next_retry_delay: self.retry_after.map(|d| pbjson_types::Duration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            }),
            ..Default::default()
        }
    }
}

impl From<serde_json::Error> for ActivityError {
    fn from(e: serde_json::Error) -> Self {
        Self::non_retryable("BadPayload", e.to_string())
    }
}
