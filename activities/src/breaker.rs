//! Circuit breakers (`failsafe`) in front of every downstream adapter. An open breaker fails
//! the attempt at once with a retryable `CircuitOpen` error that carries a retry-after hint;
//! the engine uses the hint as the next retry delay. State changes are logged and kept in a
//! registry for operators and metrics.

use failsafe::futures::CircuitBreaker as _;
use failsafe::{Config, Instrument, StateMachine, backoff, failure_policy};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use martix_sdk::{BreakerHold, BreakerState};

/// The states of all breakers of this process, by adapter name, and a signal of their changes
/// (the worker reports them to the engine, for operators).
#[derive(Clone, Default)]
pub struct BreakerRegistry {
    states: Arc<Mutex<BTreeMap<&'static str, (BreakerState, u64)>>>,
    changed: Arc<tokio::sync::Notify>,
    /// The operators' holds the engine last answered with, by breaker name.
    holds: Arc<Mutex<BTreeMap<String, BreakerHold>>>,
}

impl BreakerRegistry {
    /// Each breaker's state and how many calls it rejected.
    pub fn snapshot(&self) -> BTreeMap<&'static str, (BreakerState, u64)> {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until a breaker changes state (a change since the last wait counts).
    ///
    /// # Cancel safety
    /// Cancel safe: a change while nobody waits is kept for the next wait.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Reports the breakers' states to the engine with `reporter` when one changes (and every
    /// 5 seconds, so an engine that lost them learns them again and an operator's hold in the
    /// answer applies soon) until `stop` completes; a report that fails is sent again a second
    /// later. The engine parks the tasks a breaker refused and releases them once the latest
    /// report says closed.
    pub async fn report_to(
        self,
        reporter: martix_sdk::BreakerReporter,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        loop {
            let states: Vec<(String, BreakerState)> = self
                .snapshot()
                .into_iter()
                .map(|(adapter, (state, _))| (adapter.to_owned(), state))
                .collect();
            let wait = if states.is_empty() {
                REPORT_EVERY
            } else {
                match reporter.report(&states).await {
                    Ok(holds) => {
                        self.set_holds(holds);
                        REPORT_EVERY
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "breaker report not delivered; sending again");
                        Duration::from_secs(1)
                    }
                }
            };
            tokio::select! {
                () = &mut stop => return,
                () = self.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The operator's hold on breaker `name`, if any.
    pub fn hold(&self, name: &str) -> Option<BreakerHold> {
        self.holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    /// Applies the holds the engine answered with (those not named are lifted).
    fn set_holds(&self, holds: Vec<(String, BreakerHold)>) {
        let holds: BTreeMap<String, BreakerHold> = holds.into_iter().collect();
        let mut held = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        if *held != holds {
            tracing::info!(?holds, "breaker holds changed");
            *held = holds;
        }
    }

    fn set(&self, name: &'static str, f: impl FnOnce(&mut (BreakerState, u64))) {
        let mut m = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let entry = m.entry(name).or_insert((BreakerState::Closed, 0));
        let before = entry.0;
        f(entry);
        let after = entry.0;
        drop(m);
        if before != after {
            self.changed.notify_one();
        }
    }
}

/// How often a worker reports its breakers when nothing changes.
const REPORT_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Observer {
    name: &'static str,
    registry: BreakerRegistry,
}

impl Instrument for Observer {
    fn on_call_rejected(&self) {
        self.registry.set(self.name, |s| s.1 += 1);
    }

    fn on_open(&self) {
        tracing::warn!(adapter = self.name, "circuit breaker opened");
        self.registry.set(self.name, |s| s.0 = BreakerState::Open);
    }

    fn on_half_open(&self) {
        tracing::info!(adapter = self.name, "circuit breaker half-open");
        self.registry
            .set(self.name, |s| s.0 = BreakerState::HalfOpen);
    }

    fn on_closed(&self) {
        self.registry.set(self.name, |s| {
            if s.0 != BreakerState::Closed {
                tracing::info!(adapter = self.name, "circuit breaker closed");
            }
            s.0 = BreakerState::Closed;
        });
    }
}

type Machine = StateMachine<failure_policy::ConsecutiveFailures<backoff::Constant>, Observer>;

/// One adapter's breaker.
#[derive(Clone)]
pub struct Breaker {
    name: &'static str,
    machine: Machine,
    open_for: Duration,
    registry: BreakerRegistry,
}

/// The outcome of a call through a breaker.
#[derive(Debug)]
pub enum Guarded<E> {
    /// The call ran and failed.
    Failed(E),
    /// The breaker is open: the call did not run. Try again after the hint.
    Open { retry_after: Duration },
}

impl Breaker {
    /// Opens after `failures` consecutive failures, for `open_for`, then lets a trial call
    /// through (half-open).
    pub fn new(
        name: &'static str,
        failures: u32,
        open_for: Duration,
        registry: &BreakerRegistry,
    ) -> Self {
        registry.set(name, |_| {});
        let machine = Config::new()
            .failure_policy(failure_policy::consecutive_failures(
                failures,
                backoff::constant(open_for),
            ))
            .instrument(Observer {
                name,
                registry: registry.clone(),
            })
            .build();
        Self {
            name,
            machine,
            open_for,
            registry: registry.clone(),
        }
    }

    /// The adapter this breaker guards.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs `call` through the breaker. Only `is_failure` errors count against it (a declined
    /// card is an answer, not an outage). An operator's hold comes first: held open, nothing
    /// is called; held closed, the call runs whatever the breaker's state.
    pub async fn call<T, E, F>(
        &self,
        is_failure: impl Fn(&E) -> bool,
        call: F,
    ) -> Result<T, Guarded<E>>
    where
        F: std::future::Future<Output = Result<T, E>>,
    {
        match self.registry.hold(self.name) {
            Some(BreakerHold::Open) => {
                self.registry.set(self.name, |s| s.1 += 1);
                return Err(Guarded::Open {
                    retry_after: self.open_for,
                });
            }
            Some(BreakerHold::Closed) => return call.await.map_err(Guarded::Failed),
            None => {}
        }
        match self.machine.call_with(is_failure, call).await {
            Ok(v) => Ok(v),
            Err(failsafe::Error::Inner(e)) => Err(Guarded::Failed(e)),
            Err(failsafe::Error::Rejected) => Err(Guarded::Open {
                retry_after: self.open_for,
            }),
        }
    }
}
