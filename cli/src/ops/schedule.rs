//! `martix schedule create|list|describe|pause|resume|trigger|backfill|delete` (operators): a
//! workflow started at each time of a cron expression (in a time zone) or an interval.

use super::format::{print_json, show_payload, time};
use super::workflow::json_flag;
use super::{Conn, Output, client};
use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use martix_proto::v1 as pb;
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
            let schedule = pb::Schedule {
                spec: Some(pb::ScheduleSpec {
                    cron: cron.unwrap_or_default(),
                    interval: every.map(dur),
                    timezone: timezone.unwrap_or_default(),
                    jitter: jitter.map(dur),
                }),
                action: Some(pb::ScheduleAction {
                    workflow_type,
                    task_queue: queue,
                    input: Some(pb::Payload {
                        encoding: "json/plain".into(),
                        data: serde_json::to_vec(&input)?,
                    }),
                    ..Default::default()
                }),
                overlap: match overlap {
                    Overlap::Skip => pb::ScheduleOverlap::Skip,
                    Overlap::BufferOne => pb::ScheduleOverlap::BufferOne,
                    Overlap::AllowAll => pb::ScheduleOverlap::AllowAll,
                    Overlap::CancelOther => pb::ScheduleOverlap::CancelOther,
                } as i32,
                catchup_window: Some(dur(catchup_window)),
                paused,
                note: if paused {
                    "created paused".into()
                } else {
                    String::new()
                },
            };
            c.create_schedule(&name, schedule).await?;
            let d = c.describe_schedule(&name).await?;
            let next = d.info.map(|i| i.next_times).unwrap_or_default();
            match next.first() {
                Some(t) => println!("schedule {name} created; next run at {}", time(Some(t))),
                None => println!("schedule {name} created (paused)"),
            }
        }
        ScheduleCmd::List => {
            let all = c.list_schedules().await?;
            if json {
                print_json(&pb::ListSchedulesResponse {
                    schedules: all,
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
                        when(s.spec.as_ref()),
                        s.workflow_type,
                        if s.paused {
                            "paused".to_owned()
                        } else {
                            time(s.next_time.as_ref())
                        }
                    );
                }
            }
        }
        ScheduleCmd::Describe { name } => {
            let d = c.describe_schedule(&name).await?;
            if json {
                print_json(&d)?;
            } else {
                print_schedule(&name, &d);
            }
        }
        ScheduleCmd::Pause { name, reason } => {
            patch(&c, &name, |r| r.pause = reason).await?;
            println!("schedule {name} paused");
        }
        ScheduleCmd::Resume { name, reason } => {
            patch(&c, &name, |r| r.resume = reason).await?;
            println!("schedule {name} resumed");
        }
        ScheduleCmd::Trigger { name } => {
            for a in patch(&c, &name, |r| r.trigger = true).await? {
                print_action(&a);
            }
        }
        ScheduleCmd::Backfill { name, from, to } => {
            let (from, to) = (rfc3339("--from", &from)?, rfc3339("--to", &to)?);
            let actions = patch(&c, &name, |r| {
                r.backfill_start = Some(from);
                r.backfill_end = Some(to);
            })
            .await?;
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

async fn patch(
    c: &martix_sdk::Client,
    name: &str,
    set: impl FnOnce(&mut pb::PatchScheduleRequest),
) -> Result<Vec<pb::ScheduleActionRecord>> {
    let mut request = pb::PatchScheduleRequest {
        schedule_id: name.to_owned(),
        ..Default::default()
    };
    set(&mut request);
    Ok(c.patch_schedule(request).await?)
}

fn dur(d: Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A time an operator gives (RFC 3339) as a protobuf timestamp.
fn rfc3339(flag: &str, raw: &str) -> Result<pbjson_types::Timestamp> {
    let t: SystemTime = humantime::parse_rfc3339_weak(raw)
        .with_context(|| format!("{flag} is not an RFC 3339 time (2026-12-01T02:00:00Z)"))?;
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .context(format!("{flag} is before 1970"))?;
    if d.as_secs() > 253_402_300_799 {
        bail!("{flag} is after 9999");
    }
    Ok(pbjson_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

fn when(spec: Option<&pb::ScheduleSpec>) -> String {
    let Some(s) = spec else {
        return "-".into();
    };
    if !s.cron.is_empty() {
        let tz = if s.timezone.is_empty() {
            "UTC"
        } else {
            &s.timezone
        };
        return format!("{} ({tz})", s.cron);
    }
    let every = s.interval.as_ref().map_or(Duration::ZERO, |d| {
        Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
    });
    format!("every {}", humantime::format_duration(every))
}

fn print_schedule(name: &str, d: &pb::DescribeScheduleResponse) {
    let s = d.schedule.clone().unwrap_or_default();
    let info = d.info.clone().unwrap_or_default();
    let action = s.action.clone().unwrap_or_default();
    println!("schedule   {name}");
    println!("when       {}", when(s.spec.as_ref()));
    println!(
        "starts     {} on queue {} with {}",
        action.workflow_type,
        action.task_queue,
        show_payload(action.input.as_ref())
    );
    println!(
        "overlap    {}",
        pb::ScheduleOverlap::try_from(s.overlap)
            .map(|o| o
                .as_str_name()
                .trim_start_matches("SCHEDULE_OVERLAP_")
                .to_lowercase())
            .unwrap_or_default()
    );
    if s.paused {
        println!("paused     {}", s.note);
    }
    println!(
        "counts     {} started, {} skipped, {} missed",
        info.started, info.skipped, info.missed
    );
    if let Some(r) = &info.running {
        println!("running    {} (run {})", r.workflow_id, r.run_id);
    }
    if let Some(b) = &info.buffered_time {
        println!("buffered   {} waits for the running run", time(Some(b)));
    }
    for (i, t) in info.next_times.iter().enumerate() {
        println!(
            "{}{}",
            if i == 0 { "next       " } else { "           " },
            time(Some(t))
        );
    }
    if !info.recent_actions.is_empty() {
        println!("recent actions:");
        for a in &info.recent_actions {
            print_action(a);
        }
    }
}

fn print_action(a: &pb::ScheduleActionRecord) {
    println!(
        "  {}  {}{}",
        time(a.scheduled_time.as_ref()),
        a.outcome,
        a.workflow_execution
            .as_ref()
            .map(|e| format!(": {} (run {})", e.workflow_id, e.run_id))
            .unwrap_or_default()
    );
}
