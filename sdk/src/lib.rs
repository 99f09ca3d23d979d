//! # Martix SDK
//!
//! Write durable workflows as plain async Rust. A workflow is a function of a
//! [`WorkflowContext`] and an input; it runs activities, sleeps on durable timers, waits for
//! signals, and survives crashes of workers and of the engine: on any worker, it is replayed
//! from its history to where it was, and no completed step runs twice.
//!
//! Activities, workflows and signals are types ([`Activity`], [`Workflow`], [`Signal`]) that
//! name them and say what they carry, so a call with the wrong input does not compile; the
//! string forms (`activity_by_name`, `register_activity`, `start_workflow`, ...) remain for
//! activities and workflows written in other languages.
//!
//! ```no_run
//! use martix_sdk::{Activity, ActivityContext, ActivityError, ActivityOptions, Client,
//!                  StartOptions, Worker, WorkerOptions, Workflow, WorkflowContext, WorkflowError};
//! use std::time::Duration;
//!
//! /// Composes a greeting.
//! struct Compose;
//! impl Activity for Compose {
//!     const NAME: &'static str = "compose";
//!     type Input = String;
//!     type Output = String;
//!     fn options() -> ActivityOptions {
//!         ActivityOptions::new(Duration::from_secs(5))
//!     }
//! }
//!
//! /// Greets someone, durably.
//! struct Greet;
//! impl Workflow for Greet {
//!     const NAME: &'static str = "greet";
//!     type Input = String;
//!     type Output = String;
//! }
//!
//! async fn greet(ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
//!     let greeting = ctx.activity(Compose, &name).await?;
//!     ctx.sleep(Duration::from_secs(1)).await;
//!     Ok(greeting)
//! }
//!
//! async fn compose(_ctx: ActivityContext, name: String) -> Result<String, ActivityError> {
//!     Ok(format!("hello, {name}"))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut worker = Worker::new("http://127.0.0.1:7233", WorkerOptions::new("hello"))?;
//! worker.workflow(Greet, greet).activity(Compose, compose);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(worker.run(shutdown.clone()));
//!
//! let client = Client::connect("http://127.0.0.1:7233").await?;
//! let run = client.start(Greet, StartOptions::for_id("greet-1", "hello"), &"world".to_owned()).await?;
//! let greeting: String = run.result().await?;
//! # Ok(()) }
//! ```
//!
//! # Testing
//!
//! With feature `testing` (as a dev-dependency: `martix-sdk = { version = "...", features =
//! ["testing"] }`), `martix_sdk::testing::TestEnv` runs a real engine in the test's process on an
//! in-memory database, with a clock the test skips: `env.sleep(Duration::from_secs(86_400))`
//! fires a day of timers at once. Activities are mocked by type on the test's worker, and
//! `env.assert_replays` replays the finished run against the code.
//!
//! ```no_run
//! # use martix_sdk::{Activity, ActivityError, StartOptions, Workflow, WorkflowContext, WorkflowError};
//! # use std::time::Duration;
//! # struct Compose;
//! # impl Activity for Compose { const NAME: &'static str = "compose"; type Input = String; type Output = String; }
//! # struct Greet;
//! # impl Workflow for Greet { const NAME: &'static str = "greet"; type Input = String; type Output = String; }
//! # async fn greet(ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
//! #     ctx.sleep(Duration::from_secs(1)).await;
//! #     Ok(ctx.activity(Compose, &name).await?)
//! # }
//! # #[cfg(feature = "testing")]
//! # async fn test() {
//! let env = martix_sdk::testing::TestEnv::start().await.unwrap();
//! let mut worker = env.worker("hello");
//! worker
//!     .workflow(Greet, greet)
//!     .activity(Compose, |_ctx, name: String| async move {
//!         Ok::<_, ActivityError>(format!("hi {name}")) // the mock of `Compose`
//!     });
//! env.run(worker);
//! let run = env
//!     .client()
//!     .start(Greet, StartOptions::for_id("greet-1", "hello"), &"ada".to_owned())
//!     .await
//!     .unwrap();
//! env.sleep(Duration::from_secs(1)).await;
//! assert_eq!(run.result::<String>().await.unwrap(), "hi ada");
//! # }
//! ```

#![warn(missing_docs)]

pub mod activity;
pub mod client;
pub mod connection;
pub mod definition;
pub mod error;
pub mod history;
pub mod payload;
pub mod replayer;
pub mod saga;
#[cfg(feature = "testing")]
pub mod testing;
pub mod worker;
pub mod workflow;

pub use activity::ActivityContext;
pub use client::{
    BreakerInfo, Client, HoldInfo, IdReusePolicy, ListOptions, NamespaceInfo, Page, PageToken,
    ParentRun, PendingActivityState, PendingChild, ResetPoint, RunOutcome, StartOptions,
    WorkerBreaker, WorkflowDescription, WorkflowHandle, WorkflowStatus, WorkflowSummary,
};
pub use connection::ConnectOptions;
pub use definition::{Activity, Query, Signal, Update, Workflow};
pub use error::{
    ActivityError, ActivityFailure, ChildWorkflowError, ClientError, ContinueAsNew, Failure,
    SignalError, WorkflowError,
};
pub use history::WorkflowHistory;
/// Schedules: a workflow started at each time of a cron expression or an interval
/// ([`Client::create_schedule`] and the calls beside it).
pub mod schedule {
    pub use crate::client::schedules::{
        DEFAULT_CATCHUP_WINDOW, Schedule, ScheduleAction, ScheduleActionRecord,
        ScheduleDescription, ScheduleOverlap, ScheduleSpec, ScheduleSummary, ScheduleTimes,
        ScheduledRun,
    };
}
/// The engine's wire types (protobuf), the low-level escape hatch: history events (what
/// [`WorkflowHandle::history`] reads and the [`Replayer`] replays) are these, and
/// `into_proto` on [`WorkflowDescription`], [`WorkflowSummary`] and [`RunOutcome`] gives the
/// engine's answer as it came, for tools that print the wire form. No other high-level call
/// takes or returns them.
pub use martix_proto::v1 as proto;
pub use replayer::{ReplayError, Replayer};
pub use saga::{CompensationFailure, Saga};
pub use worker::{BreakerHold, BreakerReporter, BreakerState, Worker, WorkerOptions, WorkerStats};
pub use workflow::{
    ActivityOptions, ChildStartFuture, ChildWorkflowFuture, ChildWorkflowOptions, Nondeterminism,
    ParentClosePolicy, RetryPolicy, SearchAttribute, SignalStream, StartedChild, WorkflowContext,
    WorkflowInfo, WorkflowState,
};

/// The largest answer the SDK's clients accept from the engine: an answer may carry several
/// payloads of the engine's limit (a result, the events a completion appended, the inputs of
/// activities handed over eagerly) and history pages.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
