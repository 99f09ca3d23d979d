//! `martix stuck`: running workflows that are not progressing (no worker polls their queue,
//! waiting for an operator, paused by one, a failing workflow task, an activity at its
//! `--min-attempts`th attempt or later), each with why.

use super::format::{print_json, when};
use super::{Conn, Output, client};
use anyhow::Result;
use martix_sdk::{ListOptions, WorkflowStatus};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `martix stuck`: running workflows that are not progressing, each with why.
pub(crate) async fn stuck(conn: Conn, older_than: Duration, min_attempts: i32) -> Result<()> {
    let c = client(&conn).await?;
    // Runs started before now less the age asked (to the millisecond: `--older-than 0s` takes
    // a run started a moment ago).
    let before = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(UNIX_EPOCH);
    let mut options = ListOptions::new()
        .status(WorkflowStatus::Running)
        .started_before(before)
        .page_size(500);
    let mut found = Vec::new();
    loop {
        let page = c.list_workflows(&options).await?;
        for w in &page.items {
            let d = c.run_handle(&w.workflow_id, &w.run_id).describe().await?;
            let id = w.workflow_id.clone();
            let mut why = Vec::new();
            if d.pollers.is_empty() {
                why.push(format!(
                    "no worker has polled queue '{}' in the last minute (a misspelled queue, or its workers are down)",
                    w.task_queue
                ));
            }
            if let Some(pause) = &d.summary.paused {
                why.push(format!(
                    "paused since {} by {}: {}",
                    when(pause.since),
                    pause.by,
                    pause.reason
                ));
            }
            if let Some(attention) = &d.summary.attention {
                why.push(format!(
                    "needs attention since {}: {}",
                    when(attention.since),
                    attention.reason
                ));
            }
            if let Some(t) = d.pending_workflow_task.as_ref().filter(|t| t.attempt >= 2) {
                why.push(format!(
                    "workflow task failing, attempt {}: {}",
                    t.attempt,
                    t.last_failure.as_ref().map_or("-", |f| f.message.as_str())
                ));
            }
            for a in &d.pending_activities {
                if let Some((breaker, since)) = &a.parked_behind {
                    why.push(format!(
                        "activity {} ({}) parked behind the {breaker} breaker since {}, at attempt {}",
                        a.activity_id,
                        a.activity_type,
                        when(*since),
                        a.attempt
                    ));
                }
            }
            for a in d
                .pending_activities
                .iter()
                .filter(|a| a.attempt >= min_attempts && a.parked_behind.is_none())
            {
                why.push(format!(
                    "activity {} ({}) attempt {}, next {}, last error: {}",
                    a.activity_id,
                    a.activity_type,
                    a.attempt,
                    when(a.next_attempt_time),
                    a.last_failure
                        .as_ref()
                        .map_or("-".into(), |f| format!("{} ({})", f.message, f.error_type))
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
        match page.next_page_token {
            Some(next) => options = options.page_token(next),
            None => break,
        }
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
