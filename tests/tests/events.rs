//! Order events end to end: the outbox to the real RabbitMQ (every step once, in order, while
//! the broker goes away and comes back), inbound messages that become signals, the orders read
//! model against the histories and its rebuild, and keyset pages over REST.
//!
//! Tests that publish run on a PostgreSQL database of their own: the relays of other tests'
//! engines (without RabbitMQ) would otherwise hold some of the outbox shards.

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use martix_activities::{BreakerSettings, Faults, random_order};
use martix_engine::EngineConfig;
use martix_engine::events::EventsConfig;
use martix_order_contract::{ORDER_WORKFLOW_TYPE, Order, OrderOutcome};
use martix_proto::v1 as pb;
use martix_sdk::StartOptions;
use martix_tests::{EventTap, OrderShop, TappedEvent, TcpProxy, TestEngine, fast_config, unique};
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// The shared order shop, with this file's helpers.
struct Shop(OrderShop);

impl std::ops::Deref for Shop {
    type Target = OrderShop;
    fn deref(&self) -> &OrderShop {
        &self.0
    }
}

impl Shop {
    async fn start(url: &str, events: EventsConfig, faults: Faults) -> Self {
        let engine = TestEngine::start_on(url, fast_config(), events).await;
        // Plenty of three SKUs, and 60 of the fourth: some orders run out of stock.
        let stock = |s| if s == 3 { 60 } else { 10_000 };
        Self(OrderShop::open(engine, faults, BreakerSettings::default(), "ev", stock).await)
    }

    fn orders(&self, from: usize, n: usize) -> Vec<Order> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(from as u64 + 7);
        (from..from + n)
            .map(|i| random_order(&mut rng, &self.prefix, i, 4))
            .collect()
    }

    async fn place_all(&self, orders: &[Order], concurrency: usize) -> Vec<OrderOutcome> {
        use futures::StreamExt;
        futures::stream::iter(orders.iter().map(|o| async move {
            let run = self
                .client
                .start_workflow(
                    StartOptions::new(ORDER_WORKFLOW_TYPE, &o.order_id, &self.queue),
                    o,
                )
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(120), run.result::<OrderOutcome>())
                .await
                .expect("the order ends")
                .unwrap()
        }))
        .buffered(concurrency)
        .collect()
        .await
    }

    /// (type, sequence, id) of the events the order's history records, in history order.
    async fn history_events(&self, order_id: &str) -> Vec<(String, i64, String)> {
        self.client
            .handle(order_id)
            .history()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.attributes {
                Some(pb::history_event::Attributes::EventPublished(p)) => {
                    Some((p.event_type, p.sequence, p.event_id))
                }
                _ => None,
            })
            .collect()
    }

    async fn wait_projected(&self) {
        let store = self.engine.engine.store().clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let s = store.outbox_status(now_ms()).await.unwrap();
            if s.unprojected == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the read model stays {} events behind",
                s.unprojected
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn relaying() -> EventsConfig {
    let mut e = EventsConfig::default();
    e.amqp_url = Some(martix_tests::amqp_url());
    e
}

/// The event types an order with this outcome publishes, in order.
fn expected_types(o: &OrderOutcome) -> Vec<&'static str> {
    let mut t = vec!["order.placed"];
    match (o.status.as_str(), o.failed_step.as_deref()) {
        ("completed", _) => t.extend([
            "order.priced",
            "inventory.reserved",
            "payment.charged",
            "shipment.created",
            "order.completed",
        ]),
        ("compensated", Some("payment")) => t.extend([
            "order.priced",
            "inventory.reserved",
            "payment.declined",
            "inventory.released",
            "order.compensated",
        ]),
        ("compensated", Some("shipment")) => t.extend([
            "order.priced",
            "inventory.reserved",
            "payment.charged",
            "payment.refunded",
            "inventory.released",
            "order.compensated",
        ]),
        ("failed", Some("reserve")) => t.extend(["order.priced", "order.failed"]),
        ("failed", Some("validate")) => t.push("order.failed"),
        ("rejected", _) => t.push("order.rejected"),
        other => panic!("unexpected outcome {other:?} of {o:?}"),
    }
    t
}

