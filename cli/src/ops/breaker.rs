//! `martix breaker list|open|close|release` (operators): the circuit breakers of a namespace,
//! and holding one open or closed by hand.

use super::format::{print_json, when};
use super::{Conn, Output, client};
use anyhow::Result;
use clap::Subcommand;
use martix_proto::v1 as pb;
use martix_sdk::{BreakerHold, BreakerInfo, BreakerState};

#[derive(Subcommand)]
pub(crate) enum BreakerCmd {
    /// The namespace's breakers: what each worker reports, a hold, the tasks parked behind.
    List,
    /// Hold a breaker open: workers refuse every call behind it and the engine parks the tasks
    /// (no probes) until the hold is released.
    Open {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Hold a breaker closed: workers call through it whatever its state and the engine
    /// releases the tasks parked behind it, paced.
    Close {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Release a hold: the breaker is again what its workers report.
    Release { name: String },
}

/// Runs one `martix breaker` command.
pub(crate) async fn breaker(conn: Conn, cmd: BreakerCmd) -> Result<()> {
    let c = client(&conn).await?;
    match cmd {
        BreakerCmd::List => {
            let breakers = c.list_breakers().await?;
            if conn.output == Output::Json {
                print_json(&pb::ListBreakersResponse {
                    breakers: breakers.into_iter().map(|b| b.into_proto()).collect(),
                })?;
            } else if breakers.is_empty() {
                println!("no breakers reported or held in this namespace");
            } else {
                for b in &breakers {
                    print_breaker(b);
                }
            }
        }
        BreakerCmd::Open { name, reason } => {
            c.set_breaker(&name, Some(BreakerHold::Open), &reason)
                .await?;
            println!("breaker {name} held open");
        }
        BreakerCmd::Close { name, reason } => {
            c.set_breaker(&name, Some(BreakerHold::Closed), &reason)
                .await?;
            println!("breaker {name} held closed");
        }
        BreakerCmd::Release { name } => {
            c.set_breaker(&name, None, "").await?;
            println!("breaker {name} released: it is what its workers report");
        }
    }
    Ok(())
}

fn print_breaker(b: &BreakerInfo) {
    let state = if b.open { "open" } else { "closed" };
    println!("{}  {state}, {} task(s) parked behind it", b.name, b.parked);
    if let Some((hold, info)) = &b.hold {
        let held = match hold {
            BreakerHold::Open => "open",
            BreakerHold::Closed => "closed",
        };
        println!(
            "  held {held} by {} since {}: {}",
            info.by,
            when(info.since),
            info.reason
        );
    }
    for w in &b.workers {
        let state = match w.state {
            Some(BreakerState::Closed) => "closed",
            Some(BreakerState::Open) => "open",
            Some(BreakerState::HalfOpen) => "half-open",
            None => "unknown",
        };
        println!(
            "  worker {}: {state} since {}",
            w.worker,
            when(w.changed_at)
        );
    }
}
