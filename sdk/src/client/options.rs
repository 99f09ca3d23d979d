//! What the client's calls take: how to start a workflow, what to list and where a listing's
//! next page starts, and where a reset goes.

use super::WorkflowStatus;
use martix_proto::time::system_time_to_timestamp;
use martix_proto::v1 as pb;
use std::time::{Duration, SystemTime};

/// What a start does when the workflow id was used by a run that has closed. A running id
/// always answers with the running run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdReusePolicy {
    /// The policy the workflow type's domain declared on the server (the order saga:
    /// `RejectDuplicate`), else `AllowDuplicate`.
    #[default]
    Unspecified,
    /// A new run may reuse the id.
    AllowDuplicate,
    /// One run per workflow id: a start with the same type and input is answered with that
    /// run (open or closed), another is refused (`ALREADY_EXISTS`).
    RejectDuplicate,
    /// A new run may reuse the id only if the last run did not complete.
    AllowDuplicateFailedOnly,
}

impl From<IdReusePolicy> for pb::IdReusePolicy {
    fn from(p: IdReusePolicy) -> Self {
        match p {
            IdReusePolicy::Unspecified => pb::IdReusePolicy::Unspecified,
            IdReusePolicy::AllowDuplicate => pb::IdReusePolicy::AllowDuplicate,
            IdReusePolicy::RejectDuplicate => pb::IdReusePolicy::RejectDuplicate,
            IdReusePolicy::AllowDuplicateFailedOnly => pb::IdReusePolicy::AllowDuplicateFailedOnly,
        }
    }
}

/// How to start a workflow.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StartOptions {
    /// The registered workflow type.
    pub workflow_type: String,
    /// The business key; starting an id that is running returns the running run.
    pub workflow_id: String,
    /// The queue its workers poll.
    pub task_queue: String,
    /// What to do when the id was used before. `Unspecified` (the default): the policy the
    /// workflow type's domain declared on the server (the order saga: reject-duplicate, one
    /// run per order id), else allow-duplicate.
    pub id_reuse_policy: IdReusePolicy,
    /// Longest time the whole workflow (all runs) may take.
    pub execution_timeout: Option<Duration>,
    /// Longest time one run may take.
    pub run_timeout: Option<Duration>,
    /// Longest time a worker may hold one workflow task.
    pub task_timeout: Option<Duration>,
    /// Values shown with the run (not given to workflow code).
    pub memo: Vec<(String, serde_json::Value)>,
}

impl StartOptions {
    /// Starts `workflow_type` as `workflow_id` on `task_queue`.
    pub fn new(
        workflow_type: impl Into<String>,
        workflow_id: impl Into<String>,
        task_queue: impl Into<String>,
    ) -> Self {
        Self {
            workflow_type: workflow_type.into(),
            workflow_id: workflow_id.into(),
            task_queue: task_queue.into(),
            id_reuse_policy: IdReusePolicy::Unspecified,
            execution_timeout: None,
            run_timeout: None,
            task_timeout: None,
            memo: Vec::new(),
        }
    }

    /// Starts a workflow as `workflow_id` on `task_queue`, its type left to
    /// [`Client::start`](crate::Client::start), which takes it from the workflow's definition.
    pub fn for_id(workflow_id: impl Into<String>, task_queue: impl Into<String>) -> Self {
        Self::new("", workflow_id, task_queue)
    }

    /// Sets the id-reuse policy.
    pub fn id_reuse_policy(mut self, policy: IdReusePolicy) -> Self {
        self.id_reuse_policy = policy;
        self
    }

    /// Adds a memo entry.
    pub fn memo(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.memo.push((key.into(), value));
        self
    }
}

/// Where the next page of a listing starts: made by the engine, passed back as it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PageToken(pub(super) Vec<u8>);

impl PageToken {
    /// The token's bytes, to keep it (in a URL, a file) until the next page is asked for.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A token kept as bytes by [`PageToken::as_bytes`].
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The engine's `next_page_token`: empty means the last page.
    pub(super) fn next(raw: Vec<u8>) -> Option<Self> {
        (!raw.is_empty()).then_some(Self(raw))
    }
}

/// One page of a listing.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Page<T> {
    /// The page's items, in the listing's order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_page_token: Option<PageToken>,
}