/// Per order: the distinct events received (by message id), by sequence. Panics if one id
/// came with two different bodies.
fn by_order(
    received: &[TappedEvent],
    orders: &HashSet<String>,
) -> BTreeMap<String, Vec<TappedEvent>> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    let mut out: BTreeMap<String, Vec<TappedEvent>> = BTreeMap::new();
    for e in received.iter().filter(|e| orders.contains(e.order_id())) {
        match seen.get(e.message_id.as_str()) {
            Some(raw) => assert_eq!(
                *raw, e.raw,
                "event {} delivered with other content",
                e.message_id
            ),
            None => {
                seen.insert(&e.message_id, &e.raw);
                out.entry(e.order_id().to_owned())
                    .or_default()
                    .push(e.clone());
            }
        }
    }
    for events in out.values_mut() {
        events.sort_by_key(TappedEvent::sequence);
    }
    out
}

fn terminal(e: &TappedEvent) -> bool {
    matches!(
        e.event_type(),
        "order.completed"
            | "order.compensated"
            | "order.canceled"
            | "order.failed"
            | "order.rejected"
    )
}

fn all_terminal(received: &[TappedEvent], orders: &HashSet<String>) -> bool {
    let done: HashSet<&str> = received
        .iter()
        .filter(|e| terminal(e))
        .map(TappedEvent::order_id)
        .collect();
    orders.iter().all(|o| done.contains(o.as_str()))
}

