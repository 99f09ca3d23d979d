//! The order saga on `TestEnv`: the real workflow code on an in-process engine, its
//! activities mocked by type, its clock skipped where the saga waits (a compensation's retry
//! backoffs), each run then replayed against the code. Every path runs in milliseconds; each
//! test prints how long it took.

use martix_order_contract::saga::{
    AddItem, ChangeShippingAddress, ChargePayment, CreateShipment, OrderSaga, PriceOrder,
    RefundPayment, ReleaseInventory, ReserveInventory, Resolve, SendNotification,
};
use martix_order_contract::{
    Address, Charge, Item, NotificationInput, Order, OrderOutcome, Resolution, StepInput, invoice,
};
use martix_sdk::testing::TestEnv;
use martix_sdk::{
    Activity, ActivityError, Replayer, StartOptions, Worker, WorkflowHandle, WorkflowStatus,
};
use martix_workflows::order;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

const QUEUE: &str = "orders";

/// The mocked shop: what each step answers, and the steps called, in order.
#[derive(Clone, Default)]
struct Shop {
    calls: Arc<Mutex<Vec<&'static str>>>,
    /// `create_shipment` fails for good (the address cannot be served).
    shipment_fails: bool,
    /// `refund_payment` fails every attempt (retryably: the gateway is down).
    refund_fails: bool,
    /// `charge_payment` says it started on the first, then waits for a permit of the second
    /// before it answers.
    charge_gate: Option<(Arc<Notify>, Arc<Semaphore>)>,
    /// The same for `price_order`.
    price_gate: Option<(Arc<Notify>, Arc<Semaphore>)>,
    /// The country `create_shipment` was asked to ship to.
    shipped_to: Arc<Mutex<Option<String>>>,
}

/// A gate: the activity says it started, then waits for a permit.
fn gate() -> (Arc<Notify>, Arc<Semaphore>) {
    (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)))
}

async fn pass(gate: &Option<(Arc<Notify>, Arc<Semaphore>)>) {
    if let Some((started, permits)) = gate {
        started.notify_one();
        permits.acquire().await.expect("gate open").forget();
    }
}

impl Shop {
    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }

    /// Registers `answer` as the mock of activity `A`, recording each call.
    fn mock<A: Activity>(
        &self,
        worker: &mut Worker,
        activity: A,
        answer: impl Fn(&Shop, A::Input) -> Result<A::Output, ActivityError> + Send + Sync + 'static,
    ) {
        let shop = self.clone();
        worker.activity(activity, move |_ctx, input| {
            shop.calls.lock().unwrap().push(A::NAME);
            let answer = answer(&shop, input);
            async move { answer }
        });
    }

    /// A worker running the saga against this shop.
    fn worker(&self, env: &TestEnv) -> Worker {
        let mut worker = env.worker(QUEUE);
        worker.workflow(OrderSaga, order);
        let shop = self.clone();
        worker.activity(PriceOrder, move |_ctx, i: StepInput| {
            let shop = shop.clone();
            async move {
                pass(&shop.price_gate).await;
                shop.calls.lock().unwrap().push(PriceOrder::NAME);
                Ok(invoice(&i.order))
            }
        });
        self.mock(&mut worker, ReserveInventory, |_, i: StepInput| {
            Ok(format!("res-{}", i.order.order_id))
        });
        let shop = self.clone();
        worker.activity(ChargePayment, move |_ctx, i: StepInput| {
            let shop = shop.clone();
            async move {
                pass(&shop.charge_gate).await;
                shop.calls.lock().unwrap().push(ChargePayment::NAME);
                Ok(Charge {
                    key: format!("ch-{}", i.order.order_id),
                    amount_cents: invoice(&i.order).total_cents,
                })
            }
        });
        self.mock(&mut worker, CreateShipment, |shop, i: StepInput| {
            *shop.shipped_to.lock().unwrap() = Some(i.order.shipping_address.country);
            if shop.shipment_fails {
                Err(ActivityError::non_retryable(
                    "ShipmentImpossible",
                    "no carrier serves ZZ",
                ))
            } else {
                Ok("ship-1".to_owned())
            }
        });
        self.mock(&mut worker, RefundPayment, |shop, _: StepInput| {
            if shop.refund_fails {
                Err(ActivityError::retryable(
                    "GatewayDown",
                    "the gateway does not answer",
                ))
            } else {
                Ok(())
            }
        });
        self.mock(&mut worker, ReleaseInventory, |_, _: StepInput| Ok(()));
        self.mock(&mut worker, SendNotification, |_, _: NotificationInput| {
            Ok(())
        });
        worker
    }
}

