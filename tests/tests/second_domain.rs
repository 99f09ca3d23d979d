//! The second domain (`martix_tests::subscriptions`) end to end on both stores: subscriptions
//! renew, lapse and are canceled through the real engine; their read model, a projection
//! registered through the same hook as the order domain's, says what the workflows returned and
//! what the biller charged; a rebuild gives the same rows, and folding every event again counts
//! none twice; the order read model and the subscription read model keep to their own events.
//!
//! Each test has a database of its own (PostgreSQL: a fresh database; SQLite: a fresh file):
//! the waits read the whole outbox, which other tests' engines would share.

use martix_engine::events::{EventsConfig, Pools, Projection};
use martix_order_contract::{ORDER_WORKFLOW_TYPE, OrderOutcome};
use martix_proto::v1 as pb;
use martix_sdk::{Client, Replayer, StartOptions, Worker, WorkerOptions, WorkflowHandle};
use martix_tests::subscriptions::{
    self, Billing, CANCEL_SIGNAL, CancelRequest, Outcome, SUBSCRIPTION, Subscription,
    SubscriptionRow, Subscriptions, SubscriptionsProjection,
};
use martix_tests::{Backend, OrderShop, TestEngine, fast_config, on_both_backends, unique};
use rand::SeedableRng;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long any one wait of these tests may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// An engine with both domains installed, an order shop on it, and a subscription worker
/// over an in-memory biller.
struct World {
    shop: OrderShop,
    billing: Arc<Billing>,
    client: Client,
    /// The subscription worker's task queue.
    queue: String,
    read_model: Subscriptions,
    database_url: String,
    stop: CancellationToken,
}

impl World {
    async fn open(backend: Backend) -> Self {
        let database_url = match backend {
            Backend::Postgres => martix_tests::fresh_postgres_url().await,
            Backend::Sqlite => martix_tests::sqlite_url(),
        };
        let engine = TestEngine::start_with_domains(
            &database_url,
            fast_config(),
            EventsConfig::default(),
            subscriptions::install,
        )
        .await;
        let pools = engine.engine.store().pools();
        let shop = OrderShop::open(
            engine,
            martix_activities::Faults::default(),
            martix_activities::BreakerSettings::default(),
            "subs",
            |_| 1_000,
        )
        .await;
        let billing = Billing::new();
        let queue = unique("subscriptions");
        let mut worker = Worker::new(&shop.engine.endpoint, WorkerOptions::new(&queue)).unwrap();
        worker.register_workflow(SUBSCRIPTION, subscriptions::subscription);
        billing.register(&mut worker);
        let stop = CancellationToken::new();
        tokio::spawn(worker.run(stop.clone()));
        let client = Client::connect(shop.engine.endpoint.clone()).await.unwrap();
        Self {
            shop,
            billing,
            client,
            queue,
            read_model: Subscriptions::new(pools),
            database_url,
            stop,
        }
    }

    /// Stops everything and drops the test's PostgreSQL database.
    async fn close(self) {
        self.stop.cancel();
        let url = self.database_url.clone();
        drop(self);
        if url.starts_with("postgres") {
            martix_tests::drop_postgres_database(&url).await;
        }
    }

    fn subscription(&self, n: usize, renewals: u32, price_cents: i64) -> Subscription {
        Subscription {
            subscription_id: unique(&format!("sub{n}")),
            customer: format!("customer-{n}"),
            plan: ["basic", "plus", "gold"][n % 3].into(),
            price_cents,
            renewals,
            period_ms: 50,
        }
    }

    async fn start(&self, sub: &Subscription) -> WorkflowHandle {
        self.client
            .start_workflow(
                StartOptions::new(SUBSCRIPTION, &sub.subscription_id, &self.queue),
                sub,
            )
            .await
            .unwrap()
    }

    async fn run_all(&self, subs: &[Subscription]) -> Vec<Outcome> {
        let mut runs = Vec::new();
        for sub in subs {
            runs.push(self.start(sub).await);
        }
        futures::future::join_all(runs.iter().map(|run| async move {
            tokio::time::timeout(DEADLINE, run.result::<Outcome>())
                .await
                .expect("the subscription ends")
                .unwrap()
        }))
        .await
    }

