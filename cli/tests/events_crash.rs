//! Crash test of the event relay on the real `martix` binary, PostgreSQL and RabbitMQ: the
//! engine is killed (SIGKILL) while its relay publishes the orders' business events; after a
//! restart every event is delivered, in order and without gaps per order, at least once, a
//! redelivery byte for byte the same as the first delivery. Prints its figures (run with
//! `-- --nocapture`).

mod common;

use common::orders::{Placing, worker, workload};
use common::{free_addr, signal, spawn_at, wait_exit};
use martix_proto::v1 as pb;
use martix_sdk::Client;
use martix_tests::{EventTap, TappedEvent};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// The event types that end an order: exactly one, the last.
const TERMINAL: [&str; 5] = [
    "order.completed",
    "order.compensated",
    "order.canceled",
    "order.failed",
    "order.rejected",
];

/// An event as the workflow history recorded it.
struct Recorded {
    sequence: i64,
    event_type: String,
    data: serde_json::Value,
}

/// The `EventPublished` events of `order_id`'s history, by event id.
async fn recorded(client: &Client, order_id: &str) -> HashMap<String, Recorded> {
    let history = client
        .handle(order_id)
        .history()
        .await
        .unwrap_or_else(|e| panic!("history of {order_id}: {e}"));
    history
        .into_iter()
        .filter_map(|ev| match ev.attributes {
            Some(pb::history_event::Attributes::EventPublished(p)) => {
                let data = p
                    .body
                    .map(|b| serde_json::from_slice(&b.data).unwrap_or_default())
                    .unwrap_or_default();
                Some((
                    p.event_id,
                    Recorded {
                        sequence: p.sequence,
                        event_type: p.event_type,
                        data,
                    },
                ))
            }
            _ => None,
        })
        .collect()
}

