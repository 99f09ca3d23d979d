//! A test environment (feature `testing`): a real engine in the test's own process, on an
//! in-memory SQLite database, whose clock a test skips ahead, so a workflow that sleeps for a
//! month completes in milliseconds.
//!
//! [`TestEnv`] serves the engine on a free loopback port, without authentication, in namespace
//! `default`; workers and clients talk to it over gRPC as they would to any engine, so what a
//! test exercises is what runs in production. Activities are mocked by type: register a
//! closure for the activity type on the test's worker ([`Worker::activity`]), with the type's
//! input and output. [`TestEnv::assert_replays`] replays a finished run's history against the
//! current code ([`Replayer`]), which catches non-determinism the run itself would only show
//! on a worker's crash.
//!
//! Time: the engine's clock is the wall clock plus what the test skipped ([`TestEnv::sleep`]),
//! so leases, backoffs and long polls keep running on real time in between; a skip fires the
//! timers it made due at once. `ctx.now()` in workflows and [`TestEnv::now`] read the skipped
//! clock.
//!
//! # Testing
//!
//! ```no_run
//! use martix_sdk::testing::TestEnv;
//! use martix_sdk::{Activity, ActivityError, Replayer, StartOptions, Workflow, WorkflowContext,
//!                  WorkflowError};
//! use std::time::Duration;
//!
//! struct Remind;
//! impl Activity for Remind {
//!     const NAME: &'static str = "remind";
//!     type Input = String;
//!     type Output = String;
//! }
//!
//! struct Renewal;
//! impl Workflow for Renewal {
//!     const NAME: &'static str = "renewal";
//!     type Input = String;
//!     type Output = String;
//! }
//!
//! async fn renewal(ctx: WorkflowContext, customer: String) -> Result<String, WorkflowError> {
//!     ctx.sleep(Duration::from_secs(30 * 24 * 3600)).await; // a month
//!     Ok(ctx.activity(Remind, &customer).await?)
//! }
//!
//! #[tokio::test]
//! async fn a_customer_is_reminded_after_a_month() {
//!     let env = TestEnv::start().await.unwrap();
//!     let mut worker = env.worker("renewals");
//!     worker
//!         .workflow(Renewal, renewal)
//!         // The mock of activity `Remind`: its input and output are `Remind`'s.
//!         .activity(Remind, |_ctx, customer: String| async move {
//!             Ok::<_, ActivityError>(format!("reminded {customer}"))
//!         });
//!     env.run(worker);
//!
//!     let run = env
//!         .client()
//!         .start(Renewal, StartOptions::for_id("renewal-1", "renewals"), &"ada".to_owned())
//!         .await
//!         .unwrap();
//!     env.sleep(Duration::from_secs(30 * 24 * 3600)).await; // fires the timer at once
//!     assert_eq!(run.result::<String>().await.unwrap(), "reminded ada");
//!
//!     let mut replayer = Replayer::new();
//!     replayer.workflow(Renewal, renewal);
//!     env.assert_replays(&replayer, &run).await;
//! }
//! # fn main() {}
//! ```

use crate::{Client, Replayer, Worker, WorkerOptions, WorkflowHandle};
use martix_engine::clock::{Clock, SkippableClock};
use martix_engine::edge::EdgeConfig;
use martix_engine::store::{SqliteStore, TaskKind};
use martix_engine::{Engine, EngineConfig, Server, ServerConfig};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How long [`TestEnv::sleep`] waits for the workflows to settle before it gives up.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// Why a test environment could not start.
#[derive(Debug, thiserror::Error)]
#[error("the test environment cannot start: {0}")]
pub struct StartError(String);

/// An engine in this process on in-memory SQLite with a skippable clock, served on a free
/// loopback port. Everything it runs (the engine, the workers of [`TestEnv::run`]) stops when
/// it is dropped.
pub struct TestEnv {
    engine: Arc<Engine>,
    clock: SkippableClock,
    endpoint: String,
    client: Client,
    shutdown: CancellationToken,
}

