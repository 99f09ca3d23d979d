//! `martix stuck`: running workflows that are not progressing (a failing workflow task, an
//! activity at its `--min-attempts`th attempt or later), each with why.

use super::format::{print_json, time};
use super::{Conn, Output, timestamp, workflow_client};
use anyhow::Result;
use martix_proto::v1 as pb;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `martix stuck`: running workflows that are not progressing, each with why.
pub(crate) async fn stuck(conn: Conn, older_than: Duration, min_attempts: i32) -> Result<()> {
    let mut c = workflow_client(&conn).await?;
    // The bound in whole seconds.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let before = UNIX_EPOCH + Duration::from_secs(now.saturating_sub(older_than.as_secs()));
    let mut token = Vec::new();
    let mut found = Vec::new();
    loop {
        let page = c
            .list_workflows(pb::ListWorkflowsRequest {
                namespace: conn.namespace.clone(),
                page_size: 500,
                next_page_token: token,
                statuses: vec![pb::WorkflowStatus::Running as i32],
                start_time_to: Some(timestamp(before)),
                ..Default::default()
            })
            .await?
            .into_inner();
        for w in &page.executions {
            let d = c
                .describe_workflow(pb::DescribeWorkflowRequest {
                    namespace: conn.namespace.clone(),
                    execution: w.execution.clone(),
                })
                .await?
                .into_inner();
            let id = w
                .execution
                .as_ref()
                .map_or(String::new(), |e| e.workflow_id.clone());
            let mut why = Vec::new();
            if let Some(t) = d.pending_workflow_task.as_ref().filter(|t| t.attempt >= 2) {
                why.push(format!(
                    "workflow task failing, attempt {}: {}",
                    t.attempt,
                    t.last_failure.as_ref().map_or("-", |f| f.message.as_str())
                ));
            }
            for a in d
                .pending_activities
                .iter()
                .filter(|a| a.attempt >= min_attempts)
            {
                why.push(format!(
                    "activity {} ({}) attempt {}, next {}, last error: {}",
                    a.activity_id,
                    a.activity_type,
                    a.attempt,
                    time(a.next_attempt_time.as_ref()),
                    a.last_failure
                        .as_ref()
                        .map_or("-".into(), |f| format!("{} ({})", f.message, f.r#type))
                ));
            }
            if !why.is_empty() {
                for b in &d.open_breakers {
                    why.push(format!(
                        "breaker open: {} on worker {}",
                        b.adapter, b.worker
                    ));
                }
                found.push(serde_json::json!({"workflow_id": id, "why": why}));
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if conn.output == Output::Json {
        print_json(&found)?;
    } else if found.is_empty() {
        println!(
            "no stuck workflows (running for over {}s with a failing task or {min_attempts}+ attempts)",
            older_than.as_secs()
        );
    } else {
        for f in &found {
            println!("{}", f["workflow_id"].as_str().unwrap_or_default());
            for w in f["why"].as_array().into_iter().flatten() {
                println!("  {}", w.as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}
