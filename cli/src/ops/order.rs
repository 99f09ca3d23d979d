//! The order domain's commands: `martix order place|list|show|resolve` (the `order` saga, the orders
//! read model, the saga's steps, the ledger) and `martix orders rebuild` (the read model,
//! admin).

use super::format::{print_json, show_payload, time};
use super::{Conn, Output, RESULT_WAIT, client, order_client, wait_result};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use martix_order_contract::pricing::money;
use martix_proto::time::system_time_to_timestamp;
use martix_proto::v1 as pb;
use martix_sdk::StartOptions;
use tracing::Instrument;

#[derive(Subcommand)]
pub(crate) enum OrderCmd {
    /// Place an order (starts the `order` saga).
    Place {
        #[arg(long)]
        id: String,
        #[arg(long)]
        customer: String,
        /// `SKU:QTY:UNIT_PRICE_CENTS`, once per line.
        #[arg(long = "item", required = true)]
        items: Vec<String>,
        #[arg(long, default_value = "EUR")]
        currency: String,
        #[arg(long, default_value = "FR")]
        country: String,
        #[arg(long, default_value = "orders")]
        task_queue: String,
        /// Wait for the outcome.
        #[arg(long)]
        wait: bool,
    },
    /// Orders from the read model, newest first, one page (or --all).
    List {
        #[arg(long)]
        customer: Option<String>,
        /// placed, priced, reserved, charged, shipped, compensating, needs_attention,
        /// completed, compensated, canceled, failed, rejected.
        #[arg(long)]
        status: Option<String>,
        /// Created at or after (RFC 3339, e.g. 2026-11-25T10:00:00Z).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        created_after: Option<std::time::SystemTime>,
        /// Created before (RFC 3339).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        created_before: Option<std::time::SystemTime>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        /// The next_page_token a previous page printed.
        #[arg(long)]
        page_token: Option<String>,
        /// Every page.
        #[arg(long)]
        all: bool,
    },
    /// Decide on an order that needs attention (a compensation failed for good): run the
    /// failed compensations again, record that they were done by hand, or give up as failed.
    Resolve {
        order_id: String,
        /// Run the failed compensations again.
        #[arg(long, conflicts_with_all = ["done", "fail"], required_unless_present_any = ["done", "fail"])]
        retry: bool,
        /// They were done by hand (say how in --reason): the order ends compensated.
        #[arg(long, conflicts_with = "fail")]
        done: bool,
        /// Give up: the order ends failed, the money or stock left as it is.
        #[arg(long)]
        fail: bool,
        /// Why; recorded in the order's history (required with --done and --fail).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// An order: the read model's row and events, the saga's steps and, with --database-url,
    /// its ledger lines.
    Show {
        order_id: String,
        /// The database of the reference adapters, for the ledger lines.
        #[arg(long, env = "MARTIX_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum OrdersCmd {
    /// Rebuild the orders read model from the workflow histories (admin).
    Rebuild,
}

/// `--item SKU:QTY:UNIT_PRICE_CENTS`.
fn parse_item(raw: &str) -> Result<martix_order_contract::Item> {
    let parts: Vec<&str> = raw.split(':').collect();
    match parts.as_slice() {
        [sku, qty, price] => Ok(martix_order_contract::Item {
            sku: (*sku).to_owned(),
            qty: qty
                .parse()
                .with_context(|| format!("--item {raw}: QTY is not a number"))?,
            unit_price_cents: price
                .parse()
                .with_context(|| format!("--item {raw}: UNIT_PRICE_CENTS is not a number"))?,
        }),
        _ => bail!("--item {raw}: expected SKU:QTY:UNIT_PRICE_CENTS"),
    }
}

/// Runs one `martix order` command.
pub(crate) async fn order(conn: Conn, cmd: OrderCmd) -> Result<()> {
    let c = client(&conn).await?;
    match cmd {
        OrderCmd::List {
            customer,
            status,
            created_after,
            created_before,
            page_size,
            page_token,
            all,
        } => {
            let request = martix_orders::pb::ListOrdersRequest {
                namespace: conn.namespace.clone(),
                customer_id: customer.unwrap_or_default(),
                status: status.unwrap_or_default(),
                created_after: created_after.map(system_time_to_timestamp),
                created_before: created_before.map(system_time_to_timestamp),
                page_size,
                page_token: page_token.unwrap_or_default(),
            };
            list_orders(&conn, request, all).await?;
        }
        OrderCmd::Place {
            id,
            customer,
            items,
            currency,
            country,
            task_queue,
            wait,
        } => {
            let order = martix_order_contract::Order {
                order_id: id.clone(),
                customer_id: customer,
                currency,
                items: items.iter().map(|i| parse_item(i)).collect::<Result<_>>()?,
                shipping_address: martix_order_contract::Address {
                    country,
                    ..Default::default()
                },
                discount_code: None,
                placed_by: None,
            };
            // The root of the order's trace when tracing is on; the SDK's client span of the
            // start is its child.
            let span = tracing::info_span!("order.place", order_id = %id);
            let run = c
                .start(
                    martix_workflows::OrderSaga,
                    StartOptions::for_id(&id, task_queue),
                    &order,
                )
                .instrument(span)
                .await?;
            println!(
                "order {id} placed (run {}, subtotal {} cents)",
                run.run_id,
                order.total_cents()
            );
            if wait {
                let res = wait_result(&c.handle(&id), RESULT_WAIT).await?;
                println!("outcome {}", show_payload(res.into_proto().result.as_ref()));
            }
        }
        OrderCmd::Resolve {
            order_id,
            retry,
            done,
            fail: _,
            reason,
        } => {
            let action = if retry {
                "retry"
            } else if done {
                "done"
            } else {
                "fail"
            };
            let decision = martix_order_contract::Resolution::new(action, &reason)
                .map_err(|e| anyhow::anyhow!("{e} (--reason)"))?;
            let run = c.handle(&order_id);
            let d = run.describe().await?;
            if d.summary.attention.is_none() {
                bail!(
                    "order {order_id} does not wait for a decision (status {}); nothing sent",
                    d.summary.status
                );
            }
            run.signal(martix_order_contract::saga::Resolve, &decision)
                .await?;
            println!("order {order_id}: decision '{action}' sent");
        }
        OrderCmd::Show {
            order_id,
            database_url,
        } => {
            let run = c.handle(&order_id);
            let d = run.describe().await?;
            // The order's status first (the read model's), then its workflow run's.
            let view = order_view(&conn, &order_id).await?;
            match view.as_ref().and_then(|v| v.order.as_ref()) {
                Some(o) if !o.last_error.is_empty() => {
                    println!("order {order_id}: {} ({})", o.status, o.last_error)
                }
                Some(o) => println!("order {order_id}: {}", o.status),
                None => println!("order {order_id}: not in the read model yet"),
            }
            println!("workflow run {}: {}", d.summary.run_id, d.summary.status);
            if d.summary.status == martix_sdk::WorkflowStatus::Running {
                println!("saga now: {}", live_status(&run).await);
            }
            show_view(view);
            let history = run.history().await?;
            println!("steps:");
            let mut steps: Vec<(i64, String, String)> = Vec::new();
            for e in &history {
                use pb::history_event::Attributes as A;
                match &e.attributes {
                    Some(A::ActivityTaskScheduled(a)) => {
                        steps.push((e.event_id, a.activity_type.clone(), "pending".into()))
                    }
                    Some(A::ActivityTaskStarted(a)) => {
                        if let Some(s) = steps.iter_mut().find(|s| s.0 == a.scheduled_event_id) {
                            s.2 = format!("attempt {}", a.attempt);
                        }
                    }
                    Some(A::ActivityTaskCompleted(a)) => {
                        if let Some(s) = steps.iter_mut().find(|s| s.0 == a.scheduled_event_id) {
                            s.2 = format!(
                                "completed ({}) -> {}",
                                s.2,
                                show_payload(a.result.as_ref())
                            );
                        }
                    }
                    Some(A::ActivityTaskFailed(a)) => {
                        if let Some(s) = steps.iter_mut().find(|s| s.0 == a.scheduled_event_id) {
                            let f = a.failure.clone().unwrap_or_default();
                            s.2 = format!("failed ({}): {} ({})", s.2, f.message, f.r#type);
                        }
                    }
                    Some(A::ActivityTaskTimedOut(a)) => {
                        if let Some(s) = steps.iter_mut().find(|s| s.0 == a.scheduled_event_id) {
                            s.2 = format!("timed out ({})", s.2);
                        }
                    }
                    _ => {}
                }
            }
            for a in &d.pending_activities {
                if let Some(s) = steps.iter_mut().find(|s| s.0 == a.scheduled_event_id) {
                    s.2 = format!(
                        "waiting, attempt {}{}",
                        a.attempt,
                        a.last_failure
                            .as_ref()
                            .map_or(String::new(), |f| format!(", last error: {}", f.message))
                    );
                }
            }
            for (_, kind, state) in &steps {
                println!("  {kind:<20} {state}");
            }
            if let Some(url) = database_url {
                let adapters = martix_activities::ReferenceAdapters::connect(&url).await?;
                println!("ledger:");
                let lines = adapters.payments(&order_id).await?;
                if lines.is_empty() {
                    println!("  (no payments)");
                }
                for (kind, amount, currency, key) in lines {
                    println!(
                        "  {kind:<7} {:>10.2} {currency}  {key}",
                        amount as f64 / 100.0
                    );
                }
            }
        }
    }
    Ok(())
}

/// `martix order list`.
async fn list_orders(
    conn: &Conn,
    mut request: martix_orders::pb::ListOrdersRequest,
    all: bool,
) -> Result<()> {
    let mut c = order_client(conn).await?;
    if conn.output == Output::Table {
        println!(
            "{:<28} {:<20} {:<13} {:>14} {:>14}  created",
            "ORDER", "CUSTOMER", "STATUS", "TOTAL", "CHARGED"
        );
    }
    loop {
        let page = c.list_orders(request.clone()).await?.into_inner();
        for o in &page.orders {
            match conn.output {
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
            if conn.output == Output::Table {
                println!("next page: --page-token {}", page.next_page_token);
            }
            break;
        }
        request.page_token = page.next_page_token;
    }
    Ok(())
}

/// A running order's saga as it answers its `status` query (not the read model): a line.
async fn live_status(run: &martix_sdk::WorkflowHandle) -> String {
    let asked = run.query(martix_order_contract::saga::OrderStatus, &());
    match tokio::time::timeout(LIVE_STATUS_WAIT, asked).await {
        Ok(Ok(s)) => {
            let mut line = format!(
                "at {}, total {} cents, charged {} cents",
                s.step, s.total_cents, s.charged_cents
            );
            if let Some(step) = &s.failed_step {
                line += &format!(", failed at {step}");
            }
            if let Some(why) = &s.attention {
                line += &format!("; needs attention: {why}");
            }
            line
        }
        Ok(Err(e)) => format!("unknown ({e})"),
        Err(_) => format!(
            "unknown (no worker answered its status query within {} s)",
            LIVE_STATUS_WAIT.as_secs()
        ),
    }
}

/// How long `order show` waits for a running saga's answer.
const LIVE_STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The read model's part of `martix order show`.
/// The order's read-model row and events; `None` while its first event is not folded in.
async fn order_view(
    conn: &Conn,
    order_id: &str,
) -> Result<Option<martix_orders::pb::GetOrderResponse>> {
    let mut c = order_client(conn).await?;
    let got = c
        .get_order(martix_orders::pb::GetOrderRequest {
            namespace: conn.namespace.clone(),
            order_id: order_id.to_owned(),
        })
        .await;
    match got {
        Ok(r) => Ok(Some(r.into_inner())),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(s.into()),
    }
}

fn show_view(view: Option<martix_orders::pb::GetOrderResponse>) {
    let Some(r) = view else {
        println!("read model: (not yet: its first event is still to be folded in)");
        return;
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
}

/// `martix orders ...`.
pub(crate) async fn orders(conn: Conn, cmd: OrdersCmd) -> Result<()> {
    let mut c = order_client(&conn).await?;
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
