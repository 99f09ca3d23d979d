//! The steering operations of `martix workflow cancel|terminate|reset|retry` on one
//! workflow, or paced (`--rate`), once confirmed (`--yes`), on every running workflow whose
//! id starts with `--query`.

use super::execution;
use anyhow::{Context, Result, bail};
use clap::Args;
use martix_proto::v1 as pb;
use martix_sdk::connection::Transport;
use pb::workflow_service_client::WorkflowServiceClient;
use std::time::Duration;

/// The batch form of an operation: every running workflow whose id starts with `--query`.
#[derive(Args, Clone, Debug)]
pub(crate) struct Batch {
    /// Every running workflow whose id starts with this, instead of one id.
    #[arg(long)]
    query: Option<String>,
    /// Confirm a batch operation (without it, the matching workflows are only counted).
    #[arg(long)]
    yes: bool,
    /// Workflows per second in a batch, so one operator cannot stampede the engine.
    #[arg(long, default_value_t = 20)]
    rate: u32,
}

/// One steering operation on one workflow.
#[derive(Clone, Debug)]
pub(super) enum Op {
    Cancel(String),
    Terminate(String),
    Reset {
        to: i64,
        reason: String,
    },
    Retry {
        activity: String,
        reset_attempts: bool,
    },
}

/// Applies `op` to workflow `id`; what happened, for the operator.
async fn apply(
    c: &mut WorkflowServiceClient<Transport>,
    ns: &str,
    identity: &str,
    op: &Op,
    id: &str,
) -> Result<String> {
    let ns = ns.to_owned();
    let identity = identity.to_owned();
    Ok(match op {
        Op::Cancel(reason) => {
            c.cancel_workflow(pb::CancelWorkflowRequest {
                namespace: ns,
                execution: execution(id),
                reason: reason.clone(),
                identity,
            })
            .await?;
            format!("cancellation of {id} requested")
        }
        Op::Terminate(reason) => {
            c.terminate_workflow(pb::TerminateWorkflowRequest {
                namespace: ns,
                execution: execution(id),
                reason: reason.clone(),
                identity,
            })
            .await?;
            format!("{id} terminated")
        }
        Op::Reset { to, reason } => {
            let r = c
                .reset_workflow(pb::ResetWorkflowRequest {
                    namespace: ns,
                    execution: execution(id),
                    workflow_task_finish_event_id: *to,
                    reason: reason.clone(),
                    identity,
                })
                .await?
                .into_inner();
            format!("{id} reset: new run {}", r.run_id)
        }
        Op::Retry {
            activity,
            reset_attempts,
        } => {
            let r = c
                .retry_activity(pb::RetryActivityRequest {
                    namespace: ns,
                    execution: execution(id),
                    activity_id: activity.clone(),
                    reset_attempts: *reset_attempts,
                })
                .await?
                .into_inner();
            format!("{id}: retried now {}", r.activity_ids.join(", "))
        }
    })
}

/// Applies `op` to one workflow, or paced to every running workflow `batch.query` matches.
pub(super) async fn steer(
    c: &mut WorkflowServiceClient<Transport>,
    ns: &str,
    identity: &str,
    op: Op,
    id: Option<String>,
    batch: Batch,
) -> Result<()> {
    let Some(prefix) = batch.query else {
        let id = id.context("give a workflow id or --query")?;
        println!("{}", apply(c, ns, identity, &op, &id).await?);
        return Ok(());
    };
    let mut ids = Vec::new();
    let mut token = Vec::new();
    loop {
        let page = c
            .list_workflows(pb::ListWorkflowsRequest {
                namespace: ns.to_owned(),
                page_size: 1000,
                next_page_token: token,
                statuses: vec![pb::WorkflowStatus::Running as i32],
                workflow_id_prefix: prefix.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        ids.extend(
            page.executions
                .into_iter()
                .filter_map(|e| e.execution.map(|x| x.workflow_id)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if !batch.yes {
        println!(
            "{} running workflows match '{prefix}'; add --yes to apply {op:?} to them",
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
        match apply(c, ns, identity, &op, id).await {
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
