//! The order activities: each calls one adapter through its circuit breaker, with the fault
//! knobs applied inside the breaker (injected failures count as outages).

use crate::breaker::{Breaker, BreakerRegistry, Guarded};
use crate::faults::{Faults, Knob};
use crate::model::{Charge, StepInput, names};
use crate::notify::AmqpNotifier;
use crate::reference::{AdapterError, ReferenceAdapters};
use martix_sdk::{ActivityContext, ActivityError, Worker};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where the activities' effects go.
#[derive(Clone)]
pub enum Backend {
    /// The reference adapters in the database.
    Reference(ReferenceAdapters),
    /// Every step succeeds at once without I/O (declines still follow the customer rule);
    /// for benchmarks of the engine alone.
    Noop,
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
    notifier: Option<AmqpNotifier>,
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
    /// Activities on `backend`, notifying on RabbitMQ when `notifier` is given.
    pub fn new(
        backend: Backend,
        notifier: Option<AmqpNotifier>,
        faults: Faults,
        settings: BreakerSettings,
    ) -> Arc<Self> {
        let breakers = BreakerRegistry::default();
        let b = |name| Breaker::new(name, settings.failures, settings.open_for, &breakers);
        Arc::new(Self {
            inventory: b("inventory"),
            payment: b("payment"),
            shipping: b("shipping"),
            notification: b("notification"),
            backend,
            notifier,
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
                    me.guarded(
                        &me.inventory,
                        &me.faults.inventory,
                        &me.calls.inventory,
                        false,
                        async {
                            match &me.backend {
                                Backend::Reference(a) => a.reserve(&key, &input.order).await,
                                Backend::Noop => Ok(key.clone()),
                            }
                        },
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
                    me.guarded(
                        &me.inventory,
                        &me.faults.inventory,
                        &me.calls.inventory,
                        false,
                        async {
                            match &me.backend {
                                Backend::Reference(a) => a.release(&input.undo_key).await,
                                Backend::Noop => Ok(()),
                            }
                        },
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
                    me.guarded(
                        &me.payment,
                        &me.faults.payment,
                        &me.calls.payment,
                        out,
                        async {
                            match &me.backend {
                                Backend::Reference(a) => a.charge(&key, &input.order).await,
                                Backend::Noop
                                    if input.order.customer_id.starts_with("declined") =>
                                {
                                    Err(AdapterError::Rejected {
                                        kind: "PaymentDeclined",
                                        message: "card declined".into(),
                                    })
                                }
                                Backend::Noop => Ok(Charge {
                                    key: key.clone(),
                                    amount_cents: input.order.total_cents(),
                                }),
                            }
                        },
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
                    me.guarded(
                        &me.payment,
                        &me.faults.payment,
                        &me.calls.payment,
                        out,
                        async {
                            match &me.backend {
                                Backend::Reference(a) => a.refund(&input.undo_key).await,
                                Backend::Noop => Ok(()),
                            }
                        },
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
                    me.guarded(
                        &me.shipping,
                        &me.faults.shipping,
                        &me.calls.shipping,
                        false,
                        async {
                            match &me.backend {
                                Backend::Reference(a) => {
                                    a.ship(&key, &input.order, &input.undo_key).await
                                }
                                Backend::Noop if input.order.shipping_address.country == "ZZ" => {
                                    Err(AdapterError::Rejected {
                                        kind: "Unshippable",
                                        message: "cannot ship to ZZ".into(),
                                    })
                                }
                                Backend::Noop => Ok(key.clone()),
                            }
                        },
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
                    me.guarded(
                        &me.notification,
                        &me.faults.notification,
                        &me.calls.notification,
                        false,
                        async {
                            if let Some(n) = &me.notifier {
                                return n.publish(&key, &input.outcome, &body).await;
                            }
                            match &me.backend {
                                Backend::Reference(a) => {
                                    a.record_notification(
                                        &key,
                                        &input.order_id,
                                        &input.outcome,
                                        &String::from_utf8_lossy(&body),
                                    )
                                    .await
                                }
                                Backend::Noop => Ok(()),
                            }
                        },
                    )
                    .await
                }
            },
        );
    }
}
