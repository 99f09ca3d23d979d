//! The order activities: each calls one adapter through its circuit breaker, with the fault
//! knobs applied inside the breaker (injected failures count as outages). `price_order`
//! validates the order (pure code), checks its prices against the catalogue through the
//! `catalog` breaker, prices it (pure), then counts the placer's recent orders through the
//! `fraud` breaker.

use crate::adapters::{Catalog, FraudCheck, Inventory, Noop, Notifier, PaymentGateway, Shipping};
use crate::breaker::{Breaker, BreakerRegistry, Guarded};
use crate::catalog;
use crate::faults::Faults;
use crate::fraud::{self, FraudRules, Rejection};
use crate::notify::AmqpNotifier;
use crate::reference::{AdapterError, ReferenceAdapters};
use martix_order_contract::reconcile::ReconcileWindow;
use martix_order_contract::saga::{
    ChargePayment, CreateShipment, PriceOrder, ReconcilePayments, RefundPayment, ReleaseInventory,
    ReserveInventory, SendNotification,
};
use martix_order_contract::{Invoice, NotificationInput, Order, StepInput, failures};
use martix_sdk::{Activity, ActivityContext, ActivityError, Worker};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The downstream systems the activities call.
#[derive(Clone)]
pub struct Backend {
    pub inventory: Arc<dyn Inventory>,
    pub payment: Arc<dyn PaymentGateway>,
    pub shipping: Arc<dyn Shipping>,
    pub notifier: Arc<dyn Notifier>,
    /// The velocity count of the fraud rules.
    pub fraud: Arc<dyn FraudCheck>,
    /// The prices an order's items must carry.
    pub catalog: Arc<dyn Catalog>,
}

impl Backend {
    /// All on the reference adapters; notifications on RabbitMQ if `amqp` is given.
    pub fn reference(adapters: ReferenceAdapters, amqp: Option<AmqpNotifier>) -> Self {
        let r = Arc::new(adapters);
        Self {
            inventory: r.clone(),
            payment: r.clone(),
            shipping: r.clone(),
            fraud: r.clone(),
            catalog: r.clone(),
            notifier: match amqp {
                Some(n) => Arc::new(n),
                None => r,
            },
        }
    }

    /// All answering at once without I/O (benchmarks of the engine alone).
    pub fn noop() -> Self {
        Self {
            inventory: Arc::new(Noop),
            payment: Arc::new(Noop),
            shipping: Arc::new(Noop),
            notifier: Arc::new(Noop),
            fraud: Arc::new(Noop),
            catalog: Arc::new(Noop),
        }
    }
}

/// A payment call under way, counted in `CallCounts::payment_in_flight` until dropped.
struct InFlight<'a>(&'a CallCounts);

impl<'a> InFlight<'a> {
    fn enter(calls: &'a CallCounts) -> Self {
        let now = calls.payment_in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        calls
            .payment_in_flight_max
            .fetch_max(now, Ordering::Relaxed);
        Self(calls)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.payment_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters of calls that reached each adapter (past its breaker).
#[derive(Debug, Default)]
pub struct CallCounts {
    pub inventory: AtomicU64,
    pub payment: AtomicU64,
    /// Payment calls under way now, and the most at once since last reset (a herd of retries
    /// after an outage shows here).
    pub payment_in_flight: AtomicU64,
    pub payment_in_flight_max: AtomicU64,
    pub shipping: AtomicU64,
    pub notification: AtomicU64,
    pub fraud: AtomicU64,
    pub catalog: AtomicU64,
}

/// The order activities with their adapters, breakers, fault knobs and fraud rules.
pub struct OrderActivities {
    backend: Backend,
    faults: Faults,
    inventory: Breaker,
    payment: Breaker,
    shipping: Breaker,
    notification: Breaker,
    fraud: Breaker,
    catalog: Breaker,
    fraud_rules: FraudRules,
    breakers: BreakerRegistry,
    calls: CallCounts,
    /// Whether an item of a SKU the catalogue does not list is refused (`UnknownSku`)
    /// rather than priced as the client says.
    closed_catalog: AtomicBool,
}

/// Breaker settings: consecutive failures to open, and how long it stays open.
#[derive(Clone, Copy, Debug)]
pub struct BreakerSettings {
    pub failures: u32,
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            open_for: Duration::from_secs(5),
        }
    }
}

