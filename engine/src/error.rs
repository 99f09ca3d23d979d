//! The engine's one error type and its one mapping to a gRPC status.

use std::time::Duration;

/// Everything an engine operation can fail with. Each variant maps to one gRPC code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A request field is malformed: the message names the field and what is wrong.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    /// A request is larger than a configured limit.
    #[error("{field} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        field: &'static str,
        size: usize,
        limit: usize,
    },
    /// The thing named does not exist (or a task token names no current task).
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the run's state does not allow it now.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A start was refused by the id-reuse policy.
    #[error("{0}")]
    AlreadyExists(String),
    /// Not implemented yet.
    #[error("{0} is not implemented yet")]
    Unimplemented(&'static str),
    /// The store could not be reached, or kept conflicting; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The node has more work queued than it takes; the caller retries after `retry_after`.
    #[error("{what}; retry after {} ms", retry_after.as_millis())]
    Overloaded { what: String, retry_after: Duration },
    /// Nothing answered before the deadline (a query no worker took); the caller may retry.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A bug or corrupt data; never caused by input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// An `InvalidArgument` for `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}

impl From<crate::ids::InvalidId> for EngineError {
    fn from(e: crate::ids::InvalidId) -> Self {
        Self::InvalidArgument {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<crate::store::StoreError> for EngineError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        match e {
            S::Conflict { .. } | S::Unavailable(_) | S::CursorMoved => {
                Self::Unavailable(e.to_string())
            }
            S::StaleTask => Self::NotFound("the task is no longer current".into()),
            S::AlreadyOpen | S::IdUsed => Self::Unavailable(e.to_string()),
            S::Duplicate => Self::AlreadyExists(e.to_string()),
            S::Corrupt(m) => Self::Internal(m),
            S::Overloaded(what) => Self::Overloaded {
                what,
                retry_after: Duration::from_millis(100),
            },
        }
    }
}

impl From<EngineError> for tonic::Status {
    fn from(e: EngineError) -> Self {
        use tonic::Code;
        let code = match &e {
            EngineError::InvalidArgument { .. } => Code::InvalidArgument,
            EngineError::TooLarge { .. } => Code::ResourceExhausted,
            EngineError::NotFound(_) => Code::NotFound,
            EngineError::FailedPrecondition(_) => Code::FailedPrecondition,
            EngineError::AlreadyExists(_) => Code::AlreadyExists,
            EngineError::Unimplemented(_) => Code::Unimplemented,
            EngineError::Unavailable(_) => Code::Unavailable,
            EngineError::Overloaded { .. } => Code::ResourceExhausted,
            EngineError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            EngineError::Internal(_) => Code::Internal,
        };
        if matches!(e, EngineError::Internal(_)) {
            tracing::error!(error = %e, "internal error");
        }
        let mut status = tonic::Status::new(code, e.to_string());
        if let EngineError::Overloaded { retry_after, .. } = &e
            && let Ok(v) = retry_after.as_millis().to_string().parse()
        {
            // As the edge's rate limits answer.
            status.metadata_mut().insert("retry-after-ms", v);
        }
        status
    }
}

/// Converts a protobuf duration into a std one; negative or out-of-range values are an error
/// naming `field`.
pub(crate) fn duration_field(
    field: &'static str,
    d: Option<&pbjson_types::Duration>,
) -> Result<Option<Duration>, EngineError> {
    let Some(d) = d else { return Ok(None) };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(EngineError::invalid(
            field,
            "must be a non-negative duration",
        ));
    }
    if d.seconds > 100 * 365 * 24 * 3600 {
        return Err(EngineError::invalid(field, "is longer than 100 years"));
    }
    let d = Duration::new(d.seconds as u64, d.nanos as u32);
    Ok((!d.is_zero()).then_some(d))
}
