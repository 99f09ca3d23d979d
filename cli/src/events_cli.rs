//! `martix events status|tail`: the business events' outbox (its backlog, the relays'
//! shards, its events), over `OrderService`.

use crate::ops::format::{print_json, time};
use crate::ops::{Conn, Output, order_client};
use anyhow::Result;
use clap::Subcommand;
use std::time::Duration;

#[derive(Subcommand)]
pub(crate) enum EventsCmd {
    /// The outbox backlog (unsent, not yet in the read model) and the relays' shards.
    Status,
    /// Print outbox events in order (JSON lines); --follow waits for new ones.
    Tail {
        /// Start after this outbox position (0: from the oldest kept).
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long)]
        follow: bool,
        /// Events of every namespace (needs a token for all namespaces).
        #[arg(long)]
        all_namespaces: bool,
    },
}

/// One line of `martix events tail`.
fn event_json(e: &martix_orders::pb::OrderEvent) -> serde_json::Value {
    serde_json::json!({
        "position": e.position,
        "id": e.event_id,
        "type": e.event_type,
        "namespace": e.namespace,
        "order_id": e.order_id,
        "sequence": e.sequence,
        "time": time(e.occurred_at.as_ref()),
        "sent": e.sent,
        "data": serde_json::from_str::<serde_json::Value>(&e.body_json).unwrap_or_default(),
    })
}

/// `martix events ...`.
pub(crate) async fn events(conn: Conn, cmd: EventsCmd) -> Result<()> {
    let mut c = order_client(&conn).await?;
    match cmd {
        EventsCmd::Status => {
            let s = c
                .get_outbox_status(martix_orders::pb::GetOutboxStatusRequest {})
                .await?
                .into_inner();
            if conn.output() == Output::Json {
                return print_json(&s);
            }
            println!("outbox: {} events kept", s.total);
            println!(
                "  unsent:      {} (oldest {}){}",
                s.unsent,
                time(s.oldest_unsent.as_ref()),
                if s.relay_configured {
                    ""
                } else {
                    "  (no MARTIX_AMQP_URL on the engine: events stay in the outbox)"
                }
            );
            println!(
                "  unprojected: {} (oldest {})",
                s.unprojected,
                time(s.oldest_unprojected.as_ref())
            );
            let mut owners: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
            for l in &s.leases {
                owners.entry(l.owner.as_str()).or_default().push(l.shard);
            }
            println!(
                "  shards leased: {} of 16, by {} node(s)",
                s.leases.len(),
                owners.len()
            );
            for (owner, shards) in owners {
                println!("    {owner}: {shards:?}");
            }
        }
        EventsCmd::Tail {
            mut after,
            follow,
            all_namespaces,
        } => loop {
            let page = c
                .list_outbox_events(martix_orders::pb::ListOutboxEventsRequest {
                    namespace: if all_namespaces {
                        String::new()
                    } else {
                        conn.namespace().to_owned()
                    },
                    after_position: after,
                    page_size: 500,
                })
                .await?
                .into_inner();
            for e in &page.events {
                println!("{}", event_json(e));
                after = after.max(e.position);
            }
            if page.events.len() < 500 {
                if !follow {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        },
    }
    Ok(())
}
