//! `WorkerOptions`: a worker's names and limits (its queue and namespace, cache size, slots,
//! pollers, shutdown grace, eager work and deciding ahead) and their defaults.

use std::time::Duration;

/// Limits and names of a worker.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// The queue to poll.
    pub task_queue: String,
    /// The namespace of the queue.
    pub namespace: String,
    /// Shown in history as who did the work.
    pub identity: String,
    /// Live runs kept between workflow tasks; a run not in the cache is replayed from history.
    pub max_cached_workflows: usize,
    /// Workflow tasks run at once.
    pub max_concurrent_workflow_tasks: usize,
    /// Activities run at once.
    pub max_concurrent_activities: usize,
    /// Concurrent long polls for workflow tasks (32 by default, at most the workflow slots
    /// less one). A task committed while one of them waits, or is on its way to the engine, is
    /// written already leased to it and handed over in memory; one that finds none is claimed
    /// later with a transaction of its own. Waiting polls cost the engine little: a queue's
    /// polls on a node look in the store about once a second between them, not each.
    pub workflow_pollers: usize,
    /// Concurrent long polls for activity tasks.
    pub activity_pollers: usize,
    /// How long in-flight tasks may finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Activities a workflow task schedules on this queue come back with its completion,
    /// leased to this worker, up to this many at a time (0: always poll for them).
    pub max_eager_activities: usize,
    /// When an activity of a run this worker keeps cached completes, the worker runs the
    /// workflow's next decision at once and reports it with the result: one request and one
    /// transaction instead of two, recorded if the run has nothing else new.
    pub decide_ahead: bool,
}

impl WorkerOptions {
    /// Defaults for a worker of `task_queue` in namespace `default`.
    pub fn new(task_queue: impl Into<String>) -> Self {
        Self {
            task_queue: task_queue.into(),
            namespace: "default".into(),
            // The host too: workers in containers are all process 1.
            identity: format!(
                "worker-{}@{}",
                std::process::id(),
                std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into())
            ),
            max_cached_workflows: 1000,
            max_concurrent_workflow_tasks: 64,
            max_concurrent_activities: 256,
            // 32: under load a poller is mostly between one task and the next, and a new
            // run's first workflow task that finds no poll waiting or on its way costs a claim
            // transaction of its own; with this many, one usually is.
            workflow_pollers: 32,
            activity_pollers: 2,
            shutdown_grace: Duration::from_secs(10),
            max_eager_activities: 8,
            decide_ahead: true,
        }
    }

    /// Sets the cache size (0 replays every task from the full history).
    pub fn max_cached_workflows(mut self, n: usize) -> Self {
        self.max_cached_workflows = n;
        self
    }

    /// Sets the namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }
}
