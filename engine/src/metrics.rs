//! Prometheus metrics of one engine node, served as text at `/metrics` on the HTTP port.
//! Counters and histograms are updated where things happen; gauges that describe the store
//! (backlog, open breakers) are read from it when scraped.

use crate::history::Run;
use martix_proto::v1 as pb;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowType {
    workflow_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Closed {
    workflow_type: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Attempt {
    activity_type: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActivityType {
    activity_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Backlog {
    namespace: String,
    task_queue: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabel {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Adapter {
    adapter: String,
}

fn latency() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn long_latency() -> Histogram {
    // 10 ms .. ~3 days
    Histogram::new(exponential_buckets(0.01, 2.0, 25))
}

/// The metrics of one engine node.
pub struct Metrics {
    registry: Registry,
    started: Family<WorkflowType, Counter>,
    closed: Family<Closed, Counter>,
    workflow_seconds: Family<Closed, Histogram, fn() -> Histogram>,
    attempts: Family<Attempt, Counter>,
    retries: Family<ActivityType, Counter>,
    schedule_to_start: Family<Kind, Histogram, fn() -> Histogram>,
    commit_seconds: Histogram,
    conflicts: Counter,
    decisions_ahead: Family<Outcome, Counter>,
    polls_waiting: Family<Kind, Gauge>,
    backlog: Family<Backlog, Gauge>,
    breaker_open: Family<Adapter, Gauge>,
    events_sent: Counter,
    events_projected: Counter,
    projection_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    outbox_unsent: Gauge,
    outbox_unsent_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    outbox_unprojected: Gauge,
    runs_purged: Counter,
    oldest_closed_run_age: Family<NamespaceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Label values seen, per label: callers choose type names, so their number is capped.
    seen: std::sync::Mutex<std::collections::HashSet<(u8, String)>>,
    /// One scrape at a time: scrapes reset the store gauges.
    scrape: std::sync::Mutex<()>,
}

/// Distinct workflow or activity types labelled before the rest count as `other`.
const MAX_TYPES: usize = 256;

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("martix");
        let m = Self {
            started: Family::default(),
            closed: Family::default(),
            workflow_seconds: Family::new_with_constructor(long_latency),
            attempts: Family::default(),
            retries: Family::default(),
            schedule_to_start: Family::new_with_constructor(latency),
            commit_seconds: latency(),
            conflicts: Counter::default(),
            decisions_ahead: Family::default(),
            polls_waiting: Family::default(),
            backlog: Family::default(),
            breaker_open: Family::default(),
            events_sent: Counter::default(),
            events_projected: Counter::default(),
            projection_lag: Gauge::default(),
            outbox_unsent: Gauge::default(),
            outbox_unsent_age: Gauge::default(),
            outbox_unprojected: Gauge::default(),
            runs_purged: Counter::default(),
            oldest_closed_run_age: Family::default(),
            registry: Registry::default(),
            seen: Default::default(),
            scrape: Default::default(),
        };
        registry.register(
            "workflows_started",
            "Workflow runs started, by type",
            m.started.clone(),
        );
        registry.register(
            "workflows_closed",
            "Workflow runs closed, by type and status (completed, failed, compensated, ...)",
            m.closed.clone(),
        );
        registry.register(
            "workflow_duration_seconds",
            "Start to close of workflow runs, by type and status",
            m.workflow_seconds.clone(),
        );
        registry.register(
            "activity_attempts",
            "Activity attempts reported by workers or timed out, by type and outcome",
            m.attempts.clone(),
        );
        registry.register(
            "activity_retries",
            "Failed activity attempts that were scheduled again, by type",
            m.retries.clone(),
        );
        registry.register(
            "schedule_to_start_seconds",
            "From a task becoming due to a worker receiving it, by kind (workflow, activity)",
            m.schedule_to_start.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Duration of the store transactions that write runs",
            m.commit_seconds.clone(),
        );
        registry.register(
            "store_conflicts",
            "Run writes refused because the run changed concurrently (then redone)",
            m.conflicts.clone(),
        );
        registry.register(
            "decisions_ahead",
            "Workflow decisions workers made ahead with an activity's result: recorded with \
             the result in one transaction, or refused (the run had other new events)",
            m.decisions_ahead.clone(),
        );
        registry.register(
            "long_polls_waiting",
            "Worker long polls waiting on this node, by kind",
            m.polls_waiting.clone(),
        );
        registry.register(
            "task_queue_backlog",
            "Tasks due and not taken by any worker, by queue and kind",
            m.backlog.clone(),
        );
        registry.register(
            "breaker_open",
            "Circuit breakers that workers report open, by adapter (1: open)",
            m.breaker_open.clone(),
        );
        registry.register(
            "events_sent",
            "Business events this node published to RabbitMQ and the broker confirmed",
            m.events_sent.clone(),
        );
        registry.register(
            "events_projected",
            "Business events this node folded into the read models",
            m.events_projected.clone(),
        );
        registry.register(
            "read_model_lag_seconds",
            "Age of the oldest event this node had yet to fold into the read model, last round",
            m.projection_lag.clone(),
        );
        registry.register(
            "outbox_unsent",
            "Business events in the outbox not yet confirmed by RabbitMQ",
            m.outbox_unsent.clone(),
        );
        registry.register(
            "outbox_oldest_unsent_age_seconds",
            "Age of the oldest unsent business event (0: none)",
            m.outbox_unsent_age.clone(),
        );
        registry.register(
            "outbox_unprojected",
            "Business events not yet folded into the read models",
            m.outbox_unprojected.clone(),
        );
        registry.register(
            "runs_purged",
            "Closed runs deleted with their histories once older than their namespace's retention",
            m.runs_purged.clone(),
        );
        registry.register(
            "oldest_closed_run_age_seconds",
            "Age since close of the oldest closed run a namespace keeps (0: none)",
            m.oldest_closed_run_age.clone(),
        );
        Self { registry, ..m }
    }
}

/// The status label of a closed run.
fn status_label(status: pb::WorkflowStatus) -> String {
    status
        .as_str_name()
        .trim_start_matches("WORKFLOW_STATUS_")
        .to_ascii_lowercase()
}

impl Metrics {
    /// `value` as a label of kind `kind`, or `other` once `MAX_TYPES` values were seen.
    fn label(&self, kind: u8, value: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = (kind, value.to_owned());
        if seen.contains(&key) {
            return key.1;
        }
        if seen.iter().filter(|(k, _)| *k == kind).count() >= MAX_TYPES {
            return "other".into();
        }
        seen.insert(key);
        value.to_owned()
    }

    pub(crate) fn started(&self, workflow_type: &str) {
        self.started
            .get_or_create(&WorkflowType {
                workflow_type: self.label(0, workflow_type),
            })
            .inc();
    }

    /// A run closed: `run` is its checkpoint after the close.
    pub(crate) fn closed(&self, run: &Run) {
        let labels = Closed {
            workflow_type: self.label(0, &run.workflow_type),
            status: status_label(run.status),
        };
        self.closed.get_or_create(&labels).inc();
        if let Some(end) = run.close_time {
            let secs = (end - run.start_time).max(0) as f64 / 1000.0;
            self.workflow_seconds.get_or_create(&labels).observe(secs);
        }
    }

    pub(crate) fn attempt(&self, activity_type: &str, outcome: &str, retried: bool) {
        let activity_type = &self.label(1, activity_type);
        self.attempts
            .get_or_create(&Attempt {
                activity_type: activity_type.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if retried {
            self.retries
                .get_or_create(&ActivityType {
                    activity_type: activity_type.to_owned(),
                })
                .inc();
        }
    }

    pub(crate) fn schedule_to_start(&self, kind: &str, wait: Duration) {
        self.schedule_to_start
            .get_or_create(&Kind { kind: kind.into() })
            .observe(wait.as_secs_f64());
    }

    pub(crate) fn commit(&self, took: Duration, conflict: bool) {
        self.commit_seconds.observe(took.as_secs_f64());
        if conflict {
            self.conflicts.inc();
        }
    }

    /// A decision a worker made ahead with an activity's result: recorded with it, or not
    /// (the run had other new events).
    pub(crate) fn decision_ahead(&self, recorded: bool) {
        let outcome = if recorded { "recorded" } else { "refused" };
        self.decisions_ahead
            .get_or_create(&Outcome {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub(crate) fn events_sent(&self, n: usize) {
        self.events_sent.inc_by(n as u64);
    }

    pub(crate) fn projected(&self, n: usize) {
        self.events_projected.inc_by(n as u64);
    }

    pub(crate) fn projection_lag(&self, lag_ms: i64) {
        self.projection_lag.set(lag_ms.max(0) as f64 / 1000.0);
    }

    /// Closed runs the retention deleted.
    pub(crate) fn runs_purged(&self, n: u64) {
        self.runs_purged.inc_by(n);
    }

    /// The age since close of the oldest closed run `namespace` keeps (none: 0).
    pub(crate) fn oldest_closed_run(&self, namespace: &str, closed_at: Option<i64>, now: i64) {
        self.oldest_closed_run_age
            .get_or_create(&NamespaceLabel {
                namespace: namespace.to_owned(),
            })
            .set(closed_at.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0));
    }

    /// The outbox gauges, from the store's figures read now.
    pub(crate) fn outbox(&self, status: &crate::store::events::OutboxStatus, now: i64) {
        self.outbox_unsent.set(status.unsent);
        self.outbox_unprojected.set(status.unprojected);
        self.outbox_unsent_age.set(
            status
                .oldest_unsent_at
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0),
        );
    }

    /// The text exposition, with the gauges set from what the caller read just now.
    pub(crate) fn encode(
        &self,
        polls_waiting: &[(&str, usize)],
        backlog: &[crate::store::Backlog],
        open_breakers: &[String],
    ) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        for (kind, n) in polls_waiting {
            self.polls_waiting
                .get_or_create(&Kind {
                    kind: (*kind).into(),
                })
                .set(*n as i64);
        }
        self.backlog.clear();
        for b in backlog {
            self.backlog
                .get_or_create(&Backlog {
                    namespace: b.namespace.clone(),
                    task_queue: b.queue.clone(),
                    kind: b.kind.as_str().into(),
                })
                .set(b.tasks);
        }
        self.breaker_open.clear();
        for adapter in open_breakers {
            self.breaker_open
                .get_or_create(&Adapter {
                    adapter: adapter.clone(),
                })
                .set(1);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Dispatch, StartParams, new_run};
    use crate::ids::{Namespace, RunId, TaskQueue, WorkflowId, WorkflowType};

    /// Every metric, each with one sample, encoded.
    fn all_recorded() -> String {
        let m = Metrics::default();
        let params = StartParams::new(
            Namespace::parse("default").unwrap(),
            WorkflowId::parse("w-1").unwrap(),
            WorkflowType::parse("thing").unwrap(),
            TaskQueue::parse("q").unwrap(),
        );
        let mut run = new_run(&params, RunId::new(), 1_000, Dispatch::nobody(1_000))
            .commit
            .run;
        run.status = pb::WorkflowStatus::Completed;
        run.close_time = Some(3_000);
        m.started("thing");
        m.closed(&run);
        m.attempt("call", "failed", true);
        m.schedule_to_start("activity", Duration::from_millis(5));
        m.commit(Duration::from_millis(2), true);
        m.decision_ahead(true);
        m.events_sent(1);
        m.projected(1);
        m.projection_lag(10);
        m.runs_purged(1);
        m.oldest_closed_run("default", Some(1_000), 2_000);
        m.outbox(&crate::store::events::OutboxStatus::default(), 2_000);
        m.encode(
            &[("workflow", 1)],
            &[crate::store::Backlog {
                namespace: "default".into(),
                queue: "q".into(),
                kind: crate::store::TaskKind::Activity,
                tasks: 2,
            }],
            &["upstream".into()],
        )
    }

    /// The Grafana dashboard in deploy/ charts only metrics the engine exports: a renamed
    /// metric fails here, not on someone's empty chart.
    #[test]
    fn the_dashboard_charts_only_exported_metrics() {
        let exported = all_recorded();
        let dashboard = include_str!("../../deploy/compose/grafana/dashboards/martix.json");
        let mut charted = 0;
        for (i, _) in dashboard.match_indices("martix_") {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exported.contains(&format!("\n{name}{{"))
                    || exported.contains(&format!("\n{name} ")),
                "the dashboard charts {name}, which the engine does not export:\n{exported}"
            );
            charted += 1;
        }
        assert!(charted >= 14, "{charted}");
        // And every metric the engine exports is on the dashboard but a few internals.
        for line in exported.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split_whitespace().next().unwrap();
                if ["martix_decisions_ahead", "martix_outbox_unprojected"].contains(&name) {
                    continue;
                }
                assert!(dashboard.contains(name), "{name} is not on the dashboard");
            }
        }
    }
}
