//! `/metrics` after a run of orders: the counts are the ones the run produced.

use martix_activities::{Backend as Adapters, OrderActivities, ReferenceAdapters};
use martix_engine::EngineConfig;
use martix_order_contract::{Address, Item, Order, OrderOutcome};
use martix_sdk::{Client, StartOptions, Worker, WorkerOptions};
use martix_tests::{Backend, TestEngine, unique};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `name{labels} value` lines of a Prometheus/OpenMetrics text, by `name{labels}`.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_what_a_run_of_orders_did() {
    let t = TestEngine::start(Backend::Postgres, EngineConfig::default()).await;
    let adapters = ReferenceAdapters::connect(&t.database_url).await.unwrap();
    let prefix = unique("metrics").replace('-', "");
    let sku = format!("{prefix}-sku");
    adapters.seed_stock(&sku, 100).await.unwrap();
    let queue = unique("orders");
    let mut worker = Worker::new(&t.endpoint, WorkerOptions::new(&queue)).unwrap();
    worker.workflow(martix_workflows::OrderSaga, martix_workflows::order);
    OrderActivities::new(
        Adapters::reference(adapters.clone(), None),
        Default::default(),
        Default::default(),
    )
    .register(&mut worker);
    let stop = CancellationToken::new();
    tokio::spawn(worker.run(stop.clone()));
    let client = Client::connect(t.endpoint.clone()).await.unwrap();
    // Three orders that complete and one whose payment is declined (it compensates).
    let customers = ["cust-1", "cust-2", "cust-3", "declined-4"];
    let mut handles = Vec::new();
    for (i, customer) in customers.iter().enumerate() {
        let order = Order {
            order_id: format!("{prefix}-{i}"),
            customer_id: format!("{customer}-{prefix}"),
            currency: "EUR".into(),
            items: vec![Item {
                sku: sku.clone(),
                qty: 1,
                unit_price_cents: 1000,
            }],
            shipping_address: Address {
                country: "FR".into(),
                ..Default::default()
            },
            discount_code: None,
            placed_by: None,
        };
        handles.push(
            client
                .start_workflow(StartOptions::new("order", &order.order_id, &queue), &order)
                .await
                .unwrap(),
        );
    }
    for h in handles {
        let o: OrderOutcome = tokio::time::timeout(Duration::from_secs(60), h.result())
            .await
            .unwrap()
            .unwrap();
        assert!(["completed", "compensated"].contains(&o.status.as_str()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the worker is back polling
    let resp = reqwest::get(format!("{}/metrics", t.http)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    let m = parse(&text);
    let get = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("{k} is not in /metrics:\n{text}"))
    };
    assert_eq!(
        get(r#"martix_workflows_started_total{workflow_type="order"}"#),
        4.0
    );
    assert_eq!(
        get(r#"martix_workflows_closed_total{workflow_type="order",status="completed"}"#),
        3.0
    );
    assert_eq!(
        get(r#"martix_workflows_closed_total{workflow_type="order",status="compensated"}"#),
        1.0
    );
    assert_eq!(
        get(r#"martix_workflow_duration_seconds_count{workflow_type="order",status="completed"}"#),
        3.0
    );
    let attempts = |ty: &str, outcome: &str| {
        get(&format!(
            r#"martix_activity_attempts_total{{activity_type="{ty}",outcome="{outcome}"}}"#
        ))
    };
    assert_eq!(attempts("price_order", "completed"), 4.0);
    assert_eq!(attempts("reserve_inventory", "completed"), 4.0);
    assert_eq!(attempts("charge_payment", "completed"), 3.0);
    assert_eq!(attempts("charge_payment", "failed"), 1.0, "the decline");
    assert_eq!(attempts("release_inventory", "completed"), 1.0);
    assert_eq!(attempts("create_shipment", "completed"), 3.0);
    assert_eq!(attempts("send_notification", "completed"), 4.0);
    assert!(
        !m.keys()
            .any(|k| k.starts_with("martix_activity_retries_total")),
        "nothing was retried:\n{text}"
    );
    // Every activity task went through schedule-to-start; 4 price + 4 reserve + 4 charge +
    // 3 ship + 1 release + 4 notify = 20.
    assert_eq!(
        get(r#"martix_schedule_to_start_seconds_count{kind="activity"}"#),
        20.0
    );
    // The 4 orders' events (placed, priced, reserved, charged or declined, shipped or
    // refunded... and a terminal one) all reached the read model.
    assert!(
        m.contains_key("martix_outbox_unsent"),
        "the outbox backlog is exported"
    );
    assert!(m.contains_key("martix_read_model_lag_seconds"));
    // At least a start, a first workflow task and one per step of each order.
    assert!(get("martix_store_commit_seconds_count") >= 4.0 * 7.0);
    // The completed orders' five results each came with the next decision, recorded with it.
    assert!(get(r#"martix_decisions_ahead_total{outcome="recorded"}"#) >= 15.0);
    assert!(get(r#"martix_long_polls_waiting{kind="activity"}"#) >= 1.0);
    stop.cancel();
}
