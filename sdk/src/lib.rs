//! # Martix SDK
//!
//! Write durable workflows as plain async Rust. A workflow is a function of a
//! [`WorkflowContext`] and an input; it runs activities, sleeps on durable timers, waits for
//! signals, and survives crashes of workers and of the engine: on any worker, it is replayed
//! from its history to where it was, and no completed step runs twice.
//!
//! ```no_run
//! use martix_sdk::{ActivityContext, ActivityError, ActivityOptions, Client, StartOptions,
//!                  Worker, WorkerOptions, WorkflowContext, WorkflowError};
//! use std::time::Duration;
//!
//! async fn greet(ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
//!     let opts = ActivityOptions::new(Duration::from_secs(5));
//!     let greeting: String = ctx.activity("compose", &name, opts).await?;
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
//! worker.register_workflow("greet", greet).register_activity("compose", compose);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(worker.run(shutdown.clone()));
//!
//! let client = Client::connect("http://127.0.0.1:7233").await?;
//! let run = client.start_workflow(StartOptions::new("greet", "greet-1", "hello"), &"world").await?;
//! let greeting: String = run.result().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod activity;
pub mod client;
pub mod connection;
pub mod error;
pub mod history;
pub mod payload;
pub mod replayer;
pub mod saga;
pub mod worker;
pub mod workflow;

pub use activity::ActivityContext;
pub use client::{
    Client, ListOptions, NamespaceInfo, Page, PageToken, ResetPoint, StartOptions, WorkflowHandle,
};
pub use connection::ConnectOptions;
pub use error::{ActivityError, ActivityFailure, ClientError, WorkflowError};
pub use history::WorkflowHistory;
pub use martix_proto::v1 as proto;
pub use replayer::{ReplayError, Replayer};
pub use saga::{CompensationFailure, Saga};
pub use worker::{BreakerHold, BreakerReporter, BreakerState, Worker, WorkerOptions, WorkerStats};
pub use workflow::{ActivityOptions, Nondeterminism, SignalStream, WorkflowContext, WorkflowInfo};

/// The largest answer the SDK's clients accept from the engine: an answer may carry several
/// payloads of the engine's limit (a result, the events a completion appended, the inputs of
/// activities handed over eagerly) and history pages.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
