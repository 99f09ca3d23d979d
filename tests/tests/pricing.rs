//! The velocity rule of the fraud checks on the reference adapters, on PostgreSQL and SQLite:
//! `recent_orders` counts a customer's orders in the minute ending with each one, a retried
//! call gives the same count, other customers do not count; and `price_order` end to end
//! (invoice, invalid order, amount limit, too many orders per customer or per caller, a price
//! that is not the catalogue's).

use martix_activities::{
    Backend as Adapters, BreakerSettings, Faults, FraudCheck, OrderActivities, ReferenceAdapters,
};
use martix_order_contract::{Address, Invoice, Item, Order, StepInput, names};
use martix_sdk::{
    ActivityOptions, Client, StartOptions, Worker, WorkerOptions, WorkflowContext, WorkflowError,
};
use martix_tests::{Backend, TestEngine, on_both_backends, unique};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Removes a SQLite test database (a PostgreSQL one is shared and stays).
fn remove_sqlite(url: &str) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
}

async fn recent_orders_count_per_customer_within_a_minute(backend: Backend) {
    // The store creates the PostgreSQL test database if needed (and says how to start
    // PostgreSQL when it does not answer).
    let (store, url) = backend.store_and_url().await;
    let adapters = ReferenceAdapters::connect(&url).await.unwrap();
    let p = unique("velocity").replace('-', "");
    let alice = format!("{p}-alice");
    let bob = format!("{p}-bob");

    // Attempts recorded earlier: one more than a minute ago (not counted), one 30 s ago.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    for (order, at) in [
        (format!("{p}-old"), now_ms() - 61_000),
        (format!("{p}-recent"), now_ms() - 30_000),
    ] {
        sqlx::query("INSERT INTO order_attempts (order_id, customer_id, at) VALUES ($1, $2, $3)")
            .bind(order)
            .bind(&alice)
            .bind(at)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    let a = |i: usize| format!("{p}-a{i:02}");
    // Each order counts itself and the recent one.
    for i in 1..=4 {
        assert_eq!(
            adapters.recent_orders(&alice, &a(i)).await.unwrap(),
            i as i64 + 1,
            "alice's order {i}"
        );
    }
    // Another customer's orders are counted apart, and do not count for alice.
    assert_eq!(
        adapters
            .recent_orders(&bob, &format!("{p}-b01"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        adapters
            .recent_orders(&bob, &format!("{p}-b02"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(adapters.recent_orders(&alice, &a(5)).await.unwrap(), 6);

    // Retries give the first answer, even after later orders (through the trait too).
    let fraud: Arc<dyn FraudCheck> = Arc::new(adapters.clone());
    assert_eq!(fraud.recent_orders(&alice, &a(2)).await.unwrap(), 3);
    assert_eq!(fraud.recent_orders(&alice, &a(5)).await.unwrap(), 6);
    assert_eq!(
        fraud
            .recent_orders(&bob, &format!("{p}-b01"))
            .await
            .unwrap(),
        1
    );
    let a6 = a(6);
    let (x, y) = tokio::join!(
        fraud.recent_orders(&alice, &a6),
        fraud.recent_orders(&alice, &a6)
    );
    assert_eq!((x.unwrap(), y.unwrap()), (7, 7), "concurrent retries agree");

    // An attempt older than a day (here the oldest there is) goes with the next attempt.
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let ancient = format!("{p}-ancient");
    sqlx::query("INSERT INTO order_attempts (order_id, customer_id, at) VALUES ($1, $2, 0)")
        .bind(&ancient)
        .bind(&bob)
        .execute(&pool)
        .await
        .unwrap();
    adapters
        .recent_orders(&bob, &format!("{p}-b03"))
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM order_attempts WHERE order_id = $1",
    )
    .bind(&ancient)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "an attempt past a day is deleted");
    pool.close().await;

    drop(adapters);
    drop(store);
    remove_sqlite(&url);
}

/// Prices an order through `price_order`: the invoice, or the failure's type and message.
async fn price(
    ctx: WorkflowContext,
    order: Order,
) -> Result<Result<Invoice, (String, String)>, WorkflowError> {
    let opts = ActivityOptions::new(Duration::from_secs(10))
        .initial_interval(Duration::from_millis(50))
        .maximum_attempts(3);
    let input = StepInput {
        order,
        undo_key: String::new(),
    };
    Ok(ctx
        .activity_by_name::<_, Invoice>(names::PRICE_ORDER, &input, opts)
        .await
        .map_err(|f| (f.error_type().to_owned(), f.failure.message.clone())))
}

async fn price_order_prices_and_applies_the_fraud_rules(backend: Backend) {
    let engine = TestEngine::start(backend, martix_tests::fast_config()).await;
    let adapters = ReferenceAdapters::connect(&engine.database_url)
        .await
        .unwrap();
    let activities = OrderActivities::new(
        Adapters::reference(adapters.clone(), None),
        Faults::default(),
        BreakerSettings::default(),
    );
    let queue = unique("pricing");
    let mut worker = Worker::new(&engine.endpoint, WorkerOptions::new(&queue)).unwrap();
    worker.register_workflow("price", price);
    activities.register(&mut worker);
    let shutdown = CancellationToken::new();
    tokio::spawn(worker.run(shutdown.clone()));
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let p = unique("p").replace('-', "");

    let order = |name: &str, customer: &str, unit_price_cents: i64, code: Option<&str>| Order {
        order_id: format!("{p}-order-{name}"),
        customer_id: format!("{p}-{customer}"),
        currency: "EUR".into(),
        items: vec![
            Item {
                sku: format!("{p}-sku-0"),
                qty: 2,
                unit_price_cents,
            },
            Item {
                sku: format!("{p}-sku-1"),
                qty: 1,
                unit_price_cents: 499,
            },
        ],
        shipping_address: Address {
            country: "FR".into(),
            ..Default::default()
        },
        discount_code: code.map(str::to_owned),
        placed_by: None,
    };
    let place = |order: Order| {
        let (client, queue) = (client.clone(), queue.clone());
        async move {
            let run = client
                .start_workflow(StartOptions::new("price", unique("price"), &queue), &order)
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(30), run.result())
                .await
                .expect("the pricing ends")
                .unwrap()
        }
    };

    // 2 x 12.50 + 4.99 = 29.99, less 10% (3.00), plus 20% French tax of 26.99 (5.40).
    let invoice: Result<Invoice, (String, String)> =
        place(order("code", "alice", 1250, Some("WELCOME10"))).await;
    assert_eq!(
        invoice.unwrap(),
        Invoice {
            subtotal_cents: 2_999,
            discount_cents: 300,
            discount: Some("code WELCOME10".into()),
            country: "FR".into(),
            tax_rate_bp: 2_000,
            tax_cents: 540,
            total_cents: 3_239,
        }
    );

    let refused: Result<Invoice, (String, String)> =
        place(order("bad-code", "alice", 1250, Some("NOPE"))).await;
    assert_eq!(
        refused.unwrap_err(),
        (
            "InvalidOrder".into(),
            "discount_code is not a known discount code".into()
        )
    );

    // 2 x 5 000.00 + 4.99, less 10% volume, plus 20%: 10 805.39, above 10 000.00.
    let refused: Result<Invoice, (String, String)> =
        place(order("big", "bob", 500_000, None)).await;
    let (kind, message) = refused.unwrap_err();
    assert_eq!(kind, "AmountLimit", "{message}");

    // Five orders a minute per customer; carol's sixth is refused, and stays refused.
    for i in 1..=5 {
        let r: Result<Invoice, (String, String)> =
            place(order(&format!("carol-{i}"), "carol", 100, None)).await;
        assert!(r.is_ok(), "carol's order {i}: {r:?}");
    }
    for _ in 0..2 {
        let r: Result<Invoice, (String, String)> =
            place(order("carol-6", "carol", 100, None)).await;
        assert_eq!(r.unwrap_err().0, "TooManyOrders");
    }
    // Her second order priced again (a retry) still passes; alice is not affected.
    let r: Result<Invoice, (String, String)> = place(order("carol-2", "carol", 100, None)).await;
    assert!(r.is_ok(), "{r:?}");
    let r: Result<Invoice, (String, String)> = place(order("again", "alice", 100, None)).await;
    assert!(r.is_ok(), "{r:?}");

    // An order placed by an authenticated caller counts per customer as that caller names
    // it: a service placing for six customers is not held as one, a caller naming another's
    // customer fills only its own count.
    let by = |caller: &str, i: usize, customer: &str| Order {
        placed_by: Some(format!("{p}-{caller}")),
        ..order(&format!("{caller}-{i}"), customer, 100, None)
    };
    for i in 1..=6 {
        let r: Result<Invoice, (String, String)> = place(by("svc", i, &format!("dave-{i}"))).await;
        assert!(r.is_ok(), "the service's order {i}: {r:?}");
    }
    for i in 1..=5 {
        let r: Result<Invoice, (String, String)> = place(by("mallory", i, "frank")).await;
        assert!(r.is_ok(), "{r:?}");
    }
    let r: Result<Invoice, (String, String)> = place(by("mallory", 6, "frank")).await;
    assert_eq!(r.unwrap_err().0, "TooManyOrders");
    let r: Result<Invoice, (String, String)> = place(by("svc", 7, "frank")).await;
    assert!(
        r.is_ok(),
        "frank through the shop is not held by mallory's orders: {r:?}"
    );

    // A catalogue price refuses a differing client price before the fraud rules count it.
    let listed = martix_activities::parse_csv(&format!(
        "sku,price,currency,tax_class\n{p}-sku-0,12.50,EUR,standard\n"
    ))
    .unwrap();
    adapters.import_catalog(&listed).await.unwrap();
    let r: Result<Invoice, (String, String)> = place(order("listed", "erin", 1_200, None)).await;
    assert_eq!(
        r.unwrap_err(),
        (
            "PriceMismatch".into(),
            format!("sku {p}-sku-0 costs 12.50 EUR in the catalogue, the order says 12.00 EUR")
        )
    );
    let r: Result<Invoice, (String, String)> = place(order("listed", "erin", 1_250, None)).await;
    assert!(r.is_ok(), "{r:?}");
    // Closed, the catalogue refuses the item it does not list (sku-1) at any price.
    activities.set_closed_catalog(true);
    let r: Result<Invoice, (String, String)> = place(order("closed", "erin", 1_250, None)).await;
    assert_eq!(
        r.unwrap_err(),
        (
            "UnknownSku".into(),
            format!("sku {p}-sku-1 is not in the catalogue")
        )
    );
    shutdown.cancel();
}

on_both_backends!(
    recent_orders_count_per_customer_within_a_minute,
    price_order_prices_and_applies_the_fraud_rules,
);
