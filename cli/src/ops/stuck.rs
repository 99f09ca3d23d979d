//! `martix stuck`: running workflows that are not progressing (no worker polls their queue,
//! waiting for an operator, paused by one, a failing workflow task, an activity at its
//! `--min-attempts`th attempt or later), each with why. The engine finds them
//! (`ListStuckWorkflows`), as it does for the console.

use super::format::print_json;
use super::{Conn, Output};
use anyhow::Result;
use martix_proto::v1 as pb;
use std::time::Duration;

/// `martix stuck`: running workflows that are not progressing, each with why.
pub(crate) async fn stuck(conn: Conn, older_than: Duration, min_attempts: i32) -> Result<()> {
    let transport = conn.auth.options()?.connect(&conn.address).await?;
    // The answer is bounded (1,000 runs, reasons cut at 500 bytes) but larger than tonic's
    // default 4 MiB can be.
    let mut c = pb::workflow_service_client::WorkflowServiceClient::new(transport)
        .max_decoding_message_size(64 << 20);
    let answer = c
        .list_stuck_workflows(pb::ListStuckWorkflowsRequest {
            namespace: conn.namespace.clone(),
            older_than: Some(pbjson_types::Duration {
                seconds: i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX),
                nanos: older_than.subsec_nanos() as i32,
            }),
            // 0 asks for every activity, as 1 does (the engine reads 0 as its default, 3).
            min_attempts: min_attempts.max(1),
        })
        .await?
        .into_inner();
    let found: Vec<(String, &[String])> = answer
        .workflows
        .iter()
        .map(|w| {
            let id = w.info.as_ref().and_then(|i| i.execution.as_ref());
            (
                id.map(|e| e.workflow_id.clone()).unwrap_or_default(),
                &w.why[..],
            )
        })
        .collect();
    if conn.output == Output::Json {
        let json: Vec<_> = found
            .iter()
            .map(|(id, why)| serde_json::json!({"workflow_id": id, "why": why}))
            .collect();
        print_json(&json)?;
    } else if found.is_empty() {
        println!(
            "no stuck workflows (running for over {}s with a failing task or {min_attempts}+ attempts)",
            older_than.as_secs()
        );
    } else {
        for (id, why) in &found {
            println!("{id}");
            for w in *why {
                println!("  {w}");
            }
        }
    }
    if answer.truncated {
        eprintln!(
            "(looked at the {} most recently started running workflows only: narrow with --older-than)",
            answer.examined
        );
    }
    Ok(())
}