fn an_order(id: &str) -> Order {
    Order {
        order_id: id.into(),
        customer_id: "cust-1".into(),
        currency: "EUR".into(),
        items: vec![Item {
            sku: "sku-1".into(),
            qty: 2,
            unit_price_cents: 1_250,
        }],
        shipping_address: Address {
            country: "FR".into(),
            ..Address::default()
        },
        discount_code: None,
        placed_by: None,
    }
}

/// An environment running the saga against `shop`, and the order `id` started on it.
async fn place(shop: &Shop, id: &str) -> (TestEnv, WorkflowHandle) {
    let env = TestEnv::start().await.expect("start the test environment");
    env.run(shop.worker(&env));
    let run = env
        .client()
        .start(OrderSaga, StartOptions::for_id(id, QUEUE), &an_order(id))
        .await
        .expect("start the order");
    (env, run)
}

/// The run's outcome, after checking that its history replays against the saga's code.
async fn outcome(env: &TestEnv, run: &WorkflowHandle) -> OrderOutcome {
    let outcome: OrderOutcome = run.result().await.expect("the order's outcome");
    let mut replayer = Replayer::new();
    replayer.workflow(OrderSaga, order);
    env.assert_replays(&replayer, run).await;
    outcome
}

#[tokio::test]
async fn an_order_completes() {
    let began = Instant::now();
    let shop = Shop::default();
    let (env, run) = place(&shop, "o-completed").await;
    let o = outcome(&env, &run).await;
    assert_eq!(o.status, "completed", "{o:?}");
    assert_eq!(
        o.charged_cents,
        invoice(&an_order("o-completed")).total_cents
    );
    assert_eq!(
        shop.calls(),
        [
            "price_order",
            "reserve_inventory",
            "charge_payment",
            "create_shipment",
            "send_notification"
        ]
    );
    println!("completed in {:?}", began.elapsed());
}

#[tokio::test]
async fn a_shipment_that_fails_refunds_and_releases() {
    let began = Instant::now();
    let shop = Shop {
        shipment_fails: true,
        ..Shop::default()
    };
    let (env, run) = place(&shop, "o-no-shipment").await;
    let o = outcome(&env, &run).await;
    assert_eq!(o.status, "compensated", "{o:?}");
    assert_eq!(o.failed_step.as_deref(), Some("shipment"));
    assert_eq!(o.charged_cents, 0);
    // Compensations run in reverse: the refund before the release.
    assert_eq!(
        shop.calls()[3..],
        [
            "create_shipment",
            "refund_payment",
            "release_inventory",
            "send_notification"
        ]
    );
    let status = run.describe().await.expect("describe").summary.status;
    assert_eq!(status, WorkflowStatus::Compensated);
    println!("compensated in {:?}", began.elapsed());
}

#[tokio::test]
async fn an_order_cancelled_during_its_payment_is_refunded_and_released() {
    let began = Instant::now();
    let (started, gate) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
    let shop = Shop {
        charge_gate: Some((started.clone(), gate.clone())),
        ..Shop::default()
    };
    let (env, run) = place(&shop, "o-cancelled").await;
    // The payment is under way when the customer cancels; it goes through, then is undone.
    started.notified().await;
    run.cancel("customer changed their mind")
        .await
        .expect("cancel");
    gate.add_permits(1);
    let o = outcome(&env, &run).await;
    assert_eq!(o.status, "compensated", "{o:?}");
    assert_eq!(o.failed_step.as_deref(), Some("cancel"));
    assert_eq!(o.cause.as_deref(), Some("cancelled before shipment"));
    assert!(
        !shop.calls().contains(&"create_shipment"),
        "{:?}",
        shop.calls()
    );
    assert!(
        shop.calls()
            .ends_with(&["refund_payment", "release_inventory", "send_notification"])
    );
    println!("cancelled in {:?}", began.elapsed());
}

