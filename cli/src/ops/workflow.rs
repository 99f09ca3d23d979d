//! `martix workflow ...`: start, list, describe, history, result and signal one workflow,
//! and the steering commands (cancel, terminate, reset, retry), whose batch form is in
//! `batch`.

use super::batch::{Batch, Op, steer};
use super::format::{event_line, print_json, show_payload, when};
use super::{Conn, Output, RESULT_WAIT, client, wait_result};
use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use futures::TryStreamExt;
use martix_proto::v1 as pb;
use martix_sdk::{ListOptions, StartOptions, WorkflowDescription, WorkflowStatus, WorkflowSummary};
use std::time::Duration;

/// A status `martix workflow list --status` filters on.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Status {
    Running,
    Completed,
    Failed,
    Canceled,
    Terminated,
    ContinuedAsNew,
    TimedOut,
    Compensated,
    /// Running and paused by an operator.
    Paused,
}

impl From<Status> for WorkflowStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Running => WorkflowStatus::Running,
            Status::Completed => WorkflowStatus::Completed,
            Status::Failed => WorkflowStatus::Failed,
            Status::Canceled => WorkflowStatus::Canceled,
            Status::Terminated => WorkflowStatus::Terminated,
            Status::ContinuedAsNew => WorkflowStatus::ContinuedAsNew,
            Status::TimedOut => WorkflowStatus::TimedOut,
            Status::Compensated => WorkflowStatus::Compensated,
            // A paused run is running; `list` keeps those with a pause.
            Status::Paused => WorkflowStatus::Running,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum WorkflowCmd {
    /// Start a workflow (or find the running run of its id).
    Start {
        #[arg(long = "type")]
        workflow_type: String,
        #[arg(long)]
        id: String,
        /// JSON, or @file to read it from a file.
        #[arg(long, default_value = "null")]
        input: String,
        /// The queue its workers poll (no default: a misspelled or forgotten queue would wait
        /// for a worker forever).
        #[arg(long)]
        task_queue: String,
    },
    /// List runs, newest first.
    List {
        #[arg(long, value_enum)]
        status: Vec<Status>,
        #[arg(long = "type")]
        workflow_type: Option<String>,
        /// Workflow ids starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Runs this query selects: `customer = "c42" AND status = "running" AND started >
        /// "2026-12-01"` (fields workflow_id, workflow_type, task_queue, status, started,
        /// closed, and search attributes; = != < <= > >=; AND, OR, parentheses).
        #[arg(long)]
        query: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Status, pending activities and timers of a workflow's latest run.
    Describe { id: String },
    /// The history of a workflow's latest run (`--output json`: its events and the ids of the
    /// run, what the replayer reads).
    History {
        id: String,
        /// Keep printing new events until the run closes.
        #[arg(long)]
        follow: bool,
    },
    /// Write runs' histories to a folder, one JSON file each (what `martix replay --dir` and
    /// `Replayer::replay_json` read), the most recently started first.
    Export {
        #[command(flatten)]
        runs: super::replay::Runs,
        /// The folder (created if missing).
        #[arg(long)]
        to: std::path::PathBuf,
    },
    /// The result of a workflow.
    Result {
        id: String,
        /// Wait for the run to close.
        #[arg(long)]
        wait: bool,
    },
    /// Ask a workflow's query handler and print its answer (JSON). The run's code answers on
    /// a worker of its task queue; nothing about the run changes. Open and closed runs alike.
    Query {
        id: String,
        /// The query's name (`status`).
        name: String,
        /// The query's arguments (JSON, or @FILE).
        #[arg(long, default_value = "null")]
        args: String,
        /// A run of the workflow other than its latest.
        #[arg(long)]
        run_id: Option<String>,
    },
    /// Ask a workflow's update handler to change it and print the handler's result (JSON).
    /// The workflow's validator may refuse it (nothing changes then, and the reason is
    /// printed); an accepted update is recorded in history and its handler runs in the
    /// workflow.
    Update {
        id: String,
        /// The update's name (`change_shipping_address`).
        name: String,
        /// The update's arguments (JSON, or @FILE).
        #[arg(long, default_value = "null")]
        args: String,
        /// Names the update: run again with the same id, the command answers the same update
        /// instead of sending another (a retry after a lost answer). Default: a fresh id.
        #[arg(long)]
        update_id: Option<String>,
    },
    /// Send a signal.
    Signal {
        id: String,
        name: String,
        #[arg(long, default_value = "null")]
        input: String,
        /// Signal at most once per request id (a retried command does not signal twice).
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Ask a workflow to cancel (it decides; a saga compensates).
    Cancel {
        #[arg(required_unless_present_any = ["prefix", "query"])]
        id: Option<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        batch: Batch,
    },
    /// Stop a workflow now.
    Terminate {
        #[arg(required_unless_present_any = ["prefix", "query"])]
        id: Option<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        batch: Batch,
    },
    /// Start a new run from a workflow-task boundary; the old run is terminated.
    Reset {
        #[arg(required_unless_present_any = ["prefix", "query"])]
        id: Option<String>,
        /// `last-good`, `first`, or a WorkflowTaskCompleted event id.
        #[arg(long, default_value = "last-good")]
        to: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        batch: Batch,
    },
    /// Run now the activities that wait for their next attempt.
    Retry {
        #[arg(required_unless_present_any = ["prefix", "query"])]
        id: Option<String>,
        /// Only this activity.
        #[arg(long)]
        activity: Option<String>,
        /// Start again from attempt 1.
        #[arg(long)]
        reset_attempts: bool,
        #[command(flatten)]
        batch: Batch,
    },
    /// Pause a workflow: none of its tasks is handed out until it is resumed (tasks running
    /// now finish; results, timers and signals are recorded).
    Pause {
        #[arg(required_unless_present_any = ["prefix", "query"])]
        id: Option<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        batch: Batch,
    },
    /// Resume a paused workflow.
    Resume {
        #[arg(required_unless_present_any = ["prefix", "query"])]
        id: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        batch: Batch,
    },
}

/// A JSON value given to `flag` (`--input`, `--args`), inline or as @FILE.
pub(super) fn json_flag(flag: &str, raw: &str) -> Result<serde_json::Value> {
    let text = match raw.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => raw.to_owned(),
    };
    serde_json::from_str(&text).with_context(|| format!("{flag} is not valid JSON"))
}

/// Runs one `martix workflow` command.
pub(crate) async fn run(conn: Conn, cmd: WorkflowCmd) -> Result<()> {
    let c = client(&conn).await?;
    let json = conn.output == Output::Json;
    match cmd {
        WorkflowCmd::Start {
            workflow_type,
            id,
            input,
            task_queue,
        } => {
            let input = json_flag("--input", &input)?;
            let run = c
                .start_workflow(StartOptions::new(workflow_type, &id, task_queue), &input)
                .await?;
            if json {
                print_json(&pb::StartWorkflowResponse {
                    run_id: run.run_id,
                    started: run.started,
                })?;
            } else if run.started {
                println!("started {id} run {}", run.run_id);
            } else {
                println!("{id} is already running: run {}", run.run_id);
            }
        }
        WorkflowCmd::List {
            status,
            workflow_type,
            prefix,
            query,
            limit,
        } => {
            let paused_only = status.iter().any(|s| matches!(s, Status::Paused));
            if paused_only && status.len() > 1 {
                bail!("--status paused cannot be combined with another status");
            }
            let mut options = ListOptions::new().page_size(limit);
            for s in status {
                options = options.status(s.into());
            }
            if let Some(t) = workflow_type {
                options = options.workflow_type(t);
            }
            if let Some(p) = prefix {
                options = options.workflow_id_prefix(p);
            }
            if let Some(q) = query {
                options = options.query(q);
            }
            let mut page = c.list_workflows(&options).await?;
            if paused_only {
                // Paused runs are running runs with a pause: the page's others are left out.
                page.items.retain(|w| w.paused.is_some());
            }
            if json {
                // The wire form, as the engine answered.
                print_json(&pb::ListWorkflowsResponse {
                    executions: page
                        .items
                        .into_iter()
                        .map(WorkflowSummary::into_proto)
                        .collect(),
                    next_page_token: page
                        .next_page_token
                        .map_or_else(Vec::new, |t| t.as_bytes().to_vec()),
                })?;
            } else {
                println!(
                    "{:<40} {:<14} {:<12} {:<21} {:>7}",
                    "WORKFLOW ID", "TYPE", "STATUS", "STARTED", "EVENTS"
                );
                for w in &page.items {
                    let status = if w.paused.is_some() {
                        "paused".to_owned()
                    } else {
                        w.status.to_string()
                    };
                    println!(
                        "{:<40} {:<14} {:<12} {:<21} {:>7}",
                        w.workflow_id,
                        w.workflow_type,
                        status,
                        when(w.start_time),
                        w.history_length
                    );
                }
                if page.next_page_token.is_some() {
                    println!("(more: raise --limit)");
                }
            }
        }
        WorkflowCmd::Describe { id } => {
            let d = c.handle(&id).describe().await?;
            if json {
                print_json(&d.into_proto())?;
            } else {
                print_description(&id, &d);
            }
        }
        WorkflowCmd::Export { runs, to } => super::replay::export(&c, runs, &to).await?,
        WorkflowCmd::History { id, follow } => {
            // Pinned to the run latest now: the JSON names the run its events are of.
            let run = c.handle(&id).pinned().await?;
            let events = if follow {
                let mut all = Vec::new();
                let mut events = std::pin::pin!(run.follow_history());
                while let Some(e) = events.try_next().await? {
                    if json {
                        all.push(e);
                    } else {
                        println!("{}", event_line(&e));
                    }
                }
                all
            } else {
                let all = run.history().await?;
                if !json {
                    for e in &all {
                        println!("{}", event_line(e));
                    }
                }
                all
            };
            if json {
                // The events with the ids of their run, which the Replayer gives the code.
                print_json(&martix_sdk::WorkflowHistory::new(
                    c.namespace(),
                    run.workflow_id,
                    run.run_id,
                    events,
                ))?;
            }
        }
        WorkflowCmd::Result { id, wait } => {
            let wait = if wait { RESULT_WAIT } else { Duration::ZERO };
            let r = wait_result(&c.handle(&id), wait).await?;
            let (status, closed, continued) = (r.status, r.closed, r.new_run_id.is_some());
            let failure = r.failure.clone();
            // The wire form, as the engine answered: JSON, and the result's bytes as they are.
            let raw = r.into_proto();
            if json {
                print_json(&raw)?;
            } else if !closed {
                println!("{id} is still {status}");
            } else {
                println!("status  {status}");
                match &failure {
                    Some(f) => println!("failure {} ({})", f.message, f.error_type),
                    None => println!("result  {}", show_payload(raw.result.as_ref())),
                }
            }
            if closed && !status.is_success() && !continued {
                bail!("workflow '{id}' did not complete: it is {status}");
            }
        }
        WorkflowCmd::Query {
            id,
            name,
            args,
            run_id,
        } => {
            let args = json_flag("--args", &args)?;
            let answer: serde_json::Value = c
                .run_handle(&id, run_id.unwrap_or_default())
                .query_by_name(&name, &args)
                .await?;
            print_json(&answer)?;
        }
        WorkflowCmd::Update {
            id,
            name,
            args,
            update_id,
        } => {
            let args = json_flag("--args", &args)?;
            let handle = c.handle(&id);
            let answer: serde_json::Value = match update_id {
                Some(u) => handle.update_with_id(&u, &name, &args).await?,
                None => handle.update_by_name(&name, &args).await?,
            };
            print_json(&answer)?;
        }
        WorkflowCmd::Signal {
            id,
            name,
            input,
            request_id,
        } => {
            let input = json_flag("--input", &input)?;
            c.handle(&id)
                .signal_by_name_once(&name, &input, &request_id)
                .await?;
            println!("signal {name} sent to {id}");
        }
        WorkflowCmd::Cancel { id, reason, batch } => {
            steer(&c, Op::Cancel(reason), id, batch).await?;
        }
        WorkflowCmd::Terminate { id, reason, batch } => {
            steer(&c, Op::Terminate(reason), id, batch).await?;
        }
        WorkflowCmd::Reset {
            id,
            to,
            reason,
            batch,
        } => {
            let to = match to.as_str() {
                "last-good" => 0,
                "first" => -1,
                n => n
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .context("--to takes last-good, first or an event id")?,
            };
            steer(&c, Op::Reset { to, reason }, id, batch).await?;
        }
        WorkflowCmd::Pause { id, reason, batch } => {
            steer(&c, Op::Pause(reason), id, batch).await?;
        }
        WorkflowCmd::Resume { id, reason, batch } => {
            steer(&c, Op::Resume(reason), id, batch).await?;
        }
        WorkflowCmd::Retry {
            id,
            activity,
            reset_attempts,
            batch,
        } => {
            let op = Op::Retry {
                activity: activity.unwrap_or_default(),
                reset_attempts,
            };
            steer(&c, op, id, batch).await?;
        }
    }
    Ok(())
}

/// `martix workflow describe` as a table.
fn print_description(id: &str, d: &WorkflowDescription) {
    let info = &d.summary;
    println!("workflow   {id}");
    println!("run        {}", info.run_id);
    println!("type       {}", info.workflow_type);
    let open = info.status == WorkflowStatus::Running;
    if !open {
        println!("queue      {}", info.task_queue);
    } else if d.pollers.is_empty() {
        println!(
            "queue      {} (no worker has polled it in the last minute)",
            info.task_queue
        );
    } else {
        let mut who: Vec<String> = d
            .pollers
            .iter()
            .map(|p| format!("{} ({})", p.identity, p.kind))
            .collect();
        who.dedup();
        println!(
            "queue      {} (polled by {})",
            info.task_queue,
            who.join(", ")
        );
    }
    println!(
        "status     {}{}",
        info.status,
        if d.cancel_requested {
            " (cancel requested)"
        } else {
            ""
        }
    );
    if let Some(pause) = &info.paused {
        println!(
            "paused     since {} by {}: {} (martix workflow resume {id})",
            when(pause.since),
            pause.by,
            pause.reason
        );
    }
    if let Some(attention) = &info.attention {
        println!(
            "attention  since {}: {}",
            when(attention.since),
            attention.reason
        );
    }
    println!("started    {}", when(info.start_time));
    println!("closed     {}", when(info.close_time));
    println!("events     {}", info.history_length);
    if let Some(w) = &d.pending_workflow_task {
        println!(
            "workflow task: attempt {}{}{}",
            w.attempt,
            if w.started {
                ", running"
            } else {
                ", waiting for a worker"
            },
            w.last_failure
                .as_ref()
                .map_or(String::new(), |f| format!(", last failure: {}", f.message))
        );
    }
    if !d.pending_activities.is_empty() {
        println!("pending activities:");
        for a in &d.pending_activities {
            let state = a.state.as_str();
            println!(
                "  {:<8} {:<20} {:<12} attempt {:<3} next {:<21} last failure: {}",
                a.activity_id,
                a.activity_type,
                state,
                a.attempt,
                when(a.next_attempt_time),
                a.last_failure
                    .as_ref()
                    .map_or("-".into(), |f| format!("{} ({})", f.message, f.error_type))
            );
            if let Some((breaker, since)) = &a.parked_behind {
                println!(
                    "           parked behind the {breaker} breaker since {} (no attempt counted; released when a worker reports it closed)",
                    when(*since)
                );
            }
        }
    }
    for t in &d.pending_timers {
        println!("timer {} fires {}", t.timer_id, when(t.fire_time));
    }
    if let Some(p) = &d.parent {
        println!("parent     {} (run {})", p.workflow_id, p.run_id);
    }
    for c in &d.pending_children {
        println!(
            "child {} ({}) {}{}, if this run closes first: {:?}",
            c.workflow_id,
            c.workflow_type,
            c.run_id
                .as_deref()
                .map_or("starting".to_owned(), |r| format!("running, run {r}")),
            if c.cancel_requested {
                ", cancel requested"
            } else {
                ""
            },
            c.parent_close_policy
        );
    }
    for b in &d.open_breakers {
        println!(
            "open breaker: {} on worker {} since {}",
            b.adapter,
            b.worker,
            when(b.since)
        );
    }
}