    /// Places one order and waits for its outcome.
    async fn place_order(&self) -> (String, OrderOutcome) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let order = martix_activities::random_order(&mut rng, &self.shop.prefix, 0, 4);
        let run = self
            .shop
            .client
            .start_workflow(
                StartOptions::new(ORDER_WORKFLOW_TYPE, &order.order_id, &self.shop.queue),
                &order,
            )
            .await
            .unwrap();
        let outcome = tokio::time::timeout(DEADLINE, run.result::<OrderOutcome>())
            .await
            .expect("the order ends")
            .unwrap();
        (order.order_id, outcome)
    }

    /// Waits until the projection host folded every event in the outbox.
    async fn wait_projected(&self) {
        let engine = &self.shop.engine.engine;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let status = engine.store().outbox_status(engine.now()).await.unwrap();
            if status.unprojected == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the read models stay {} events behind",
                status.unprojected
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the read model holds `id` in a state `done` accepts.
    async fn wait_row(&self, id: &str, done: impl Fn(&SubscriptionRow) -> bool) -> SubscriptionRow {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let row = self.read_model.get("default", id).await.unwrap();
            if let Some(row) = row.filter(|r| done(r)) {
                return row;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "subscription {id} never reached the state awaited in the read model"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The events the history of workflow `id` published: (type, event id), in order.
    async fn published(&self, id: &str) -> Vec<(String, String)> {
        self.client
            .handle(id)
            .history()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.attributes {
                Some(pb::history_event::Attributes::EventPublished(p)) => {
                    Some((p.event_type, p.event_id))
                }
                _ => None,
            })
            .collect()
    }

    /// The read model's row of `sub` says what its workflow returned, what the biller charged
    /// and what its history published.
    async fn check_row(&self, sub: &Subscription, outcome: &Outcome) -> SubscriptionRow {
        let id = &sub.subscription_id;
        let row = self
            .read_model
            .get("default", id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no row for {id}"));
        assert_eq!(row.status, outcome.status, "{id}");
        assert_eq!(row.renewals, i64::from(outcome.renewals), "{id}");
        assert_eq!(row.charged_cents, outcome.charged_cents, "{id}");
        assert_eq!(row.last_charge_id.as_ref(), outcome.charges.last(), "{id}");
        assert_eq!(
            (&row.customer, &row.plan, row.price_cents),
            (&sub.customer, &sub.plan, sub.price_cents),
            "{id}"
        );
        let charged = self.billing.charges(id);
        assert_eq!(
            charged.iter().map(|c| c.charge.amount_cents).sum::<i64>(),
            row.charged_cents,
            "{id}: the read model's charged cents are the biller's"
        );
        assert_eq!(
            charged
                .iter()
                .map(|c| c.charge.charge_id.clone())
                .collect::<Vec<_>>(),
            outcome.charges,
            "{id}"
        );
        let published = self.published(id).await;
        assert_eq!(row.last_sequence, published.len() as i64, "{id}");
        assert_eq!(Some(&row.last_event_id), published.last().map(|p| &p.1));
        row
    }
}

fn types(published: &[(String, String)]) -> Vec<&str> {
    published.iter().map(|p| p.0.as_str()).collect()
}

async fn subscriptions_run_to_their_end_and_the_read_model_says_what_they_returned(
    backend: Backend,
) {
    let world = World::open(backend).await;
    let subs: Vec<Subscription> = (0..5)
        .map(|n| world.subscription(n, n as u32, 990 + 100 * n as i64))
        .collect();
    let (order_id, order_outcome) = world.place_order().await;
    let outcomes = world.run_all(&subs).await;
    world.wait_projected().await;

    for (sub, outcome) in subs.iter().zip(&outcomes) {
        assert_eq!(outcome.status, "ended", "{outcome:?}");
        assert_eq!(outcome.renewals, sub.renewals);
        assert_eq!(
            outcome.charged_cents,
            sub.price_cents * i64::from(sub.renewals)
        );
        world.check_row(sub, outcome).await;
        let published = world.published(&sub.subscription_id).await;
        let mut want = vec!["subscription.started"];
        want.extend((0..sub.renewals).map(|_| "subscription.renewed"));
        want.push("subscription.ended");
        assert_eq!(types(&published), want);
    }
    let rows = world.read_model.all().await.unwrap();
    let mut ids: Vec<&str> = subs.iter().map(|s| s.subscription_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        rows.iter()
            .map(|r| r.subscription_id.as_str())
            .collect::<Vec<_>>(),
        ids,
        "one row per subscription, and none for the order"
    );

    // Each read model took its own domain's events and no other's.
    let folded = world.read_model.events().await.unwrap();
    let order_events = world.published(&order_id).await;
    assert!(!order_events.is_empty());
    assert!(
        folded
            .iter()
            .all(|e| e.event_type.starts_with("subscription.") && e.subscription_id != order_id),
        "the subscriptions read model took an order event: {folded:?}"
    );
    let mut all_published = 0;
    for sub in &subs {
        all_published += world.published(&sub.subscription_id).await.len();
    }
    assert_eq!(folded.len(), all_published);
    let orders = martix_orders::ReadModel::new(world.shop.engine.engine.store().pools());
    let order_rows = orders.all_orders().await.unwrap();
    assert_eq!(
        order_rows
            .iter()
            .map(|o| o.order_id.as_str())
            .collect::<Vec<_>>(),
        [order_id.as_str()],
        "the orders read model holds the order and no subscription"
    );
    let kept = orders.order_events("default", &order_id).await.unwrap();
    assert_eq!(kept.len(), order_events.len(), "{order_outcome:?}");
    for sub in &subs {
        assert!(
            orders
                .order_events("default", &sub.subscription_id)
                .await
                .unwrap()
                .is_empty()
        );
    }

    // The server applied the read model's migrations, tracked under the projection's owner.
    let versions: Vec<i64> = match world.shop.engine.engine.store().pools() {
        Pools::Postgres { read, .. } => {
            sqlx::query_scalar("SELECT version FROM martix_migrations_subscriptions")
                .fetch_all(&read)
                .await
        }
        Pools::Sqlite { read, .. } => {
            sqlx::query_scalar("SELECT version FROM martix_migrations_subscriptions")
                .fetch_all(&read)
                .await
        }
    }
    .unwrap();
    assert_eq!(versions, [1]);

    // The workflow replays its own histories (it is deterministic).
    let mut replayer = Replayer::new();
    replayer.register_workflow(SUBSCRIPTION, subscriptions::subscription);
    let longest = subs.last().unwrap();
    replayer
        .replay(
            &world
                .client
                .handle(&longest.subscription_id)
                .history()
                .await
                .unwrap(),
        )
        .expect("the subscription workflow replays its history");
    world.close().await;
}

async fn a_canceled_subscription_reads_canceled(backend: Backend) {
    let world = World::open(backend).await;
    // A period long enough that the cancel surely comes before the first renewal.
    let sub = Subscription {
        period_ms: 3_600_000,
        ..world.subscription(0, 3, 1_500)
    };
    let run = world.start(&sub).await;
    world
        .wait_row(&sub.subscription_id, |r| r.status == "active")
        .await;
    run.signal_by_name(
        CANCEL_SIGNAL,
        &CancelRequest {
            reason: "moving abroad".into(),
        },
    )
    .await
    .unwrap();
    let outcome: Outcome = tokio::time::timeout(DEADLINE, run.result())
        .await
        .expect("the subscription ends")
        .unwrap();
    assert_eq!(outcome.status, "canceled");
    assert_eq!((outcome.renewals, outcome.charged_cents), (0, 0));
    assert_eq!(outcome.reason.as_deref(), Some("moving abroad"));
    world.wait_projected().await;
    let row = world.check_row(&sub, &outcome).await;
    assert_eq!(row.reason.as_deref(), Some("moving abroad"));
    assert_eq!(
        types(&world.published(&sub.subscription_id).await),
        ["subscription.started", "subscription.canceled"]
    );
    assert_eq!(world.billing.attempts(&sub.subscription_id, 1), 0);
    world.close().await;
}

async fn a_charge_declined_for_good_lapses_the_subscription_and_tells_the_customer(
    backend: Backend,
) {
    let world = World::open(backend).await;
    let sub = world.subscription(0, 3, 2_500);
    world.billing.decline_from(&sub.customer, 2);
    let outcomes = world.run_all(std::slice::from_ref(&sub)).await;
    let outcome = &outcomes[0];
    assert_eq!(outcome.status, "lapsed", "{outcome:?}");
    assert_eq!((outcome.renewals, outcome.charged_cents), (1, 2_500));
    assert!(
        outcome
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with(subscriptions::model::CARD_DECLINED)),
        "{outcome:?}"
    );
    assert!(outcome.customer_notified);
    // Declined is final: no second attempt, and the third renewal is never tried.
    assert_eq!(world.billing.attempts(&sub.subscription_id, 2), 1);
    assert_eq!(world.billing.attempts(&sub.subscription_id, 3), 0);
    let notices = world.billing.notices();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].subscription_id, sub.subscription_id);
    assert_eq!(notices[0].customer, sub.customer);

    world.wait_projected().await;
    let row = world.check_row(&sub, outcome).await;
    assert_eq!(row.reason, outcome.reason);
    assert_eq!(
        types(&world.published(&sub.subscription_id).await),
        [
            "subscription.started",
            "subscription.renewed",
            "subscription.lapsed"
        ]
    );
    world.close().await;
}