/// Which runs [`Client::list_workflows`] returns (newest first), and which page. Every filter
/// given must hold.
///
/// ```
/// use martix_sdk::{ListOptions, WorkflowStatus};
/// let stuck = ListOptions::new()
///     .status(WorkflowStatus::Running)
///     .workflow_id_prefix("order-")
///     .page_size(500);
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ListOptions {
    /// Runs in any of these statuses; empty: any status.
    pub statuses: Vec<WorkflowStatus>,
    /// Runs of this workflow type.
    pub workflow_type: Option<String>,
    /// Runs on this task queue.
    pub task_queue: Option<String>,
    /// Runs whose workflow id starts with this.
    pub workflow_id_prefix: Option<String>,
    /// Runs started at this time or later.
    pub started_from: Option<SystemTime>,
    /// Runs started before this time.
    pub started_before: Option<SystemTime>,
    /// Runs per page: 0 for the engine's default (100); the engine serves at most 1000.
    pub page_size: u32,
    /// The page to return: the token of the previous page; `None`: the first.
    pub page_token: Option<PageToken>,
    /// A query over the runs' fields and search attributes (`customer = "c42" AND status =
    /// "running"`; see [`ListOptions::query`]).
    pub query: Option<String>,
}

impl ListOptions {
    /// Every run, first page, the engine's page size.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a status runs may be in.
    pub fn status(mut self, status: WorkflowStatus) -> Self {
        self.statuses.push(status);
        self
    }

    /// Only runs of this workflow type.
    pub fn workflow_type(mut self, workflow_type: impl Into<String>) -> Self {
        self.workflow_type = Some(workflow_type.into());
        self
    }

    /// Only runs on this task queue.
    pub fn task_queue(mut self, task_queue: impl Into<String>) -> Self {
        self.task_queue = Some(task_queue.into());
        self
    }

    /// Only runs whose workflow id starts with `prefix`.
    pub fn workflow_id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.workflow_id_prefix = Some(prefix.into());
        self
    }

    /// Only runs started at `time` or later.
    pub fn started_from(mut self, time: SystemTime) -> Self {
        self.started_from = Some(time);
        self
    }

    /// Only runs started before `time`.
    pub fn started_before(mut self, time: SystemTime) -> Self {
        self.started_before = Some(time);
        self
    }

    /// Runs per page (0: the engine's default).
    pub fn page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size;
        self
    }

    /// Only runs the query selects: comparisons (= != < <= > >=) of a field (workflow_id,
    /// workflow_type, task_queue, status, started, closed, or a search attribute) with a value
    /// ("text", 42, or a time as "2026-12-01"), joined by AND and OR, grouped with
    /// parentheses. A query that does not parse is refused naming the position.
    pub fn query(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// The page after the one that gave `token`.
    pub fn page_token(mut self, token: PageToken) -> Self {
        self.page_token = Some(token);
        self
    }

    pub(super) fn request(&self, namespace: &str) -> pb::ListWorkflowsRequest {
        pb::ListWorkflowsRequest {
            namespace: namespace.to_owned(),
            page_size: i32::try_from(self.page_size).unwrap_or(i32::MAX),
            next_page_token: self
                .page_token
                .as_ref()
                .map_or_else(Vec::new, |t| t.0.clone()),
            statuses: self.statuses.iter().map(|s| i32::from(*s)).collect(),
            workflow_type: self.workflow_type.clone().unwrap_or_default(),
            task_queue: self.task_queue.clone().unwrap_or_default(),
            workflow_id_prefix: self.workflow_id_prefix.clone().unwrap_or_default(),
            start_time_from: self.started_from.map(system_time_to_timestamp),
            start_time_to: self.started_before.map(system_time_to_timestamp),
            query: self.query.clone().unwrap_or_default(),
        }
    }
}

/// The workflow-task boundary [`WorkflowHandle::reset`] starts the new run from: history up
/// to it is copied, what came after is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetPoint {
    /// The last completed workflow task ("last good").
    LastGood,
    /// The first completed workflow task: the run starts over.
    First,
    /// The completed workflow task with this `WorkflowTaskCompleted` event id.
    Event(i64),
}

impl ResetPoint {
    pub(super) fn event_id(self) -> i64 {
        match self {
            ResetPoint::LastGood => 0,
            ResetPoint::First => -1,
            ResetPoint::Event(id) => id,
        }
    }
}

/// A namespace and its settings, as an administrator sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// The namespace's name.
    pub name: String,
    /// How long its closed runs are kept, with their histories, before they are deleted.
    pub retention: std::time::Duration,
}