/// Every order's events as received match its history and its outcome.
async fn check_against_histories(
    shop: &Shop,
    orders: &[Order],
    outcomes: &[OrderOutcome],
    received: &[TappedEvent],
) -> usize {
    let ids: HashSet<String> = orders.iter().map(|o| o.order_id.clone()).collect();
    let got = by_order(received, &ids);
    let ledger = shop.adapters.ledger(&shop.prefix).await.unwrap();
    let mut events = 0;
    for (order, outcome) in orders.iter().zip(outcomes) {
        let tapped = &got[&order.order_id];
        events += tapped.len();
        let types: Vec<&str> = tapped.iter().map(TappedEvent::event_type).collect();
        assert_eq!(
            types,
            expected_types(outcome),
            "{}: {outcome:?}",
            order.order_id
        );
        let seqs: Vec<i64> = tapped.iter().map(TappedEvent::sequence).collect();
        assert_eq!(
            seqs,
            (1..=tapped.len() as i64).collect::<Vec<_>>(),
            "no gaps"
        );
        let history = shop.history_events(&order.order_id).await;
        let from_history: Vec<(String, i64, String)> = tapped
            .iter()
            .map(|e| {
                (
                    e.event_type().to_owned(),
                    e.sequence(),
                    e.message_id.clone(),
                )
            })
            .collect();
        assert_eq!(
            from_history, history,
            "{}: the broker's events are the history's",
            order.order_id
        );
        // No event for a step that did not happen: a charge event iff the ledger charged.
        let charged = ledger
            .get(&order.order_id)
            .is_some_and(|(_, charges)| *charges > 0);
        assert_eq!(
            types.contains(&"payment.charged"),
            charged,
            "{}",
            order.order_id
        );
        for e in tapped {
            assert_eq!(e.routing_key, e.event_type());
            assert_eq!(e.body["namespace"], "default");
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_mixed_orders_reach_rabbitmq_as_the_histories_say() {
    let url = martix_tests::fresh_postgres_url().await;
    let mut tap = EventTap::open().await;
    let shop = Shop::start(&url, relaying(), Faults::default()).await;
    let orders = shop.orders(0, 300);
    let outcomes = shop.place_all(&orders, 32).await;
    let ids: HashSet<String> = orders.iter().map(|o| o.order_id.clone()).collect();
    assert!(
        tap.receive_until(Duration::from_secs(60), |r| all_terminal(r, &ids))
            .await,
        "every order's terminal event arrives"
    );
    let events = check_against_histories(&shop, &orders, &outcomes, &tap.received).await;
    let statuses: BTreeMap<&str, usize> = outcomes.iter().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(o.status.as_str()).or_default() += 1;
        m
    });
    println!("300 orders {statuses:?}: {events} events, each once and in order");
    assert!(statuses.len() >= 3, "a mix of outcomes: {statuses:?}");
    let status = shop
        .engine
        .engine
        .store()
        .outbox_status(now_ms())
        .await
        .unwrap();
    assert_eq!(status.unsent, 0, "everything confirmed is marked sent");
    drop(shop);
    martix_tests::drop_postgres_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_rabbitmq_is_away() {
    let url = martix_tests::fresh_postgres_url().await;
    let mut tap = EventTap::open().await;
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let mut events = EventsConfig::default();
    events.amqp_url = Some(format!("amqp://guest:guest@{}/%2f", proxy.addr));
    let shop = Shop::start(&url, events, Faults::default()).await;
    let before = shop.orders(0, 30);
    let mut outcomes = shop.place_all(&before, 8).await;
    let first: HashSet<String> = before.iter().map(|o| o.order_id.clone()).collect();
    assert!(
        tap.receive_until(Duration::from_secs(30), |r| all_terminal(r, &first))
            .await
    );

    // RabbitMQ goes away: orders go on; their events wait in the outbox, visibly.
    proxy.cut();
    let during = shop.orders(30, 30);
    outcomes.extend(shop.place_all(&during, 8).await);
    let store = shop.engine.engine.store().clone();
    let status = store.outbox_status(now_ms()).await.unwrap();
    assert!(status.unsent >= 30 * 2, "the backlog is kept: {status:?}");
    let metrics = reqwest::get(format!("{}/metrics", shop.engine.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let backlog: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("martix_outbox_unsent "))
        .expect("the backlog is in /metrics")
        .parse()
        .unwrap();
    assert!(backlog >= 60.0, "martix_outbox_unsent {backlog}");
    let unsent_while_away = status.unsent;

    // It comes back: everything is delivered, nothing with other content.
    proxy.restore();
    let all: Vec<Order> = before.iter().chain(&during).cloned().collect();
    let ids: HashSet<String> = all.iter().map(|o| o.order_id.clone()).collect();
    let back = std::time::Instant::now();
    assert!(
        tap.receive_until(Duration::from_secs(60), |r| all_terminal(r, &ids))
            .await,
        "the backlog is delivered once RabbitMQ is back"
    );
    let caught_up = back.elapsed();
    let delivered = check_against_histories(&shop, &all, &outcomes, &tap.received).await;
    let duplicates = tap.received.len()
        - tap
            .received
            .iter()
            .map(|e| &e.message_id)
            .collect::<HashSet<_>>()
            .len();
    println!(
        "RabbitMQ away for 30 orders: {unsent_while_away} events waited; delivered {delivered} \
         within {caught_up:?} of its return, {duplicates} duplicates (same id, same content)"
    );
    drop(shop);
    martix_tests::drop_postgres_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_outbox_and_send_each_event_once() {
    let url = martix_tests::fresh_postgres_url().await;
    let mut tap = EventTap::open().await;
    let shop = Shop::start(&url, relaying(), Faults::default()).await;
    // A second node on the same database, relaying too.
    let other = TestEngine::start_on(&url, EngineConfig::default(), relaying()).await;
    let store = shop.engine.engine.store().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = store.outbox_status(now_ms()).await.unwrap();
        let owners: HashSet<&String> = s.leases.iter().map(|l| &l.owner).collect();
        if owners.len() == 2 && s.leases.len() == 16 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "two nodes share the shards: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let orders = shop.orders(0, 100);
    let outcomes = shop.place_all(&orders, 16).await;
    let ids: HashSet<String> = orders.iter().map(|o| o.order_id.clone()).collect();
    assert!(
        tap.receive_until(Duration::from_secs(60), |r| all_terminal(r, &ids))
            .await
    );
    let delivered = check_against_histories(&shop, &orders, &outcomes, &tap.received).await;
    // Wait a little for any late second copy, then count.
    tap.receive_until(Duration::from_secs(2), |_| false).await;
    let mine: Vec<&TappedEvent> = tap
        .received
        .iter()
        .filter(|e| ids.contains(e.order_id()))
        .collect();
    assert_eq!(
        mine.len(),
        delivered,
        "no event sent twice by the two nodes"
    );
    println!("two nodes sent {delivered} events of 100 orders, each once");
    drop(other);
    drop(shop);
    martix_tests::drop_postgres_database(&url).await;
}

async fn publish_raw(
    channel: &lapin::Channel,
    queue: &str,
    id: Option<&str>,
    kind: &str,
    body: &[u8],
) {
    let mut props = lapin::BasicProperties::default().with_type(kind.into());
    if let Some(id) = id {
        props = props.with_message_id(id.into());
    }
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_cancel_delivered_twice_cancels_once_and_garbage_is_dead_lettered() {
    let url = martix_tests::fresh_postgres_url().await;
    let inbound = unique("inbound");
    let mut events = relaying();
    events.consume_queue = Some(inbound.clone());
    // The consumer may send these signals and start orders, in namespace `default` only.
    events.inbound.signals = vec!["cancel".into(), "note".into()];
    events.inbound.workflow_types = vec!["order".into()];
    // A slow payment: the cancellation arrives while the charge is under way.
    let mut faults = Faults::default();
    faults.payment.latency = Duration::from_millis(1500);
    let shop = Shop::start(&url, events, faults).await;
    let conn = martix_tests::amqp_connection().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    for q in [inbound.clone(), format!("{inbound}.dead")] {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let mut order = shop.orders(0, 1).remove(0);
    order.customer_id = format!("{}-cust", shop.prefix);
    order.shipping_address.country = "FR".into();
    let run = shop
        .client
        .start_workflow(
            StartOptions::new(ORDER_WORKFLOW_TYPE, &order.order_id, &shop.queue),
            &order,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancel = serde_json::json!({ "order_id": order.order_id, "reason": "customer asked" });
    let body = cancel.to_string();
    let message_id = unique("msg");
    for _ in 0..2 {
        publish_raw(
            &ch,
            &inbound,
            Some(&message_id),
            "order.cancel_requested",
            body.as_bytes(),
        )
        .await;
    }
    publish_raw(
        &ch,
        &inbound,
        Some(&unique("msg")),
        "signal",
        b"this is not json",
    )
    .await;
    publish_raw(
        &ch,
        &inbound,
        None,
        "order.cancel_requested",
        body.as_bytes(),
    )
    .await;
    // Signal-with-start: a new order started by a message, its signal recorded after the start.
    let mut started = shop.orders(1, 1).remove(0);
    started.customer_id = format!("{}-cust-2", shop.prefix);
    let sws = serde_json::json!({
        "workflow_id": started.order_id,
        "signal": "note",
        "input": {"text": "gift wrap"},
        "start": {"workflow_type": "order", "task_queue": shop.queue, "input": started},
    });
    publish_raw(
        &ch,
        &inbound,
        Some(&unique("msg")),
        "note",
        sws.to_string().as_bytes(),
    )
    .await;

    // Outside the consumer's rules: another namespace, a signal it may not send, a workflow
    // type it may not start. Each is dead-lettered with the reason and changes nothing.
    let outside = [
        serde_json::json!({"namespace": "payroll", "workflow_id": order.order_id, "signal": "cancel"}),
        serde_json::json!({"workflow_id": order.order_id, "signal": "refund_everything"}),
        serde_json::json!({"workflow_id": unique("wf"), "signal": "note",
            "start": {"workflow_type": "payroll", "task_queue": shop.queue}}),
    ];
    for body in &outside {
        publish_raw(
            &ch,
            &inbound,
            Some(&unique("msg")),
            "signal",
            body.to_string().as_bytes(),
        )
        .await;
    }

    let outcome: OrderOutcome = tokio::time::timeout(Duration::from_secs(60), run.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.status, "compensated", "{outcome:?}");
    assert_eq!(outcome.failed_step.as_deref(), Some("cancel"));
    let history = shop.client.handle(&order.order_id).history().await.unwrap();
    let cancels = history
        .iter()
        .filter(|e| matches!(&e.attributes, Some(pb::history_event::Attributes::WorkflowExecutionSignaled(s)) if s.signal_name == "cancel"))
        .count();
    assert_eq!(cancels, 1, "one signal for a message delivered twice");
    let types: Vec<String> = shop
        .history_events(&order.order_id)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        types.last().map(String::as_str),
        Some("order.canceled"),
        "{types:?}"
    );
    assert!(
        types.contains(&"payment.refunded".to_owned())
            && types.contains(&"inventory.released".to_owned())
    );

    let started_outcome: OrderOutcome = tokio::time::timeout(
        Duration::from_secs(60),
        shop.client.handle(&started.order_id).result(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(started_outcome.order_id, started.order_id);
    let history = shop
        .client
        .handle(&started.order_id)
        .history()
        .await
        .unwrap();
    assert!(matches!(
        &history[1].attributes,
        Some(pb::history_event::Attributes::WorkflowExecutionSignaled(s)) if s.signal_name == "note"
    ));

    // The five bad messages wait in the dead-letter queue with their reasons.
    let mut reasons = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while reasons.len() < 5 && tokio::time::Instant::now() < deadline {
        match ch
            .basic_get(
                format!("{inbound}.dead").as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            Some(m) => {
                let headers = m.delivery.properties.headers().clone().unwrap_or_default();
                let reason = match headers.inner().get("x-martix-error") {
                    Some(AMQPValue::LongString(s)) => s.to_string(),
                    other => panic!("no reason header: {other:?}"),
                };
                reasons.push((
                    String::from_utf8_lossy(&m.delivery.data).into_owned(),
                    reason,
                ));
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    for (body, why) in [
        (&outside[0], "namespace 'payroll' is not one"),
        (&outside[1], "signal 'refund_everything' is not one"),
        (&outside[2], "workflow type 'payroll' is not one"),
    ] {
        let body = body.to_string();
        assert!(
            reasons
                .iter()
                .any(|(b, reason)| *b == body && reason.contains(why)),
            "{body} should be dead-lettered saying {why}: {reasons:?}"
        );
    }
    assert!(
        reasons
            .iter()
            .any(|(b, why)| *b == body && why.contains("message_id")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(body, why)| body == "this is not json" && why.contains("not JSON")),
        "{reasons:?}"
    );
    drop(shop);
    martix_tests::drop_postgres_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_model_is_what_the_histories_say_and_a_rebuild_gives_the_same_rows() {
    let url = martix_tests::sqlite_url();
    let shop = Shop::start(&url, EventsConfig::default(), Faults::default()).await;
    let orders = shop.orders(0, 80);
    let outcomes = shop.place_all(&orders, 16).await;
    shop.wait_projected().await;
    let engine = &shop.engine.engine;
    let store = martix_orders::ReadModel::new(engine.store().pools());
    let rows = store.all_orders().await.unwrap();
    assert_eq!(rows.len(), orders.len());
    for (order, outcome) in orders.iter().zip(&outcomes) {
        let row = rows
            .iter()
            .find(|r| r.order_id == order.order_id)
            .expect("a row per order");
        let status = match (outcome.status.as_str(), outcome.failed_step.as_deref()) {
            ("compensated", Some("cancel")) => "canceled",
            (s, _) => s,
        };
        assert_eq!(row.status, status, "{}", order.order_id);
        assert_eq!(row.customer_id, order.customer_id);
        assert_eq!(
            row.charged_cents - row.refunded_cents,
            outcome.charged_cents,
            "{}",
            order.order_id
        );
        let events = store
            .order_events("default", &order.order_id)
            .await
            .unwrap();
        let history = shop.history_events(&order.order_id).await;
        if history.iter().any(|e| e.0 == "order.priced") {
            assert_eq!(
                row.total_cents,
                martix_order_contract::invoice(order).total_cents
            );
        }
        assert_eq!(
            events
                .iter()
                .map(|e| (e.event_type.clone(), e.sequence, e.event_id.clone()))
                .collect::<Vec<_>>(),
            history
        );
        assert_eq!(row.last_sequence, history.len() as i64);
    }
    // Folding the histories gives the same rows; so does a rebuild.
    let projections: [std::sync::Arc<dyn martix_engine::events::Projection>; 1] =
        [std::sync::Arc::new(martix_orders::OrdersProjection)];
    let (from_histories, _) = martix_orders::view::fold_all(
        martix_engine::events::events_from_histories(engine, &projections)
            .await
            .unwrap(),
    );
    assert_eq!(from_histories, rows);
    let folded = martix_engine::events::rebuild(engine, &projections)
        .await
        .unwrap();
    assert!(
        folded >= orders.len(),
        "{folded} events for {} orders",
        orders.len()
    );
    assert_eq!(
        store.all_orders().await.unwrap(),
        rows,
        "a rebuild gives the same rows"
    );
    // The same over gRPC, which answers how many orders and events it rebuilt.
    let rebuilt = martix_orders::pb::order_service_client::OrderServiceClient::connect(
        shop.engine.endpoint.clone(),
    )
    .await
    .unwrap()
    .rebuild_orders(martix_orders::pb::RebuildOrdersRequest {})
    .await
    .unwrap()
    .into_inner();
    assert_eq!(rebuilt.orders as usize, orders.len());
    assert_eq!(rebuilt.events as usize, folded);
    assert_eq!(store.all_orders().await.unwrap(), rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_hold_every_order_once_while_orders_arrive() {
    let url = martix_tests::sqlite_url();
    let shop = Shop::start(&url, EventsConfig::default(), Faults::default()).await;
    let first = shop.orders(0, 40);
    shop.place_all(&first, 16).await;
    shop.wait_projected().await;
    let http = reqwest::Client::new();
    let base = format!("{}/v1/orders", shop.engine.http);

    // Orders keep arriving while a reader pages through.
    let more = shop.orders(40, 30);
    let placing = shop.place_all(&more, 2);
    let reading = async {
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = http.get(&base).query(&[("page_size", "7")]);
            if let Some(t) = &token {
                req = req.query(&[("page_token", t)]);
            }
            let page: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
            for o in page["orders"].as_array().unwrap() {
                seen.push(o["order_id"].as_str().unwrap().to_owned());
            }
            match page["next_page_token"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => break seen,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (_, seen) = tokio::join!(placing, reading);
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "no order twice across the pages"
    );
    for o in &first {
        assert!(
            distinct.contains(&o.order_id),
            "{} is on a page",
            o.order_id
        );
    }

    // Filters, and the error of a token that is not ours.
    let completed: serde_json::Value = http
        .get(&base)
        .query(&[("status", "completed"), ("page_size", "1000")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = completed["orders"].as_array().unwrap();
    assert!(!list.is_empty() && list.iter().all(|o| o["status"] == "completed"));
    let one = &first[0];
    let mine: serde_json::Value = http
        .get(&base)
        .query(&[("customer_id", one.customer_id.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["orders"][0]["order_id"], one.order_id.as_str());
    let bad = http
        .get(&base)
        .query(&[("page_token", "definitely-not-a-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "INVALID_ARGUMENT");
    assert_eq!(body["error"]["field"], "page_token");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("next_page_token"),
        "{body}"
    );
    let bad = http
        .get(&base)
        .query(&[("status", "lost")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // The order's page reads the view and its events.
    let view: serde_json::Value = http
        .get(format!("{base}/{}", one.order_id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["order"]["order_id"], one.order_id.as_str());
    assert_eq!(view["events"][0]["type"], "order.placed");
    assert_eq!(view["events"][0]["sequence"], 1);
}
