//! The order saga end to end on PostgreSQL and SQLite, with the reference adapters: every
//! outcome, duplicates, a payment outage behind the breaker, and the ledger after many orders.

use martix_activities::{BreakerSettings, Faults, random_order};
use martix_order_contract::{Address, Item, ORDER_WORKFLOW_TYPE, Order, OrderOutcome};
use martix_sdk::StartOptions;
use martix_tests::{Backend, OrderShop, TestEngine, fast_config, on_both_backends, unique};
use martix_workflows::OrderSaga;
use rand::SeedableRng;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The shared order shop, with this file's helpers.
struct Env(OrderShop);

impl std::ops::Deref for Env {
    type Target = OrderShop;
    fn deref(&self) -> &OrderShop {
        &self.0
    }
}

impl Env {
    async fn start(backend: Backend, faults: Faults, breakers: BreakerSettings) -> Self {
        let engine = TestEngine::start(backend, fast_config()).await;
        Self(OrderShop::open(engine, faults, breakers, "t", |_| 1_000).await)
    }

    fn order(&self, name: &str, customer: &str, country: &str, qty: i64) -> Order {
        Order {
            order_id: format!("{}-order-{name}", self.prefix),
            // Customers are the test's own: the fraud rules count orders per customer.
            customer_id: format!("{customer}-{}", self.prefix),
            currency: "EUR".into(),
            items: vec![
                Item {
                    sku: format!("{}-sku-0", self.prefix),
                    qty,
                    unit_price_cents: 1250,
                },
                Item {
                    sku: format!("{}-sku-1", self.prefix),
                    qty: 1,
                    unit_price_cents: 499,
                },
            ],
            shipping_address: Address {
                country: country.into(),
                ..Default::default()
            },
            discount_code: None,
            placed_by: None,
        }
    }

    async fn place(&self, order: &Order) -> OrderOutcome {
        let run = self
            .client
            .start(
                OrderSaga,
                StartOptions::for_id(&order.order_id, &self.queue),
                order,
            )
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(60), run.result())
            .await
            .expect("the order ends")
            .unwrap()
    }

    /// Starts every order's saga without waiting for it.
    async fn start_all(&self, orders: &[Order]) -> Vec<martix_sdk::WorkflowHandle> {
        let mut runs = Vec::new();
        for o in orders {
            runs.push(
                self.client
                    .start(OrderSaga, StartOptions::for_id(&o.order_id, &self.queue), o)
                    .await
                    .unwrap(),
            );
        }
        runs
    }

    async fn assert_ledger(&self, completed: &[&Order]) {
        for c in self
            .adapters
            .check_ledger(&self.prefix, completed)
            .await
            .unwrap()
        {
            assert!(c.ok, "{}: {}", c.what, c.figures);
        }
    }
}

async fn every_outcome_path(backend: Backend) {
    let env = Env::start(backend, Faults::default(), BreakerSettings::default()).await;
    let ok = env.order("ok", "cust-1", "FR", 2);
    let declined = env.order("declined", "declined-2", "FR", 1);
    let unshippable = env.order("unshippable", "cust-3", "ZZ", 1);
    // A SKU with no stock at all.
    let mut too_many = env.order("too-many", "cust-4", "FR", 5);
    too_many.items[0].sku = format!("{}-sku-none", env.prefix);
    let mut invalid = env.order("invalid", "cust-5", "FR", 1);
    invalid.currency = "euro".into();

    let o = env.place(&ok).await;
    assert_eq!(
        (o.status.as_str(), o.charged_cents),
        ("completed", martix_order_contract::invoice(&ok).total_cents)
    );
    assert_eq!(o.notification, "sent");
    assert_eq!(
        env.adapters.notifications(&ok.order_id).await.unwrap(),
        ["completed"]
    );

    let o = env.place(&declined).await;
    assert_eq!(o.status, "compensated");
    let run = env
        .client
        .handle(&declined.order_id)
        .describe()
        .await
        .unwrap();
    assert_eq!(
        run.summary.status,
        martix_sdk::WorkflowStatus::Compensated,
        "a saga that compensated ends COMPENSATED"
    );
    assert_eq!(o.failed_step.as_deref(), Some("payment"));
    assert!(o.cause.unwrap().contains("PaymentDeclined"));

    let o = env.place(&unshippable).await;
    assert_eq!(o.status, "compensated");
    assert_eq!(o.failed_step.as_deref(), Some("shipment"));
    let ledger = env.adapters.ledger(&unshippable.order_id).await.unwrap();
    assert_eq!(
        ledger[&unshippable.order_id],
        (0, 1),
        "charged once, then refunded"
    );

    let o = env.place(&too_many).await;
    assert_eq!(o.status, "failed");
    assert_eq!(o.failed_step.as_deref(), Some("reserve"));
    assert!(o.cause.unwrap().contains("OutOfStock"));

    let o = env.place(&invalid).await;
    assert_eq!(o.status, "failed");
    assert_eq!(o.failed_step.as_deref(), Some("validate"));
    assert!(o.cause.unwrap().contains("currency"));

    env.assert_ledger(&[&ok]).await;
}