impl TestEnv {
    /// Starts an engine on a fresh in-memory database, in namespace `default`, without
    /// authentication, on a free port of 127.0.0.1.
    ///
    /// # Errors
    /// When the database cannot be created or no port can be bound.
    pub async fn start() -> Result<Self, StartError> {
        let store = SqliteStore::connect("sqlite::memory:")
            .await
            .map_err(|e| StartError(format!("in-memory SQLite: {e}")))?;
        let clock = SkippableClock::new();
        let mut config = EngineConfig::default();
        // Polls that find nothing answer soon, so a worker stopped with the test goes quietly.
        config.long_poll_timeout = Duration::from_secs(5);
        let engine = Engine::with_clock(Arc::new(store), config, Arc::new(clock.clone()));
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let server = Server::bind(
            engine.clone(),
            &ServerConfig {
                grpc_addr: loopback,
                http_addr: loopback,
                metrics_addr: None,
                shutdown_grace: Duration::from_secs(1),
                edge: EdgeConfig::default(),
                tls: None,
                events: Default::default(),
            },
        )
        .await
        .map_err(|e| StartError(e.to_string()))?;
        let endpoint = format!("http://{}", server.grpc_addr());
        let shutdown = CancellationToken::new();
        let serving = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = server.serve(serving).await {
                tracing::error!(error = %e, "the test environment's engine stopped");
            }
        });
        let client = Client::connect(endpoint.clone())
            .await
            .map_err(|e| StartError(format!("cannot connect to {endpoint}: {e}")))?;
        Ok(Self {
            engine,
            clock,
            endpoint,
            client,
            shutdown,
        })
    }

    /// The engine's gRPC address (`http://127.0.0.1:<port>`), for a [`Client`] or [`Worker`]
    /// of other options.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client of the engine, namespace `default`.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A worker of `task_queue` on the engine, to register workflows and activity mocks on
    /// and hand to [`TestEnv::run`]. Its shutdown grace is short: a test's worker stops with
    /// the test.
    pub fn worker(&self, task_queue: impl Into<String>) -> Worker {
        let mut options = WorkerOptions::new(task_queue);
        options.workflow_pollers = 4;
        options.shutdown_grace = Duration::from_secs(1);
        Worker::new(&self.endpoint, options).expect("the test engine's endpoint is a valid URI")
    }

    /// Runs `worker` until the environment is dropped.
    pub fn run(&self, worker: Worker) {
        tokio::spawn(worker.run(self.shutdown.child_token()));
    }

    /// Lets `duration` pass at once: waits until no workflow task is pending or running
    /// (every workflow waits on a timer, an activity or a signal), moves the engine's clock
    /// ahead by `duration`, fires the timers that came due (retries whose backoff ended are
    /// handed out, activity attempts whose timeout passed time out), and waits again until
    /// the workflows have reacted. Activities in flight are not waited for.
    ///
    /// # Panics
    /// When workflow tasks are still pending after 10 s (a workflow task that keeps failing,
    /// or no worker for the queue), or the engine cannot read its database.
    pub async fn sleep(&self, duration: Duration) {
        self.settle().await;
        self.clock
            .skip(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX));
        self.engine
            .catch_up()
            .await
            .expect("the test engine fires what came due");
        self.settle().await;
    }

    /// The engine's time: the wall clock plus what [`TestEnv::sleep`] skipped.
    pub fn now(&self) -> SystemTime {
        let ms = u64::try_from(self.clock.now()).unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// Replays the history of `run` (which may still be open) against the code registered on
    /// `replayer`, as a worker that lost its cache would.
    ///
    /// # Panics
    /// When the history cannot be read or does not replay (non-determinism, a panic), naming
    /// the workflow and why.
    pub async fn assert_replays(&self, replayer: &Replayer, run: &WorkflowHandle) {
        let history = run
            .export_history()
            .await
            .unwrap_or_else(|e| panic!("cannot read the history of {}: {e}", run.workflow_id));
        if let Err(e) = replayer.replay_history(&history) {
            panic!("{} does not replay: {e}", run.workflow_id);
        }
    }

    /// Waits until no workflow task is pending or running, whatever its queue.
    async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        loop {
            // Due by the end of time: every open workflow task, held by a worker or not.
            let open = self
                .engine
                .store()
                .backlog(i64::MAX)
                .await
                .expect("the test engine reads its database");
            if !open.iter().any(|b| b.kind == TaskKind::Workflow) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "workflow tasks still pending after {SETTLE_LIMIT:?} (is a worker running for \
                 their queue, and does its workflow task keep failing?): {open:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
