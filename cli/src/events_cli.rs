//! `martix order list|show` (the read model), `martix orders rebuild` and
//! `martix events status|tail`: the read side and the outbox, over `OrderService`.

use crate::ops::{Conn, Output, print_json, time};
use anyhow::Result;
use clap::Subcommand;
use martix_orders::pb::order_service_client::OrderServiceClient;
use std::time::Duration;

#[derive(Subcommand)]
pub(crate) enum OrdersCmd {
    /// Rebuild the orders read model from the workflow histories (admin).
    Rebuild,
}

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

async fn client(conn: &Conn) -> Result<OrderServiceClient<martix_sdk::connection::Transport>> {
    Ok(OrderServiceClient::new(crate::ops::transport(conn).await?))
}

fn money(cents: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", cents / 100, (cents % 100).abs())
}

/// `martix order list`.
pub(crate) async fn list_orders(
    conn: &Conn,
    mut request: martix_orders::pb::ListOrdersRequest,
    all: bool,
) -> Result<()> {
    let mut c = client(conn).await?;
    if conn.output() == Output::Table {
        println!(
            "{:<28} {:<20} {:<13} {:>14} {:>14}  created",
            "ORDER", "CUSTOMER", "STATUS", "TOTAL", "CHARGED"
        );
    }
    loop {
        let page = c.list_orders(request.clone()).await?.into_inner();
        for o in &page.orders {
            match conn.output() {
                Output::Json => print_json(o)?,
                Output::Table => println!(
                    "{:<28} {:<20} {:<13} {:>14} {:>14}  {}",
                    o.order_id,
                    o.customer_id,
                    o.status,
                    money(o.total_cents, &o.currency),
                    money(o.charged_cents - o.refunded_cents, &o.currency),
                    time(o.created_at.as_ref())
                ),
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        if !all {
            if conn.output() == Output::Table {
                println!("next page: --page-token {}", page.next_page_token);
            }
            break;
        }
        request.page_token = page.next_page_token;
    }
    Ok(())
}

/// The read model's part of `martix order show`.
pub(crate) async fn show_view(conn: &Conn, order_id: &str) -> Result<()> {
    let mut c = client(conn).await?;
    let got = c
        .get_order(martix_orders::pb::GetOrderRequest {
            namespace: conn.namespace().to_owned(),
            order_id: order_id.to_owned(),
        })
        .await;
    let r = match got {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => {
            println!("read model: (not yet: its first event is still to be folded in)");
            return Ok(());
        }
        Err(s) => return Err(s.into()),
    };
    let o = r.order.unwrap_or_default();
    let cur = o.currency.as_str();
    println!(
        "read model: {} (step {}), customer {}, created {}",
        o.status,
        o.step,
        o.customer_id,
        time(o.created_at.as_ref())
    );
    println!(
        "  subtotal {}  discount {}  tax {}  total {}  charged {}  refunded {}",
        money(o.subtotal_cents, cur),
        money(o.discount_cents, cur),
        money(o.tax_cents, cur),
        money(o.total_cents, cur),
        money(o.charged_cents, cur),
        money(o.refunded_cents, cur)
    );
    if !o.shipment.is_empty() {
        println!("  shipment {}", o.shipment);
    }
    if !o.last_error.is_empty() {
        println!("  last error: {}", o.last_error);
    }
    println!("events:");
    for e in &r.events {
        println!(
            "  {:>3} {:<22} {}  {}",
            e.sequence,
            e.event_type,
            time(e.occurred_at.as_ref()),
            e.body_json
        );
    }
    Ok(())
}

/// `martix orders ...`.
pub(crate) async fn orders(conn: Conn, cmd: OrdersCmd) -> Result<()> {
    let mut c = client(&conn).await?;
    match cmd {
        OrdersCmd::Rebuild => {
            let r = c
                .rebuild_orders(martix_orders::pb::RebuildOrdersRequest {})
                .await?
                .into_inner();
            println!(
                "read model rebuilt from the histories: {} orders, {} events",
                r.orders, r.events
            );
        }
    }
    Ok(())
}

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
    let mut c = client(&conn).await?;
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
