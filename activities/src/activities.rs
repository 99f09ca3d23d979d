//! The order activities: each calls one adapter through its circuit breaker, with the fault
//! knobs applied inside the breaker (injected failures count as outages).

use crate::adapters::{Inventory, Noop, Notifier, PaymentGateway, Shipping};
use crate::breaker::{Breaker, BreakerRegistry, Guarded};
use crate::faults::{Faults, Knob};
use crate::model::{StepInput, names};
use crate::notify::AmqpNotifier;
use crate::reference::{AdapterError, ReferenceAdapters};
use martix_sdk::{ActivityContext, ActivityError, Worker};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The downstream systems the activities call.
#[derive(Clone)]
pub struct Backend {
    pub inventory: Arc<dyn Inventory>,
    pub payment: Arc<dyn PaymentGateway>,
    pub shipping: Arc<dyn Shipping>,
    pub notifier: Arc<dyn Notifier>,
}

impl Backend {
    /// All four on the reference adapters; notifications on RabbitMQ if `amqp` is given.
    pub fn reference(adapters: ReferenceAdapters, amqp: Option<AmqpNotifier>) -> Self {
        let r = Arc::new(adapters);
        Self {
            inventory: r.clone(),
            payment: r.clone(),
            shipping: r.clone(),
            notifier: match amqp {
                Some(n) => Arc::new(n),
                None => r,
            },
        }
    }

    /// All four answering at once without I/O (benchmarks of the engine alone).
    pub fn noop() -> Self {
        Self {
            inventory: Arc::new(Noop),
            payment: Arc::new(Noop),
            shipping: Arc::new(Noop),
            notifier: Arc::new(Noop),
        }
    }
}

/// Input of `send_notification`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NotificationInput {
    pub order_id: String,
    pub outcome: String,
    pub body: serde_json::Value,
}

/// Counters of calls that reached each adapter (past its breaker).
#[derive(Debug, Default)]
pub struct CallCounts {
    pub inventory: AtomicU64,
    pub payment: AtomicU64,
    pub shipping: AtomicU64,
    pub notification: AtomicU64,
}

/// The order activities with their adapters, breakers and fault knobs.
pub struct OrderActivities {
    backend: Backend,
    faults: Faults,
    inventory: Breaker,
    payment: Breaker,
    shipping: Breaker,
    notification: Breaker,
    breakers: BreakerRegistry,
    calls: CallCounts,
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
        Guarded::Open { retry_after } => ActivityError::retryable(
            "CircuitOpen",
            format!("circuit breaker of the {adapter} adapter is open"),
        )
        .with_retry_after(retry_after),
        Guarded::Failed(AdapterError::Rejected { kind, message }) => {
            ActivityError::non_retryable(kind, message)
        }
        Guarded::Failed(AdapterError::Unavailable(m)) => ActivityError::retryable("Unavailable", m),
    }
}

impl OrderActivities {
    /// Activities on `backend`.
    pub fn new(backend: Backend, faults: Faults, settings: BreakerSettings) -> Arc<Self> {
        let breakers = BreakerRegistry::default();
        let b = |name| Breaker::new(name, settings.failures, settings.open_for, &breakers);
        Arc::new(Self {
            inventory: b("inventory"),
            payment: b("payment"),
            shipping: b("shipping"),
            notification: b("notification"),
            backend,
            faults,
            breakers,
            calls: CallCounts::default(),
        })
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

    async fn guarded<T, F>(
        &self,
        breaker: &Breaker,
        knob: &Knob,
        counter: &AtomicU64,
        extra_outage: bool,
        call: F,
    ) -> Result<T, ActivityError>
    where
        F: std::future::Future<Output = Result<T, AdapterError>>,
    {
        let run = async {
            counter.fetch_add(1, Ordering::Relaxed);
            if extra_outage {
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

    /// Registers the six order activities on a worker.
    pub fn register(self: &Arc<Self>, worker: &mut Worker) {
        let me = self.clone();
        worker.register_activity(
            names::RESERVE_INVENTORY,
            move |ctx: ActivityContext, input: StepInput| {
                let me = me.clone();
                async move {
                    let key = ctx.idempotency_key();
                    let b = &me.backend;
                    me.guarded(
                        &me.inventory,
                        &me.faults.inventory,
                        &me.calls.inventory,
                        false,
                        b.inventory.reserve(&key, &input.order),
                    )
                    .await
                }
            },
        );
        let me = self.clone();
        worker.register_activity(
            names::RELEASE_INVENTORY,
            move |_ctx: ActivityContext, input: StepInput| {
                let me = me.clone();
                async move {
                    let b = &me.backend;
                    me.guarded(
                        &me.inventory,
                        &me.faults.inventory,
                        &me.calls.inventory,
                        false,
                        b.inventory.release(&input.undo_key),
                    )
                    .await
                }
            },
        );
        let me = self.clone();
        worker.register_activity(
            names::CHARGE_PAYMENT,
            move |ctx: ActivityContext, input: StepInput| {
                let me = me.clone();
                async move {
                    let key = ctx.idempotency_key();
                    let out = me.faults.payment_out();
                    let b = &me.backend;
                    me.guarded(
                        &me.payment,
                        &me.faults.payment,
                        &me.calls.payment,
                        out,
                        b.payment.charge(&key, &input.order),
                    )
                    .await
                }
            },
        );
        let me = self.clone();
        worker.register_activity(
            names::REFUND_PAYMENT,
            move |_ctx: ActivityContext, input: StepInput| {
                let me = me.clone();
                async move {
                    let out = me.faults.payment_out();
                    let b = &me.backend;
                    me.guarded(
                        &me.payment,
                        &me.faults.payment,
                        &me.calls.payment,
                        out,
                        b.payment.refund(&input.undo_key),
                    )
                    .await
                }
            },
        );
        let me = self.clone();
        worker.register_activity(
            names::CREATE_SHIPMENT,
            move |ctx: ActivityContext, input: StepInput| {
                let me = me.clone();
                async move {
                    let key = ctx.idempotency_key();
                    let b = &me.backend;
                    me.guarded(
                        &me.shipping,
                        &me.faults.shipping,
                        &me.calls.shipping,
                        false,
                        b.shipping.ship(&key, &input.order, &input.undo_key),
                    )
                    .await
                }
            },
        );
        let me = self.clone();
        worker.register_activity(
            names::SEND_NOTIFICATION,
            move |ctx: ActivityContext, input: NotificationInput| {
                let me = me.clone();
                async move {
                    let key = ctx.idempotency_key();
                    let body = serde_json::to_vec(&input.body)?;
                    let b = &me.backend;
                    me.guarded(
                        &me.notification,
                        &me.faults.notification,
                        &me.calls.notification,
                        false,
                        b.notifier
                            .notify(&key, &input.order_id, &input.outcome, &body),
                    )
                    .await
                }
            },
        );
    }
}