on_both_backends!(the_nightly_reconciliation_names_what_does_not_reconcile);
async fn the_nightly_reconciliation_names_what_does_not_reconcile(backend: Backend) {
    use martix_order_contract::reconcile::{ReconcileWindow, Reconciliation};
    use martix_order_contract::saga::ReconcilePaymentsWorkflow;
    let env = Env::start(backend, Faults::default(), BreakerSettings::default()).await;
    let ok = env.order("ok", "cust-1", "FR", 1);
    let unshippable = env.order("unshippable", "cust-3", "ZZ", 1);
    assert_eq!(env.place(&ok).await.status, "completed");
    assert_eq!(env.place(&unshippable).await.status, "compensated");
    let window = ReconcileWindow {
        hours: 1,
        prefix: env.prefix.clone(),
        settle_minutes: 0,
        until_ms: 0,
    };
    let reconcile = |id: &str| {
        let client = env.client.clone();
        let (id, queue, window) = (unique(id), env.queue.clone(), window.clone());
        async move {
            client
                .start(
                    ReconcilePaymentsWorkflow,
                    StartOptions::for_id(&id, &queue),
                    &window,
                )
                .await
                .unwrap()
                .result::<Reconciliation>()
                .await
        }
    };
    let clean = reconcile("reconcile").await.unwrap();
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(
        clean.orders_checked, 2,
        "the completed and the refunded order"
    );
    assert_eq!(
        clean.held_cents,
        martix_order_contract::invoice(&ok).total_cents
    );

    // Money taken for an order that never shipped: named, and the run fails for an operator.
    let stray = env.order("stray", "cust-6", "FR", 1);
    env.adapters
        .charge(&format!("{}-stray-charge", env.prefix), &stray)
        .await
        .unwrap();
    match reconcile("reconcile").await {
        Err(martix_sdk::ClientError::WorkflowFailed { failure, .. }) => assert!(
            failure.contains(&format!("1 charged and not shipped: {}", stray.order_id)),
            "{failure}"
        ),
        other => panic!("{other:?}"),
    }
}

