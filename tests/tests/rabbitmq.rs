//! Order confirmations on the real RabbitMQ (127.0.0.1:5672, or `MARTIX_TEST_AMQP_URL`):
//! published to `martix.orders` with routing key `order.<outcome>`, persistent, with the
//! idempotency key as message id, and read back.

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use martix_activities::notify::{AmqpNotifier, EXCHANGE};
use martix_activities::{
    Backend as Adapters, BreakerSettings, Faults, OrderActivities, ReferenceAdapters,
};
use martix_engine::EngineConfig;
use martix_order_contract::{Address, Item, Order, OrderOutcome};
use martix_sdk::{Client, StartOptions, Worker, WorkerOptions};
use martix_tests::{Backend, TestEngine, unique};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn confirmations_are_published_and_read_back() {
    let url = martix_tests::amqp_url();
    let conn = martix_tests::amqp_connection().await;
    let notifier = AmqpNotifier::connect(&url)
        .await
        .expect("declare the exchange");
    let channel = conn.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().as_str().into(),
            EXCHANGE.into(),
            "order.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.name().as_str().into(),
            "test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let engine = TestEngine::start(Backend::Sqlite, EngineConfig::default()).await;
    let adapters = ReferenceAdapters::connect(&engine.database_url)
        .await
        .unwrap();
    let prefix = unique("amqp").replace('-', "");
    adapters
        .seed_stock(&format!("{prefix}-sku"), 10)
        .await
        .unwrap();
    let activities = OrderActivities::new(
        Adapters::reference(adapters, Some(notifier)),
        Faults::default(),
        BreakerSettings::default(),
    );
    let q = unique("orders");
    let mut worker = Worker::new(&engine.endpoint, WorkerOptions::new(&q)).unwrap();
    worker.workflow(martix_workflows::OrderSaga, martix_workflows::order);
    activities.register(&mut worker);
    let shutdown = CancellationToken::new();
    tokio::spawn(worker.run(shutdown.clone()));

    let order = Order {
        order_id: format!("{prefix}-order-1"),
        customer_id: format!("cust-{prefix}"),
        currency: "EUR".into(),
        items: vec![Item {
            sku: format!("{prefix}-sku"),
            qty: 2,
            unit_price_cents: 700,
        }],
        shipping_address: Address {
            country: "FR".into(),
            ..Default::default()
        },
        discount_code: None,
        placed_by: None,
    };
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let run = client
        .start_workflow(StartOptions::new("order", &order.order_id, &q), &order)
        .await
        .unwrap();
    let outcome: OrderOutcome = tokio::time::timeout(Duration::from_secs(30), run.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.status, "completed");
    assert_eq!(outcome.notification, "sent");

    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a confirmation arrives")
        .expect("the consumer is open")
        .expect("a delivery");
    assert_eq!(delivery.routing_key.as_str(), "order.completed");
    let props = &delivery.properties;
    assert_eq!(*props.delivery_mode(), Some(2), "persistent");
    let message_id = props
        .message_id()
        .as_ref()
        .expect("a message id")
        .to_string();
    assert!(
        message_id.starts_with(&format!("default/{}/", order.order_id)),
        "the idempotency key: {message_id}"
    );
    let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(body["order_id"], order.order_id.as_str());
    // 2 x 7.00 EUR and 20% French VAT.
    assert_eq!(body["total_cents"], 1680);
    delivery.ack(BasicAckOptions::default()).await.unwrap();
    shutdown.cancel();
}
