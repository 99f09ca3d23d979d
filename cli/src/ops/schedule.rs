//! `martix schedule create|list|describe|pause|resume|trigger|backfill|delete` (operators): a
//! workflow started at each time of a cron expression (in a time zone) or an interval.

use super::format::{print_json, when};
use super::workflow::json_flag;
use super::{Conn, Output, client};
use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use martix_proto::v1 as pb;
use martix_sdk::schedule::{
    Schedule, ScheduleAction, ScheduleActionRecord, ScheduleDescription, ScheduleOverlap,
    ScheduleSpec, ScheduleSummary,
};
use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Overlap {
    /// The new time is skipped while the last run runs (the default).
    Skip,
    /// One time waits for the last run to close; more are skipped.
    BufferOne,
    /// Every time starts a run.
    AllowAll,
    /// The last run is asked to cancel, and the new one starts.
    CancelOther,
}

#[derive(Subcommand)]
pub(crate) enum ScheduleCmd {
    /// Create a schedule: its workflow is started at each time of `--cron` (in
    /// `--timezone`) or every `--every`, one run per time ("<NAME>-<time>").
    Create {
        name: String,
        /// Five fields: minute hour day-of-month month day-of-week ("0 2 * * *").
        #[arg(long, required_unless_present = "every", conflicts_with = "every")]
        cron: Option<String>,
        /// A fixed interval instead ("15m", "1h"), counted from the Unix epoch.
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Option<Duration>,
        /// The cron expression's time zone ("Europe/Paris"); default UTC.
        #[arg(long)]
        timezone: Option<String>,
        /// The workflow type to start.
        #[arg(long = "type")]
        workflow_type: String,
        /// Its task queue.
        #[arg(long)]
        queue: String,
        /// Its input (JSON, or @FILE).
        #[arg(long, default_value = "null")]
        input: String,
        /// What to do when the last run still runs at the next time.
        #[arg(long, value_enum, default_value = "skip")]
        overlap: Overlap,
        /// A time the engine could not act on when it came is acted on if at most this old.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        catchup_window: Duration,
        /// Delay each run by up to this much (a fixed share per time).
        #[arg(long, value_parser = humantime::parse_duration)]
        jitter: Option<Duration>,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
    },
    /// Every schedule of the namespace, with its next time.
    List,
    /// A schedule: its spec, its next 5 times, its recent actions, what runs.
    Describe { name: String },
    /// Pause a schedule, saying why: it acts on no time until resumed.
    Pause {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Resume a schedule; times that came while it was paused are not acted on.
    Resume {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Start the schedule's workflow now (by its overlap policy).
    Trigger { name: String },
    /// Start the schedule's workflow for every time it would have acted on in [FROM, TO]
    /// (RFC 3339), whatever runs; at most 1,000 times.
    Backfill {
        name: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Delete a schedule; the runs it started go on.
    Delete { name: String },
}

/// Runs one `martix schedule` command.
pub(crate) async fn schedule(conn: Conn, cmd: ScheduleCmd) -> Result<()> {
    let c = client(&conn).await?;
    let json = conn.output == Output::Json;
    match cmd {
        ScheduleCmd::Create {
            name,
            cron,
            every,
            timezone,
            workflow_type,
            queue,
            input,
            overlap,
            catchup_window,
            jitter,
            paused,
        } => {
            let input = json_flag("--input", &input)?;
            let spec = match (cron, every) {
                (Some(cron), _) => {
                    ScheduleSpec::cron(cron).in_timezone(timezone.unwrap_or_default())
                }
                (None, Some(every)) => ScheduleSpec::every(every),
                (None, None) => bail!("give --cron or --every"),
            };
            let mut schedule = Schedule::new(
                spec.jitter(jitter.unwrap_or_default()),
                ScheduleAction::start_by_name(workflow_type, queue, &input)?,
            )
            .overlap(match overlap {
                Overlap::Skip => ScheduleOverlap::Skip,
                Overlap::BufferOne => ScheduleOverlap::BufferOne,
                Overlap::AllowAll => ScheduleOverlap::AllowAll,
                Overlap::CancelOther => ScheduleOverlap::CancelOther,
            })
            .catchup_window(catchup_window);
            if paused {
                schedule = schedule.paused("created paused");
            }
            c.create_schedule(&name, schedule).await?;
            let d = c.describe_schedule(&name).await?;
            match d.next_times.first() {
                Some(t) => println!("schedule {name} created; next run at {}", when(Some(*t))),
                None => println!("schedule {name} created (paused)"),
            }
        }
        ScheduleCmd::List => {
            let all = c.list_schedules().await?;
            if json {
                print_json(&pb::ListSchedulesResponse {
                    schedules: all.into_iter().map(ScheduleSummary::into_proto).collect(),
                    next_page_token: Vec::new(),
                })?;
            } else if all.is_empty() {
                println!("no schedules in this namespace");
            } else {
                println!(
                    "{:<32} {:<24} {:<20} NEXT",
                    "SCHEDULE", "WHEN", "WORKFLOW TYPE"
                );
                for s in &all {
                    println!(
                        "{:<32} {:<24} {:<20} {}",
                        s.schedule_id,
                        s.spec.to_string(),
                        s.workflow_type,
                        if s.paused {
                            "paused".to_owned()
                        } else {
                            when(s.next_time)
                        }
                    );
                }
            }
        }
        ScheduleCmd::Describe { name } => {
            let d = c.describe_schedule(&name).await?;
            if json {
                print_json(&d.into_proto())?;
            } else {
                print_schedule(&name, &d);
            }
        }
        ScheduleCmd::Pause { name, reason } => {
            c.pause_schedule(&name, &reason).await?;
            println!("schedule {name} paused");
        }
        ScheduleCmd::Resume { name, reason } => {
            c.resume_schedule(&name, &reason).await?;
            println!("schedule {name} resumed");
        }
        ScheduleCmd::Trigger { name } => {
            for a in c.trigger_schedule(&name).await? {
                print_action(&a);
            }
        }
        ScheduleCmd::Backfill { name, from, to } => {
            let (from, to) = (rfc3339("--from", &from)?, rfc3339("--to", &to)?);
            let actions = c.backfill_schedule(&name, from, to).await?;
            if actions.is_empty() {
                println!("no time of schedule {name} falls in that range");
            }
            for a in &actions {
                print_action(a);
            }
        }
        ScheduleCmd::Delete { name } => {
            c.delete_schedule(&name).await?;
            println!("schedule {name} deleted (the runs it started go on)");
        }
    }
    Ok(())
}

/// A time an operator gives (RFC 3339).
fn rfc3339(flag: &str, raw: &str) -> Result<SystemTime> {
    let t: SystemTime = humantime::parse_rfc3339_weak(raw)
        .with_context(|| format!("{flag} is not an RFC 3339 time (2026-12-01T02:00:00Z)"))?;
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .context(format!("{flag} is before 1970"))?;
    if d.as_secs() > 253_402_300_799 {
        bail!("{flag} is after 9999");
    }
    Ok(t)
}

fn print_schedule(name: &str, d: &ScheduleDescription) {
    let s = &d.schedule;
    println!("schedule   {name}");
    println!("when       {}", s.spec);
    let input: serde_json::Value = s.action.input().unwrap_or_default();
    println!(
        "starts     {} on queue {} with {input}",
        s.action.workflow_type, s.action.task_queue,
    );
    println!("overlap    {}", s.overlap.as_str());
    if s.paused {
        println!("paused     {}", s.note);
    }
    println!(
        "counts     {} started, {} skipped, {} missed",
        d.started, d.skipped, d.missed
    );
    if let Some(r) = &d.running {
        println!("running    {} (run {})", r.workflow_id, r.run_id);
    }
    if let Some(b) = d.buffered_time {
        println!("buffered   {} waits for the running run", when(Some(b)));
    }
    for (i, t) in d.next_times.iter().enumerate() {
        println!(
            "{}{}",
            if i == 0 { "next       " } else { "           " },
            when(Some(*t))
        );
    }
    if !d.recent_actions.is_empty() {
        println!("recent actions:");
        for a in &d.recent_actions {
            print_action(a);
        }
    }
}

fn print_action(a: &ScheduleActionRecord) {
    println!(
        "  {}  {}{}",
        when(a.scheduled_time),
        a.outcome,
        a.run
            .as_ref()
            .map(|e| format!(": {} (run {})", e.workflow_id, e.run_id))
            .unwrap_or_default()
    );
}