on_both_backends!(rejected_orders_touch_neither_stock_nor_payment);
async fn rejected_orders_touch_neither_stock_nor_payment(backend: Backend) {
    let env = Env::start(backend, Faults::default(), BreakerSettings::default()).await;
    let stock_before = env.adapters.stock(&env.prefix).await.unwrap();
    // 5,000 x 12.50 EUR is over the 10,000 EUR limit of one order.
    let over_limit = env.order("over-limit", "big", "FR", 5_000);
    let o = env.place(&over_limit).await;
    assert_eq!(o.status, "rejected");
    assert_eq!(o.failed_step.as_deref(), Some("validate"));
    assert!(o.cause.as_deref().unwrap().contains("AmountLimit"), "{o:?}");
    // Six orders of one customer within a minute: the sixth is refused.
    let mut outcomes = Vec::new();
    for i in 0..6 {
        outcomes.push(
            env.place(&env.order(&format!("burst-{i}"), "eager", "FR", 1))
                .await,
        );
    }
    let statuses: Vec<&str> = outcomes.iter().map(|o| o.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["completed"; 5]
            .iter()
            .copied()
            .chain(["rejected"])
            .collect::<Vec<_>>()
    );
    assert!(
        outcomes[5]
            .cause
            .as_deref()
            .unwrap()
            .contains("TooManyOrders")
    );
    // Nothing reserved or charged for either rejected order; the ledger is the five's.
    let ledger = env.adapters.ledger(&env.prefix).await.unwrap();
    assert!(!ledger.contains_key(&over_limit.order_id));
    assert!(!ledger.contains_key(&format!("{}-order-burst-5", env.prefix)));
    let stock_after = env.adapters.stock(&env.prefix).await.unwrap();
    assert_eq!(stock_after.initial, stock_before.initial);
    assert_eq!(
        stock_after.shipped,
        5 * 2,
        "five orders of two lines of one each"
    );
    assert_eq!(stock_after.reserved, 0);
}

on_both_backends!(
    a_client_price_that_differs_from_the_catalogue_is_refused_before_anything_is_reserved
);
async fn a_client_price_that_differs_from_the_catalogue_is_refused_before_anything_is_reserved(
    backend: Backend,
) {
    let env = Env::start(backend, Faults::default(), BreakerSettings::default()).await;
    // SKU 0 is listed at 12.50 EUR; SKU 1 is not, so its item keeps the client's price.
    let listed = martix_activities::parse_csv(&format!(
        "sku,price,currency,tax_class\n{}-sku-0,12.50,EUR,standard\n",
        env.prefix
    ))
    .unwrap();
    env.adapters.import_catalog(&listed).await.unwrap();
    let stock_before = env.adapters.stock(&env.prefix).await.unwrap();

    let mut cheaper = env.order("cheaper", "cust-1", "FR", 2);
    cheaper.items[0].unit_price_cents = 1_200;
    let mut dollars = env.order("dollars", "cust-1", "FR", 2);
    dollars.currency = "USD".into();
    for (order, says) in [(&cheaper, "12.00 EUR"), (&dollars, "12.50 USD")] {
        let o = env.place(order).await;
        assert_eq!(o.status, "rejected", "{o:?}");
        assert_eq!(o.failed_step.as_deref(), Some("validate"));
        let cause = o.cause.unwrap();
        assert!(cause.contains("PriceMismatch"), "{cause}");
        assert!(
            cause.contains(&format!(
                "sku {}-sku-0 costs 12.50 EUR in the catalogue, the order says {says}",
                env.prefix
            )),
            "{cause}"
        );
        assert_eq!(env.adapters.payments(&order.order_id).await.unwrap(), []);
    }
    assert_eq!(
        env.adapters.stock(&env.prefix).await.unwrap(),
        stock_before,
        "nothing reserved"
    );

    // The same order at the catalogue's price completes.
    let at_price = env.order("at-price", "cust-1", "FR", 2);
    let o = env.place(&at_price).await;
    assert_eq!(o.status, "completed", "{o:?}");
    env.assert_ledger(&[&at_price]).await;
}

async fn a_cancelled_order_is_refunded_and_released(backend: Backend) {
    // Slow inventory: the cancellation arrives while the stock is being reserved.
    let mut faults = Faults::default();
    faults.inventory.latency = Duration::from_millis(700);
    let env = Env::start(backend, faults, BreakerSettings::default()).await;
    let order = env.order("cancel", "cust-1", "FR", 1);
    let run = env
        .client
        .start_workflow(
            StartOptions::new(ORDER_WORKFLOW_TYPE, &order.order_id, &env.queue),
            &order,
        )
        .await
        .unwrap();
    run.cancel("customer changed their mind").await.unwrap();
    let o: OrderOutcome = tokio::time::timeout(Duration::from_secs(60), run.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.status, "compensated");
    assert_eq!(o.failed_step.as_deref(), Some("cancel"));
    env.assert_ledger(&[]).await;
}