async fn a_rebuild_gives_the_same_rows_and_folding_again_counts_nothing_twice(backend: Backend) {
    let world = World::open(backend).await;
    let ended = [
        world.subscription(0, 2, 700),
        world.subscription(1, 3, 1_100),
    ];
    let lapsing = world.subscription(2, 3, 900);
    world.billing.decline_from(&lapsing.customer, 3);
    let canceled = Subscription {
        period_ms: 3_600_000,
        ..world.subscription(3, 2, 400)
    };
    let cancel_run = world.start(&canceled).await;
    world.place_order().await;
    let mut subs = ended.to_vec();
    subs.push(lapsing);
    let mut outcomes = world.run_all(&subs).await;
    cancel_run
        .signal_by_name(CANCEL_SIGNAL, &CancelRequest::default())
        .await
        .unwrap();
    outcomes.push(
        tokio::time::timeout(DEADLINE, cancel_run.result())
            .await
            .expect("the subscription ends")
            .unwrap(),
    );
    subs.push(canceled);
    world.wait_projected().await;
    let statuses: Vec<&str> = outcomes.iter().map(|o| o.status.as_str()).collect();
    assert_eq!(statuses, ["ended", "ended", "lapsed", "canceled"]);
    for (sub, outcome) in subs.iter().zip(&outcomes) {
        world.check_row(sub, outcome).await;
    }
    let rows = world.read_model.all().await.unwrap();
    let folded = world.read_model.events().await.unwrap();
    let orders = martix_orders::ReadModel::new(world.shop.engine.engine.store().pools());
    let order_rows = orders.all_orders().await.unwrap();
    assert_eq!(rows.len(), subs.len());

    let projections: [Arc<dyn Projection>; 1] = [Arc::new(SubscriptionsProjection)];
    let engine = &world.shop.engine.engine;
    let count = martix_engine::events::rebuild(engine, &projections)
        .await
        .unwrap();
    assert_eq!(
        count,
        folded.len(),
        "the rebuild folds every subscription event"
    );
    assert_eq!(
        world.read_model.all().await.unwrap(),
        rows,
        "a rebuild gives the same rows"
    );
    assert_eq!(world.read_model.events().await.unwrap(), folded);

    // The rebuild set the host's cursors back to the start: the relay hands every event to
    // every read model again, from each subscription's start.
    world.wait_projected().await;
    assert_eq!(world.read_model.all().await.unwrap(), rows);
    assert_eq!(orders.all_orders().await.unwrap(), order_rows);

    // A delivery again of a batch without the start (a crash between a fold and its commit
    // elsewhere, a relay whose lease ran out): the projection skips the events it holds, so no
    // renewal counts twice.
    let again: Vec<_> = martix_engine::events::events_from_histories(engine, &projections)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type != "subscription.started")
        .collect();
    assert!(again.iter().any(|e| e.event_type == "subscription.renewed"));
    fold_in_own_transaction(&engine.store().pools(), &again).await;
    assert_eq!(
        world.read_model.all().await.unwrap(),
        rows,
        "folding events again changes no row"
    );
    world.close().await;
}

/// Folds `events` into the subscriptions projection in a transaction of this test's own, as
/// the projection host would.
async fn fold_in_own_transaction(
    pools: &Pools,
    events: &[martix_engine::store::events::StoredEvent],
) {
    use martix_engine::events::ProjectionTx;
    let batch: Vec<_> = events.iter().collect();
    match pools {
        Pools::Postgres { write, .. } => {
            let mut tx = write.begin().await.unwrap();
            SubscriptionsProjection
                .fold(&mut ProjectionTx::Postgres(&mut tx), &batch)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        Pools::Sqlite { write, .. } => {
            let mut tx = write.begin().await.unwrap();
            SubscriptionsProjection
                .fold(&mut ProjectionTx::Sqlite(&mut tx), &batch)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
}

on_both_backends!(
    subscriptions_run_to_their_end_and_the_read_model_says_what_they_returned,
    a_canceled_subscription_reads_canceled,
    a_charge_declined_for_good_lapses_the_subscription_and_tells_the_customer,
    a_rebuild_gives_the_same_rows_and_folding_again_counts_nothing_twice,
);