/// A refund that keeps failing is retried from 200 ms doubling to 10 s, 10 attempts: about
/// 40 s of backoff, skipped here. The order then waits for an operator, who says it was
/// refunded by hand.
#[tokio::test]
async fn a_refund_that_keeps_failing_waits_for_an_operator_after_its_retries() {
    let began = Instant::now();
    let shop = Shop {
        shipment_fails: true,
        refund_fails: true,
        ..Shop::default()
    };
    let (env, run) = place(&shop, "o-attention").await;
    let mut skipped = Duration::ZERO;
    while run
        .describe()
        .await
        .expect("describe")
        .summary
        .attention
        .is_none()
    {
        assert!(
            skipped < Duration::from_secs(600),
            "no attention after {skipped:?} skipped: {:?}",
            shop.calls()
        );
        env.sleep(Duration::from_secs(10)).await;
        skipped += Duration::from_secs(10);
    }
    let refunds = shop
        .calls()
        .iter()
        .filter(|c| **c == "refund_payment")
        .count();
    assert_eq!(
        refunds,
        10,
        "every attempt the policy allows: {:?}",
        shop.calls()
    );
    let decision = Resolution::new("done", "refunded by hand, ticket 42").expect("a decision");
    run.signal(Resolve, &decision).await.expect("resolve");
    let o = outcome(&env, &run).await;
    assert_eq!(o.status, "compensated", "{o:?}");
    assert!(
        o.compensation_failures[0].contains("done by hand: refunded by hand, ticket 42"),
        "{o:?}"
    );
    println!(
        "{skipped:?} of retry backoff skipped; waited for an operator and compensated in {:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn the_shipping_address_changes_until_the_shipment_is_being_created() {
    let (started, permits) = gate();
    let shop = Shop {
        charge_gate: Some((started.clone(), permits.clone())),
        ..Shop::default()
    };
    let (env, run) = place(&shop, "o-moved").await;
    started.notified().await;
    let to = |country: &str| Address {
        country: country.into(),
        ..Address::default()
    };
    // At the payment: the address may change, to a valid one; no line may be added.
    assert_eq!(
        run.update(ChangeShippingAddress, &to("DE")).await.unwrap(),
        to("DE")
    );
    let invalid = run
        .update(ChangeShippingAddress, &to("F\nR"))
        .await
        .unwrap_err();
    assert!(
        invalid
            .to_string()
            .contains("rejected: shipping_address.country must not hold control characters"),
        "{invalid}"
    );
    let item = Item {
        sku: "sku-2".into(),
        qty: 1,
        unit_price_cents: 300,
    };
    let late = run.update(AddItem, &item).await.unwrap_err();
    assert!(
        late.to_string()
            .contains("the order is at step 'payment': its stock is being reserved"),
        "{late}"
    );
    permits.add_permits(1);
    let o = outcome(&env, &run).await;
    assert_eq!(o.status, "completed", "{o:?}");
    assert_eq!(shop.shipped_to.lock().unwrap().as_deref(), Some("DE"));
    let after = run
        .update(ChangeShippingAddress, &to("IT"))
        .await
        .unwrap_err();
    assert!(after.to_string().contains("is closed"), "{after}");
}

#[tokio::test]
async fn a_line_added_while_the_order_is_priced_is_priced_and_charged() {
    let (started, permits) = gate();
    let shop = Shop {
        price_gate: Some((started.clone(), permits.clone())),
        ..Shop::default()
    };
    let (env, run) = place(&shop, "o-grown").await;
    started.notified().await;
    let item = Item {
        sku: "sku-2".into(),
        qty: 3,
        unit_price_cents: 300,
    };
    let lines = run.update(AddItem, &item).await.unwrap();
    assert_eq!(lines.len(), 2);
    // Both pricings pass the gate: the first (of one line) is dropped, the second counts.
    permits.add_permits(2);
    let o = outcome(&env, &run).await;
    assert_eq!(o.status, "completed", "{o:?}");
    let mut grown = an_order("o-grown");
    grown.items.push(item);
    assert_eq!(o.charged_cents, invoice(&grown).total_cents);
    assert_eq!(
        shop.calls()[..3],
        ["price_order", "price_order", "reserve_inventory"]
    );
}