async fn a_duplicate_start_charges_once(backend: Backend) {
    let env = Env::start(backend, Faults::default(), BreakerSettings::default()).await;
    let order = env.order("dup", "cust-1", "FR", 1);
    let opts = StartOptions::new(ORDER_WORKFLOW_TYPE, &order.order_id, &env.queue);
    let first = env
        .client
        .start_workflow(opts.clone(), &order)
        .await
        .unwrap();
    let second = env.client.start_workflow(opts, &order).await.unwrap();
    assert_eq!(first.run_id, second.run_id);
    assert!(first.started && !second.started);
    let o: OrderOutcome = first.result().await.unwrap();
    assert_eq!(o.status, "completed");
    env.assert_ledger(&[&order]).await;
}

/// An order id is placed once: the same order again is answered with its run, another order
/// under the id is a conflict naming it. A run the caller explicitly allows is its own: it
/// charges anew under its own keys (the first run's keys would answer "reserved" and
/// "charged" for what was released and refunded), and the ledger adds up.
async fn a_second_run_of_an_order_id_is_its_own(backend: Backend) {
    let env = Env::start(backend, Faults::default(), BreakerSettings::default()).await;
    let order = env.order("again", "cust-1", "ZZ", 1);
    let first = env.place(&order).await;
    assert_eq!(first.status, "compensated", "unshippable: {first:?}");
    let first_run = env
        .client
        .handle(&order.order_id)
        .describe()
        .await
        .unwrap()
        .summary
        .run_id;
    let opts = || StartOptions::new(ORDER_WORKFLOW_TYPE, &order.order_id, &env.queue);
    let again = env.client.start_workflow(opts(), &order).await.unwrap();
    assert!(!again.started);
    assert_eq!(again.run_id, first_run, "the same order is its first run");
    let mut other = order.clone();
    other.shipping_address.country = "FR".into();
    match env.client.start_workflow(opts(), &other).await {
        Err(martix_sdk::ClientError::Status(s)) => {
            assert_eq!(s.code(), tonic::Code::AlreadyExists, "{s:?}");
            assert!(s.message().contains(&order.order_id), "{s:?}");
        }
        Err(e) => panic!("another order under the id must be ALREADY_EXISTS: {e}"),
        Ok(run) => panic!("another order under the id was started: run {}", run.run_id),
    }
    let second = env
        .client
        .start_workflow(
            opts().id_reuse_policy(martix_sdk::IdReusePolicy::AllowDuplicate),
            &other,
        )
        .await
        .unwrap();
    assert!(second.started && second.run_id != first_run);
    let o: OrderOutcome = tokio::time::timeout(Duration::from_secs(60), second.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.status, "completed", "{o:?}");
    let lines = env.adapters.payments(&order.order_id).await.unwrap();
    let kinds: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(kinds, ["charge", "refund", "charge"], "{lines:?}");
    assert_ne!(lines[0].3, lines[2].3, "each run charges under its own key");
    env.assert_ledger(&[&other]).await;
}