/// Every outbox row of the namespace `default`, in position order.
async fn outbox(endpoint: &str) -> Vec<martix_orders::pb::OrderEvent> {
    let mut client =
        martix_orders::pb::order_service_client::OrderServiceClient::connect(endpoint.to_owned())
            .await
            .expect("connect to the restarted engine");
    let mut rows = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .list_outbox_events(martix_orders::pb::ListOutboxEventsRequest {
                namespace: "default".into(),
                after_position: after,
                page_size: 1000,
            })
            .await
            .expect("list the outbox")
            .into_inner()
            .events;
        let Some(last) = page.last() else { break };
        after = last.position;
        rows.extend(page);
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_engine_while_the_relay_publishes_loses_no_event() {
    const ORDERS: usize = 150;
    // A database of its own: no other test's engine leases this outbox's shards.
    let url = martix_tests::fresh_postgres_url().await;
    let amqp = martix_tests::amqp_url();
    // Bound before anything publishes: the tap sees every event.
    let mut tap = EventTap::open().await;
    let addr = free_addr();
    let args = [
        "server",
        "--insecure",
        "--database-url",
        &url,
        "--amqp-url",
        &amqp,
    ];
    let engine = spawn_at(&args, &addr);
    let queue = martix_tests::unique("events-crash");
    let w = worker(&url, &engine.grpc, &queue, &[]);
    let load = workload(&url, ORDERS, 7).await;
    let ours: HashSet<String> = load.orders.iter().map(|o| o.order_id.clone()).collect();
    let is_ours = |e: &TappedEvent| ours.contains(e.order_id());
    // A lazy channel reconnects to the restarted engine on the same address.
    let client = Client::from_channel(
        tonic::transport::Endpoint::from_shared(engine.grpc.clone())
            .unwrap()
            .connect_lazy(),
    );
    // Each order runs once: a retry through the crash waits for its run, never starts another.
    let placing = Placing::start_once(client.clone(), &queue, &load, 32);

    // Kill the engine once the relay is well into publishing, with orders still under way.
    assert!(
        tap.receive_until(Duration::from_secs(120), |r| {
            r.iter().filter(|e| is_ours(e)).count() >= 100
        })
        .await,
        "the relay published fewer than 100 events of the orders in 120 s"
    );
    let ended_before = placing.reach(0).await;
    assert!(
        ended_before < ORDERS,
        "orders are still being placed when the engine is killed ({ended_before} of {ORDERS} ended)"
    );
    signal(&engine, "-KILL");
    let killed_at = Instant::now();
    wait_exit(engine);
    let received_before = tap.received.iter().filter(|e| is_ours(e)).count();
    let engine = spawn_at(&args, &addr);
    let restarted = Instant::now();

    let outcomes = placing.finish().await;
    assert_eq!(outcomes.len(), ORDERS, "every order reached its outcome");
    let orders_done = restarted.elapsed();
    let all_terminal = |r: &[TappedEvent]| {
        r.iter()
            .filter(|e| is_ours(e) && TERMINAL.contains(&e.event_type()))
            .map(|e| e.order_id())
            .collect::<HashSet<_>>()
            .len()
            == ORDERS
    };
    let delivered = tap
        .receive_until(Duration::from_secs(60), all_terminal)
        .await;
    let delivered_at = Instant::now();
    let missing: Vec<&String> = ours
        .iter()
        .filter(|id| {
            !tap.received
                .iter()
                .any(|e| e.order_id() == id.as_str() && TERMINAL.contains(&e.event_type()))
        })
        .collect();
    assert!(
        delivered,
        "{} orders' terminal events were not delivered within 60 s after the orders ended, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );

    // The broker confirmed everything: the relay marks every row sent. Then whatever is still
    // in flight to the tap (redeliveries of rows sent before the crash) is received too.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows: Vec<martix_orders::pb::OrderEvent> = outbox(&engine.grpc)
            .await
            .into_iter()
            .filter(|r| ours.contains(&r.order_id))
            .collect();
        let unsent = rows.iter().filter(|r| !r.sent).count();
        if unsent == 0 {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{unsent} of {} outbox rows still unsent 30 s after every terminal event was delivered",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = tap.receive_until(Duration::from_secs(3), |_| false).await;

    // Per order: distinct by message id, sequences 1..=n, one terminal event and it is the last,
    // a duplicate is byte-identical, and the events are exactly those the history recorded.
    let mut by_order: BTreeMap<&str, Vec<&TappedEvent>> = BTreeMap::new();
    for e in tap.received.iter().filter(|e| is_ours(e)) {
        by_order.entry(e.order_id()).or_default().push(e);
    }
    assert_eq!(
        by_order.len(),
        ORDERS,
        "events of every order were delivered"
    );
    let (mut distinct_total, mut received_total, mut duplicated_ids) = (0, 0, 0);
    for (order_id, events) in &by_order {
        let mut first: BTreeMap<&str, &TappedEvent> = BTreeMap::new();
        let mut times: HashMap<&str, usize> = HashMap::new();
        for e in events {
            *times.entry(e.message_id.as_str()).or_default() += 1;
            assert_eq!(
                e.message_id,
                e.body["id"].as_str().unwrap_or_default(),
                "{order_id}: the message id is the event id"
            );
            assert_eq!(
                e.routing_key,
                e.event_type(),
                "{order_id}: the routing key is the event type"
            );
            match first.get(e.message_id.as_str()) {
                Some(earlier) => assert_eq!(
                    earlier.raw, e.raw,
                    "{order_id}: event {} delivered twice with different bodies",
                    e.message_id
                ),
                None => {
                    first.insert(e.message_id.as_str(), e);
                }
            }
        }
        received_total += events.len();
        distinct_total += first.len();
        duplicated_ids += times.values().filter(|n| **n > 1).count();
        let mut distinct: Vec<&TappedEvent> = first.values().copied().collect();
        distinct.sort_by_key(|e| e.sequence());
        let runs: HashSet<&str> = distinct
            .iter()
            .map(|e| e.body["run_id"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(runs.len(), 1, "{order_id}: one run published its events");
        let sequences: Vec<i64> = distinct.iter().map(|e| e.sequence()).collect();
        let expected: Vec<i64> = (1..=distinct.len() as i64).collect();
        assert_eq!(
            sequences, expected,
            "{order_id}: sequences of the distinct events are 1..=n"
        );
        assert_eq!(distinct[0].event_type(), "order.placed", "{order_id}");
        let last = distinct.last().unwrap();
        assert!(
            TERMINAL.contains(&last.event_type()),
            "{order_id}: the last event {} is not terminal",
            last.event_type()
        );
        assert_eq!(
            distinct
                .iter()
                .filter(|e| TERMINAL.contains(&e.event_type()))
                .count(),
            1,
            "{order_id}: exactly one terminal event"
        );
        let history = recorded(&client, order_id).await;
        assert_eq!(
            distinct.len(),
            history.len(),
            "{order_id}: delivered {} distinct events, the history published {}",
            distinct.len(),
            history.len()
        );
        for e in &distinct {
            let h = history.get(&e.message_id).unwrap_or_else(|| {
                panic!(
                    "{order_id}: event {} delivered but not in the history",
                    e.message_id
                )
            });
            assert_eq!(
                (h.sequence, h.event_type.as_str()),
                (e.sequence(), e.event_type()),
                "{order_id}: event {} as delivered and as recorded",
                e.message_id
            );
            assert_eq!(
                h.data, e.body["data"],
                "{order_id}: event {} data as delivered and as recorded",
                e.message_id
            );
        }
    }
    // The outbox holds exactly the delivered events, all sent.
    let outbox_ids: HashSet<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    let tapped_ids: HashSet<&str> = tap
        .received
        .iter()
        .filter(|e| is_ours(e))
        .map(|e| e.message_id.as_str())
        .collect();
    assert_eq!(rows.len(), outbox_ids.len(), "one outbox row per event");
    assert_eq!(
        tapped_ids, outbox_ids,
        "the delivered events are the outbox's"
    );

    let statuses = outcomes.iter().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(o.status.as_str()).or_insert(0) += 1;
        m
    });
    println!(
        "events crash test (kill -9 the engine once {received_before} events were delivered and {ended_before} orders ended, then restart it):\n  \
         {ORDERS} orders {statuses:?}, all ended {:.1} s after the restart\n  \
         {distinct_total} events delivered ({received_total} messages), {} duplicates after the crash ({duplicated_ids} events delivered more than once), all byte-identical\n  \
         every event delivered {:.1} s after the restart ({:.1} s after the kill); outbox: {} rows, all sent",
        orders_done.as_secs_f64(),
        received_total - distinct_total,
        (delivered_at - restarted).as_secs_f64(),
        (delivered_at - killed_at).as_secs_f64(),
        rows.len()
    );
    drop(w);
    drop(engine);
    martix_tests::drop_postgres_database(&url).await;
}