fn to_activity_error(e: Guarded<AdapterError>, adapter: &str) -> ActivityError {
    match e {
        Guarded::Open { retry_after } => ActivityError::circuit_open(adapter, retry_after),
        Guarded::Failed(AdapterError::Rejected { kind, message }) => {
            ActivityError::non_retryable(kind, message)
        }
        Guarded::Failed(AdapterError::Unavailable(m)) => ActivityError::retryable("Unavailable", m),
    }
}

impl OrderActivities {
    /// Activities on `backend`, with the default fraud rules.
    pub fn new(backend: Backend, faults: Faults, settings: BreakerSettings) -> Arc<Self> {
        let breakers = BreakerRegistry::default();
        let b = |name| Breaker::new(name, settings.failures, settings.open_for, &breakers);
        Arc::new(Self {
            inventory: b("inventory"),
            payment: b("payment"),
            shipping: b("shipping"),
            notification: b("notification"),
            fraud: b("fraud"),
            catalog: b("catalog"),
            fraud_rules: FraudRules::default(),
            backend,
            faults,
            breakers,
            calls: CallCounts::default(),
            closed_catalog: AtomicBool::new(false),
        })
    }

    /// Closes the catalogue (`true`): an order with an item of a SKU it does not list is
    /// refused (`UnknownSku`) before anything is reserved. Open by default: such items keep the
    /// client's price.
    pub fn set_closed_catalog(&self, closed: bool) {
        self.closed_catalog.store(closed, Ordering::Relaxed);
    }

    /// The breakers' states.
    pub fn breakers(&self) -> &BreakerRegistry {
        &self.breakers
    }

    /// Calls that reached each adapter.
    pub fn calls(&self) -> &CallCounts {
        &self.calls
    }

    /// The fault knobs (the payment outage switch can be flipped while running).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Calls one adapter through its breaker, with its fault knobs applied inside the breaker
    /// (injected failures count as outages) and the payment outage switch honoured.
    async fn guarded<T, F>(&self, adapter: Adapter, call: F) -> Result<T, ActivityError>
    where
        F: std::future::Future<Output = Result<T, AdapterError>>,
    {
        let (breaker, knob, counter) = match adapter {
            Adapter::Inventory => (
                &self.inventory,
                &self.faults.inventory,
                &self.calls.inventory,
            ),
            Adapter::Payment => (&self.payment, &self.faults.payment, &self.calls.payment),
            Adapter::Shipping => (&self.shipping, &self.faults.shipping, &self.calls.shipping),
            Adapter::Notification => (
                &self.notification,
                &self.faults.notification,
                &self.calls.notification,
            ),
            Adapter::Fraud => (&self.fraud, &self.faults.fraud, &self.calls.fraud),
            Adapter::Catalog => (&self.catalog, &self.faults.catalog, &self.calls.catalog),
        };
        let outage = adapter == Adapter::Payment && self.faults.payment_out();
        let run = async {
            counter.fetch_add(1, Ordering::Relaxed);
            let _in_flight = (adapter == Adapter::Payment).then(|| InFlight::enter(&self.calls));
            if outage {
                return Err(AdapterError::Unavailable(format!(
                    "{} gateway unavailable (outage)",
                    breaker.name()
                )));
            }
            Faults::apply(knob)
                .await
                .map_err(AdapterError::Unavailable)?;
            call.await
        };
        breaker
            .call(AdapterError::is_outage, run)
            .await
            .map_err(|e| to_activity_error(e, breaker.name()))
    }

    /// Registers activity `A`: `call` gets the backend, the attempt's idempotency key and
    /// the input, and runs through `adapter`'s breaker.
    fn step<A, Fut>(
        self: &Arc<Self>,
        worker: &mut Worker,
        activity: A,
        adapter: Adapter,
        call: impl Fn(Backend, String, A::Input) -> Fut + Send + Sync + 'static,
    ) where
        A: Activity,
        Fut: std::future::Future<Output = Result<A::Output, AdapterError>> + Send + 'static,
    {
        let me = self.clone();
        let call = Arc::new(call);
        worker.activity(activity, move |ctx: ActivityContext, input: A::Input| {
            let (me, call) = (me.clone(), call.clone());
            async move {
                let fut = call(me.backend.clone(), ctx.idempotency_key(), input);
                me.guarded(adapter, fut).await
            }
        });
    }