/// A cancel that is there before the first step: nothing priced, reserved or charged, the
/// order ends canceled.
async fn a_cancel_before_the_first_step_reserves_and_charges_nothing(backend: Backend) {
    let env = Env::start(backend, Faults::default(), BreakerSettings::default()).await;
    let order = env.order("early", "cust-1", "FR", 1);
    let stock_before = env.adapters.stock(&env.prefix).await.unwrap();
    let run = env
        .client
        .signal_with_start(
            martix_order_contract::saga::OrderSaga,
            StartOptions::for_id(&order.order_id, &env.queue),
            &order,
            martix_order_contract::saga::CancelOrder,
            &serde_json::json!({"reason": "changed my mind"}),
        )
        .await
        .unwrap();
    let o: OrderOutcome = tokio::time::timeout(Duration::from_secs(60), run.result())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.status, "compensated", "{o:?}");
    assert_eq!(o.failed_step.as_deref(), Some("cancel"));
    assert_eq!(
        o.terminal_event(),
        martix_order_contract::events::ORDER_CANCELED
    );
    assert!(o.compensation_failures.is_empty());
    let history = run.history().await.unwrap();
    assert!(
        !history.iter().any(|e| matches!(
            &e.attributes,
            Some(martix_proto::v1::history_event::Attributes::ActivityTaskScheduled(a))
                if a.activity_type != martix_order_contract::names::SEND_NOTIFICATION
        )),
        "no step but the notification ran"
    );
    assert!(
        env.adapters
            .payments(&order.order_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(env.adapters.stock(&env.prefix).await.unwrap(), stock_before);
}

/// A refund refused for good: the order does not end "compensated". It needs attention
/// (describe says why, the event is published, the read model shows it) and waits for an
/// operator; each decision leads to its end: `retry` refunds (once the gateway takes refunds
/// again), `done` ends compensated with the reason, `fail` ends failed.
async fn a_refund_refused_for_good_waits_for_an_operator(backend: Backend) {
    let faults = Faults::default();
    faults.refunds_refused.store(true, Ordering::Relaxed);
    let env = Env::start(backend, faults.clone(), BreakerSettings::default()).await;
    let orders: Vec<Order> = ["retry", "done", "fail"]
        .iter()
        .map(|d| env.order(&format!("attention-{d}"), "cust-1", "ZZ", 1))
        .collect();
    let runs = env.start_all(&orders).await;
    for run in &runs {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let info = run.describe().await.unwrap().summary;
            if let Some(attention) = &info.attention {
                assert!(attention.reason.contains("RefundRefused"), "{info:?}");
                assert!(attention.since.is_some());
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the order never asked for attention"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let published: Vec<String> = run
            .history()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.attributes {
                Some(martix_proto::v1::history_event::Attributes::EventPublished(p)) => {
                    Some(p.event_type)
                }
                _ => None,
            })
            .collect();
        assert!(
            published.contains(&"order.needs_attention".to_owned())
                && published.contains(&"inventory.released".to_owned())
                && !published.contains(&"payment.refunded".to_owned()),
            "{published:?}"
        );
    }
    // The gateway takes refunds again; an operator decides on each.
    faults.refunds_refused.store(false, Ordering::Relaxed);
    for (run, (action, reason)) in runs.iter().zip([
        ("retry", ""),
        ("done", "refunded by hand, ticket 42"),
        ("fail", "customer keeps the charge as credit"),
    ]) {
        let decision = martix_order_contract::Resolution::new(action, reason).unwrap();
        run.signal(martix_order_contract::saga::Resolve, &decision)
            .await
            .unwrap();
    }
    let mut outcomes = Vec::new();
    for run in &runs {
        let o: OrderOutcome = tokio::time::timeout(Duration::from_secs(60), run.result())
            .await
            .unwrap()
            .unwrap();
        assert!(run.describe().await.unwrap().summary.attention.is_none());
        outcomes.push(o);
    }
    assert_eq!(outcomes[0].status, "compensated", "{:?}", outcomes[0]);
    assert!(outcomes[0].compensation_failures.is_empty());
    assert_eq!(outcomes[1].status, "compensated", "{:?}", outcomes[1]);
    assert!(
        outcomes[1].compensation_failures[0].contains("done by hand: refunded by hand"),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(outcomes[2].status, "failed", "{:?}", outcomes[2]);
    assert!(
        outcomes[2]
            .cause
            .as_deref()
            .unwrap()
            .contains("given up: customer keeps"),
        "{:?}",
        outcomes[2]
    );
    let kinds = |id: &str| {
        let adapters = env.adapters.clone();
        let id = id.to_owned();
        async move {
            adapters
                .payments(&id)
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.0)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(kinds(&orders[0].order_id).await, ["charge", "refund"]);
    assert_eq!(kinds(&orders[1].order_id).await, ["charge"]);
    assert_eq!(kinds(&orders[2].order_id).await, ["charge"]);
    // The ledger: the first order adds up; the two the operator settled by hand are set aside.
    for c in env
        .adapters
        .check_ledger_setting_aside(
            &env.prefix,
            &[],
            &[&orders[1].order_id, &orders[2].order_id],
        )
        .await
        .unwrap()
    {
        assert!(c.ok, "{}: {}", c.what, c.figures);
    }
}

/// A payment outage with 200 orders in flight and two workers (the demo's shape, the outage
/// shortened to 6 s): once the breaker is open, the charges wait parked behind it instead of
/// burning attempts, only probes reach the gateway, every order completes after the outage,
/// and the released charges reach the gateway paced.
async fn a_payment_outage_parks_charges_behind_the_breaker_until_it_closes(backend: Backend) {
    let breakers = BreakerSettings {
        failures: 3,
        open_for: Duration::from_millis(1500),
    };
    // Each charge takes 50 ms, so charges released at once would be under way at once.
    let faults = Faults {
        payment: martix_activities::faults::Knob {
            latency: Duration::from_millis(50),
            failure_rate: 0.0,
        },
        ..Faults::default()
    };
    let env = Env::start(backend, faults, breakers).await;
    let mut second = martix_sdk::Worker::new(
        &env.engine.endpoint,
        martix_sdk::WorkerOptions::new(&env.queue),
    )
    .unwrap();
    second.register_workflow(ORDER_WORKFLOW_TYPE, martix_workflows::order);
    env.activities.register(&mut second);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(second.run(stop.clone()));
    let _stop = stop.drop_guard();
    let outage = &env.activities.faults().payment_outage;
    outage.store(true, Ordering::SeqCst);
    let orders: Vec<Order> = (0..200)
        .map(|i| env.order(&format!("outage-{i}"), &format!("cust-{}", i % 50), "FR", 1))
        .collect();
    let runs = env.start_all(&orders).await;
    // Every order reaches its charge and waits behind the breaker.
    let parked = |d: &martix_sdk::WorkflowDescription| {
        d.pending_activities.iter().any(|a| {
            a.parked_behind
                .as_ref()
                .is_some_and(|(b, _)| b == "payment")
                && a.state == martix_sdk::PendingActivityState::Parked
        })
    };
    let most_attempts = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (mut n, mut most) = (0, 0);
            for run in &runs {
                let d = run.describe().await.unwrap();
                if parked(&d) {
                    n += 1;
                    most = most.max(
                        d.pending_activities
                            .iter()
                            .map(|a| a.attempt)
                            .max()
                            .unwrap(),
                    );
                }
            }
            if n == runs.len() {
                return most;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("every charge is parked behind the open breaker");
    // Only the calls that opened the breaker (3 failures; attempts 2 to 4) were attempts.
    assert!(
        most_attempts <= 4,
        "a refused attempt is no attempt: attempt {most_attempts}"
    );
    let reached_before = env.activities.calls().payment.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let reached = env.activities.calls().payment.load(Ordering::SeqCst) - reached_before;
    assert!(
        reached <= 3,
        "while open, only probes (one per 5 s) reach the gateway: {reached} did"
    );
    let calls = env.activities.calls();
    calls.payment_in_flight_max.store(0, Ordering::SeqCst);
    outage.store(false, Ordering::SeqCst);
    let closed_at = std::time::Instant::now();
    for run in &runs {
        let o: OrderOutcome = tokio::time::timeout(Duration::from_secs(60), run.result())
            .await
            .expect("orders finish after the outage")
            .unwrap();
        assert_eq!(o.status, "completed", "{}", o.order_id);
    }
    // Released paced (1, 4, 16, 64, 256 a second): 200 charges take seconds, not one burst,
    // and the gateway that came back sees a few at a time (64 a second of 50 ms calls: about
    // 3; all 200 at once would be up to 200).
    assert!(
        closed_at.elapsed() >= Duration::from_secs(3),
        "released all at once: {:?}",
        closed_at.elapsed()
    );
    let herd = calls.payment_in_flight_max.load(Ordering::SeqCst);
    assert!(herd <= 40, "{herd} charges were under way at once");
    let refs: Vec<&Order> = orders.iter().collect();
    env.assert_ledger(&refs).await;
}

/// An operator holds the payment breaker open (gateway maintenance): no charge reaches the
/// gateway, not even a probe, the charges wait parked; released, every order completes.
async fn a_breaker_held_open_by_an_operator_parks_charges_until_released(backend: Backend) {
    let env = Env::start(backend, Faults::default(), BreakerSettings::default()).await;
    let breakers = env.activities.breakers().clone();
    let held = |want: Option<martix_sdk::BreakerHold>| {
        let breakers = breakers.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(15), async {
                while breakers.hold("payment") != want {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .expect("the worker learns the hold from its next report");
        }
    };
    env.client
        .set_breaker(
            "payment",
            Some(martix_sdk::BreakerHold::Open),
            "maintenance",
        )
        .await
        .unwrap();
    held(Some(martix_sdk::BreakerHold::Open)).await;
    let orders: Vec<Order> = (0..20)
        .map(|i| env.order(&format!("held-{i}"), &format!("c{i}"), "FR", 1))
        .collect();
    let runs = env.start_all(&orders).await;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut n = 0;
            for run in &runs {
                let d = run.describe().await.unwrap();
                n += usize::from(d.pending_activities.iter().any(|a| {
                    a.parked_behind
                        .as_ref()
                        .is_some_and(|(b, _)| b == "payment")
                        && a.attempt == 1
                }));
            }
            if n == runs.len() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("every charge is parked at its first attempt");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        env.activities.calls().payment.load(Ordering::SeqCst),
        0,
        "held open: nothing reaches the gateway, not even a probe"
    );
    let listed = env.client.list_breakers().await.unwrap();
    let payment = listed.iter().find(|b| b.name == "payment").unwrap();
    assert!(payment.open && payment.parked == 20, "{payment:?}");
    env.client.set_breaker("payment", None, "").await.unwrap();
    held(None).await;
    for run in &runs {
        let o: OrderOutcome = tokio::time::timeout(Duration::from_secs(60), run.result())
            .await
            .expect("orders finish once the hold is released")
            .unwrap();
        assert_eq!(o.status, "completed");
    }
    let refs: Vec<&Order> = orders.iter().collect();
    env.assert_ledger(&refs).await;
}

async fn the_ledger_adds_up_after_500_mixed_orders(backend: Backend) {
    let env = Env::start(backend, Faults::default(), BreakerSettings::default()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let orders: Vec<Order> = (0..500)
        .map(|i| random_order(&mut rng, &env.prefix, i, 4))
        .collect();
    use futures::StreamExt;
    let outcomes: Vec<OrderOutcome> = futures::stream::iter(orders.iter().map(|o| env.place(o)))
        .buffer_unordered(32)
        .collect()
        .await;
    let completed: Vec<&Order> = orders
        .iter()
        .filter(|o| {
            outcomes
                .iter()
                .any(|x| x.order_id == o.order_id && x.status == "completed")
        })
        .collect();
    let compensated = outcomes
        .iter()
        .filter(|o| o.status == "compensated")
        .count();
    assert!(
        completed.len() > 350 && compensated > 30,
        "{} completed, {compensated} compensated",
        completed.len()
    );
    env.assert_ledger(&completed).await;
}

on_both_backends!(
    every_outcome_path,
    a_cancelled_order_is_refunded_and_released,
    a_duplicate_start_charges_once,
    a_second_run_of_an_order_id_is_its_own,
    a_cancel_before_the_first_step_reserves_and_charges_nothing,
    a_refund_refused_for_good_waits_for_an_operator,
    a_payment_outage_parks_charges_behind_the_breaker_until_it_closes,
    a_breaker_held_open_by_an_operator_parks_charges_until_released,
    the_ledger_adds_up_after_500_mixed_orders,
);
