//! The steering operations of `martix workflow cancel|terminate|reset|retry` on one
//! workflow, or paced (`--rate`), once confirmed (`--yes`), on every running workflow whose
//! id starts with `--prefix` and that `--query` selects.

use anyhow::{Context, Result, bail};
use clap::Args;
use martix_sdk::{Client, ListOptions, ResetPoint, WorkflowStatus};
use std::time::Duration;

/// The batch form of an operation: every running workflow whose id starts with `--prefix`
/// and that `--query` selects.
#[derive(Args, Clone, Debug)]
pub(crate) struct Batch {
    /// Every running workflow whose id starts with this, instead of one id.
    #[arg(long)]
    prefix: Option<String>,
    /// Every running workflow this query selects (`customer = "c42"`; see `workflow list`),
    /// instead of one id.
    #[arg(long)]
    query: Option<String>,
    /// Confirm a batch operation (without it, the matching workflows are only counted).
    #[arg(long)]
    yes: bool,
    /// Workflows per second in a batch, so one operator cannot stampede the engine.
    #[arg(long, default_value_t = 20)]
    rate: u32,
}

/// One steering operation on one workflow. Its `Debug` form is what a batch without `--yes`
/// says it would apply.
#[derive(Clone, Debug)]
pub(super) enum Op {
    Cancel(String),
    Terminate(String),
    Reset {
        /// The API's number for the boundary: 0 the last good, -1 the first, else an event id.
        to: i64,
        reason: String,
    },
    Retry {
        /// Only this activity; empty: every activity waiting for its next attempt.
        activity: String,
        reset_attempts: bool,
    },
    Pause(String),
    Resume(String),
}

/// Applies `op` to workflow `id`; what happened, for the operator.
async fn apply(c: &Client, op: &Op, id: &str) -> Result<String> {
    let run = c.handle(id);
    Ok(match op {
        Op::Cancel(reason) => {
            run.cancel(reason).await?;
            format!("cancellation of {id} requested")
        }
        Op::Terminate(reason) => {
            run.terminate(reason).await?;
            format!("{id} terminated")
        }
        Op::Reset { to, reason } => {
            let to = match *to {
                0 => ResetPoint::LastGood,
                -1 => ResetPoint::First,
                event_id => ResetPoint::Event(event_id),
            };
            let new = run.reset(to, reason).await?;
            format!("{id} reset: new run {}", new.run_id)
        }
        Op::Retry {
            activity,
            reset_attempts,
        } => {
            let retried = run
                .retry_activities(
                    Some(activity.as_str()).filter(|a| !a.is_empty()),
                    *reset_attempts,
                )
                .await?;
            format!("{id}: retried now {}", retried.join(", "))
        }
        Op::Pause(reason) => {
            if run.pause(reason).await? {
                format!("{id} paused")
            } else {
                format!("{id} was paused already (unchanged)")
            }
        }
        Op::Resume(reason) => {
            if run.resume(reason).await? {
                format!("{id} resumed")
            } else {
                format!("{id} was not paused (unchanged)")
            }
        }
    })
}

/// Applies `op` to one workflow, or paced to every running workflow `batch.query` matches.
pub(super) async fn steer(c: &Client, op: Op, id: Option<String>, batch: Batch) -> Result<()> {
    if batch.prefix.is_none() && batch.query.is_none() {
        let id = id.context("give a workflow id, --prefix or --query")?;
        println!("{}", apply(c, &op, &id).await?);
        return Ok(());
    }
    let mut options = ListOptions::new()
        .status(WorkflowStatus::Running)
        .page_size(1000);
    let mut what = Vec::new();
    if let Some(prefix) = &batch.prefix {
        options = options.workflow_id_prefix(prefix);
        what.push(format!("ids starting with '{prefix}'"));
    }
    if let Some(query) = &batch.query {
        options = options.query(query);
        what.push(format!("query '{query}'"));
    }
    let prefix = what.join(" and ");
    let ids: Vec<String> = c
        .list_all_workflows(&options)
        .await?
        .into_iter()
        .map(|e| e.workflow_id)
        .collect();
    if !batch.yes {
        println!(
            "{} running workflows match {prefix}; add --yes to apply {op:?} to them",
            ids.len()
        );
        return Ok(());
    }
    let bar = indicatif::ProgressBar::new(ids.len() as u64);
    let mut pace =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(batch.rate.max(1))));
    let (mut done, mut failed) = (0, Vec::new());
    for id in &ids {
        pace.tick().await;
        match apply(c, &op, id).await {
            Ok(_) => done += 1,
            Err(e) => failed.push(format!("{id}: {e}")),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("{done} done, {} failed", failed.len());
    for f in &failed {
        println!("  {f}");
    }
    if !failed.is_empty() {
        bail!("{} of {} workflows failed", failed.len(), ids.len());
    }
    Ok(())
}