    /// `price_order`: refuses an invalid order (`InvalidOrder`) and one whose prices are not
    /// the catalogue's (`PriceMismatch`), prices it, applies the amount limit
    /// (`AmountLimit`), then counts the recent orders of whoever placed it (`placed_by`, else
    /// the customer) through the `fraud` breaker and applies the velocity rule
    /// (`TooManyOrders`). Refusals are final; an unavailable catalogue or fraud check is
    /// retried.
    async fn price_order(&self, order: &Order) -> Result<Invoice, ActivityError> {
        let refuse = |r: Rejection| ActivityError::non_retryable(r.kind, r.message);
        order
            .validate()
            .map_err(|e| ActivityError::non_retryable(failures::INVALID_ORDER, e.to_string()))?;
        let skus: Vec<&str> = order.items.iter().map(|i| i.sku.as_str()).collect();
        let listed = self
            .guarded(Adapter::Catalog, self.backend.catalog.prices(&skus))
            .await?;
        catalog::check_prices(order, &listed, self.closed_catalog.load(Ordering::Relaxed))
            .map_err(refuse)?;
        let invoice = martix_order_contract::invoice(order);
        fraud::check_amount(&self.fraud_rules, &invoice).map_err(refuse)?;
        let recent = self
            .guarded(
                Adapter::Fraud,
                self.backend
                    .fraud
                    .recent_orders(&order.velocity_key(), &order.order_id),
            )
            .await?;
        fraud::check_velocity(&self.fraud_rules, recent).map_err(refuse)?;
        Ok(invoice)
    }

    /// Registers the seven order activities on a worker.
    pub fn register(self: &Arc<Self>, worker: &mut Worker) {
        use Adapter::*;
        let me = self.clone();
        worker.activity(PriceOrder, move |_, i: StepInput| {
            let me = me.clone();
            async move { me.price_order(&i.order).await }
        });
        self.step(
            worker,
            ReserveInventory,
            Inventory,
            |b, key, i: StepInput| async move { b.inventory.reserve(&key, &i.order).await },
        );
        self.step(
            worker,
            ReleaseInventory,
            Inventory,
            |b, _, i: StepInput| async move { b.inventory.release(&i.undo_key).await },
        );
        self.step(
            worker,
            ChargePayment,
            Payment,
            |b, key, i: StepInput| async move { b.payment.charge(&key, &i.order).await },
        );
        let refused = self.faults.refunds_refused.clone();
        self.step(worker, RefundPayment, Payment, move |b, _, i: StepInput| {
            let refused = refused.load(Ordering::Relaxed);
            async move {
                if refused {
                    return Err(AdapterError::Rejected {
                        kind: "RefundRefused",
                        message: format!("the gateway refuses to refund {}", i.undo_key),
                    });
                }
                b.payment.refund(&i.undo_key).await
            }
        });
        self.step(
            worker,
            ReconcilePayments,
            Payment,
            |b, _, w: ReconcileWindow| async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                b.payment.reconcile(&w, now).await
            },
        );
        self.step(worker, CreateShipment, Shipping, |b, key, i: StepInput| async move {
            b.shipping.ship(&key, &i.order, &i.undo_key).await
        });
        self.step(
            worker,
            SendNotification,
            Notification,
            |b, key, i: NotificationInput| async move {
                let body = serde_json::to_vec(&i.body).map_err(|e| AdapterError::Rejected {
                    kind: "BadPayload",
                    message: e.to_string(),
                })?;
                b.notifier
                    .notify(&key, &i.order_id, &i.outcome, &body)
                    .await
            },
        );
    }
}

/// Which downstream system a call goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Adapter {
    Inventory,
    Payment,
    Shipping,
    Notification,
    Fraud,
    Catalog,
}
