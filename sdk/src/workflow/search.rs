//! Search attributes from the workflow's side: values it sets so that `ListWorkflows`' query
//! finds it (`customer = "c42" AND total_cents > 10000`).

use super::context::WorkflowContext;
use martix_proto::v1 as pb;
use pb::command::Attributes as C;
use std::time::{Duration, SystemTime};

/// A search attribute's value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SearchAttribute {
    /// Compared as a whole (`customer = "c42"`), at most 256 bytes.
    Keyword(String),
    /// An integer (`total_cents > 10000`).
    Int(i64),
    /// A time (`paid_at > "2026-12-01"`).
    Time(SystemTime),
}

impl SearchAttribute {
    /// A keyword.
    pub fn keyword(value: impl Into<String>) -> Self {
        Self::Keyword(value.into())
    }

    pub(crate) fn to_proto(&self) -> pb::SearchAttributeValue {
        use pb::search_attribute_value::Value;
        pb::SearchAttributeValue {
            value: Some(match self {
                Self::Keyword(k) => Value::Keyword(k.clone()),
                Self::Int(i) => Value::Int(*i),
                Self::Time(t) => {
                    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                    Value::Time(pbjson_types::Timestamp {
                        seconds: d.as_secs() as i64,
                        nanos: d.subsec_nanos() as i32,
                    })
                }
            }),
        }
    }

    pub(crate) fn from_proto(v: &pb::SearchAttributeValue) -> Option<Self> {
        use pb::search_attribute_value::Value;
        Some(match v.value.as_ref()? {
            Value::Keyword(k) => Self::Keyword(k.clone()),
            Value::Int(i) => Self::Int(*i),
            Value::Time(t) => Self::Time(
                SystemTime::UNIX_EPOCH
                    + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32),
            ),
        })
    }
}

impl From<&str> for SearchAttribute {
    fn from(s: &str) -> Self {
        Self::Keyword(s.to_owned())
    }
}

impl From<String> for SearchAttribute {
    fn from(s: String) -> Self {
        Self::Keyword(s)
    }
}

impl From<i64> for SearchAttribute {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

impl From<SystemTime> for SearchAttribute {
    fn from(t: SystemTime) -> Self {
        Self::Time(t)
    }
}

impl WorkflowContext {
    /// Sets search attributes of the run (a value replaces the one of its name), recorded in
    /// history and indexed: `ListWorkflows`' query and `martix workflow list --query` find the
    /// run by them. Names are 1 to 64 letters, digits and '_'; a run has at most 20. They are
    /// carried to the next run of a continue-as-new and to a reset's run.
    ///
    /// ```no_run
    /// # use martix_sdk::{SearchAttribute, WorkflowContext, WorkflowError};
    /// async fn order(ctx: WorkflowContext, customer: String) -> Result<(), WorkflowError> {
    ///     ctx.upsert_search_attributes([
    ///         ("customer", SearchAttribute::keyword(&customer)),
    ///         ("total_cents", 12_000.into()),
    ///     ]);
    ///     Ok(())
    /// }
    /// ```
    pub fn upsert_search_attributes<'a>(
        &self,
        attributes: impl IntoIterator<Item = (&'a str, SearchAttribute)>,
    ) {
        let attributes = attributes
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_proto()))
            .collect();
        self.state().push_command(C::UpsertSearchAttributes(
            pb::UpsertSearchAttributesCommand { attributes },
        ));
    }
}
