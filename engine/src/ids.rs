//! Validated names and ids. Input is parsed once at the edge; inside the engine a `WorkflowId`
//! is known to be good. At the bottom of the engine's module graph: it depends on nothing else
//! of the engine (its error becomes an `EngineError` in `error`).

use std::fmt;

/// Why a name or id was refused: the request field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct InvalidId {
    /// The request field that carried it.
    pub field: &'static str,
    /// What is wrong, said so that it reads after the field's name.
    pub message: String,
}

impl InvalidId {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Longest id or name the engine accepts, in bytes.
pub const MAX_ID_BYTES: usize = 255;

fn check(field: &'static str, raw: &str) -> Result<(), InvalidId> {
    match raw.len() {
        0 => Err(InvalidId::new(field, "must not be empty")),
        1..=MAX_ID_BYTES => {
            if raw.chars().any(char::is_control) {
                Err(InvalidId::new(field, "must not contain control characters"))
            } else {
                Ok(())
            }
        }
        n => Err(InvalidId::new(
            field,
            format!("is {n} bytes, at most {MAX_ID_BYTES}"),
        )),
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates `raw`: 1 to 255 bytes, no control characters.
            pub fn parse(raw: &str) -> Result<Self, InvalidId> {
                Self::parse_field($field, raw)
            }

            /// As `parse`, for a request field of another name (`sticky_queue`).
            pub fn parse_field(field: &'static str, raw: &str) -> Result<Self, InvalidId> {
                check(field, raw)?;
                Ok(Self(raw.to_owned()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Read access as text: a valid name is a string (for SQL binds, keys and messages).
        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }
    };
}

name_type!(
    /// A tenant boundary; every other id is scoped by it.
    Namespace,
    "namespace"
);
name_type!(
    /// The business key of a workflow (`renewal-1042`).
    WorkflowId,
    "workflow_id"
);
name_type!(
    /// A named queue that workers poll.
    TaskQueue,
    "task_queue"
);
name_type!(
    /// A registered workflow type name.
    WorkflowType,
    "workflow_type"
);

name_type!(
    /// The type of an activity a workflow schedules (`charge_card`).
    ActivityType,
    "activity_type"
);
name_type!(
    /// An activity's id, unique among a run's pending activities.
    ActivityId,
    "activity_id"
);
name_type!(
    /// The name of a signal a workflow takes.
    SignalName,
    "signal_name"
);
name_type!(
    /// The name of a query a workflow answers.
    QueryName,
    "query_type"
);

/// One run of a workflow id: a UUID v7, so runs sort by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(uuid::Uuid);

impl RunId {
    /// A fresh, time-ordered run id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// Parses a run id given by a client; `field` names it in the error.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidId> {
        uuid::Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| InvalidId::new(field, format!("'{raw}' is not a UUID")))
    }

    /// The canonical hyphenated text form, as stored.
    pub fn to_text(self) -> String {
        self.0.hyphenated().to_string()
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_oversized_ids_are_rejected_with_the_field_name() {
        let err = WorkflowId::parse("").unwrap_err().to_string();
        assert!(
            err.contains("workflow_id") && err.contains("empty"),
            "{err}"
        );
        let err = WorkflowId::parse(&"x".repeat(256)).unwrap_err().to_string();
        assert!(err.contains("256 bytes, at most 255"), "{err}");
        assert!(WorkflowId::parse(&"x".repeat(255)).is_ok());
        assert!(TaskQueue::parse("a\nb").is_err());
    }

    #[test]
    fn run_ids_round_trip_and_reject_garbage() {
        let id = RunId::new();
        assert_eq!(RunId::parse("run_id", &id.to_text()).unwrap(), id);
        let err = RunId::parse("run_id", "nope").unwrap_err().to_string();
        assert!(err.contains("run_id"), "{err}");
    }
}
