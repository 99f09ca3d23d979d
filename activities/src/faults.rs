//! Fault knobs for demos, benchmarks and crash tests: injected latency and failure rate per
//! adapter, and a payment-gateway outage that can be switched while the worker runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// One adapter's knobs.
#[derive(Clone, Debug, Default)]
pub struct Knob {
    /// Added to every call.
    pub latency: Duration,
    /// Share of calls, 0.0 to 1.0, that fail with a retryable error.
    pub failure_rate: f64,
}

/// The knobs of all adapters.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub inventory: Knob,
    pub payment: Knob,
    pub shipping: Knob,
    pub notification: Knob,
    /// The fraud check's velocity count (`price_order`).
    pub fraud: Knob,
    /// The catalogue's price lookup (`price_order`).
    pub catalog: Knob,
    /// While set, every payment call fails with a retryable `GatewayUnavailable`.
    pub payment_outage: Arc<AtomicBool>,
    /// While this file exists, the payment gateway is out too (flip it from a shell).
    pub payment_outage_file: Option<PathBuf>,
    /// While set, the payment gateway refuses every refund for good (`RefundRefused`): the
    /// compensation that fails non-retryably, which makes an order need attention.
    pub refunds_refused: Arc<AtomicBool>,
}

fn knob(prefix: &str) -> Knob {
    let get = |k: &str| std::env::var(format!("MARTIX_FAULT_{prefix}_{k}")).ok();
    Knob {
        latency: get("LATENCY_MS")
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or_default(),
        failure_rate: get("FAILURE_RATE")
            .and_then(|v| v.parse::<f64>().ok())
            .map(|r| r.clamp(0.0, 1.0))
            .unwrap_or(0.0),
    }
}

impl Faults {
    /// Knobs from
    /// `MARTIX_FAULT_{INVENTORY,PAYMENT,SHIPPING,NOTIFICATION,FRAUD,CATALOG}_{LATENCY_MS,FAILURE_RATE}`,
    /// `MARTIX_PAYMENT_OUTAGE=1`, `MARTIX_PAYMENT_OUTAGE_FILE` and `MARTIX_REFUNDS_REFUSED=1`.
    pub fn from_env() -> Self {
        Self {
            inventory: knob("INVENTORY"),
            payment: knob("PAYMENT"),
            shipping: knob("SHIPPING"),
            notification: knob("NOTIFICATION"),
            fraud: knob("FRAUD"),
            catalog: knob("CATALOG"),
            payment_outage: Arc::new(AtomicBool::new(
                std::env::var("MARTIX_PAYMENT_OUTAGE").is_ok_and(|v| v == "1" || v == "true"),
            )),
            payment_outage_file: std::env::var_os("MARTIX_PAYMENT_OUTAGE_FILE").map(PathBuf::from),
            refunds_refused: Arc::new(AtomicBool::new(
                std::env::var("MARTIX_REFUNDS_REFUSED").is_ok_and(|v| v == "1" || v == "true"),
            )),
        }
    }

    /// Whether the payment gateway is out now.
    pub fn payment_out(&self) -> bool {
        self.payment_outage.load(Ordering::Relaxed)
            || self
                .payment_outage_file
                .as_ref()
                .is_some_and(|p| p.exists())
    }

    /// Applies a knob: waits its latency, then maybe fails.
    pub(crate) async fn apply(knob: &Knob) -> Result<(), String> {
        if !knob.latency.is_zero() {
            tokio::time::sleep(knob.latency).await;
        }
        if knob.failure_rate > 0.0 && rand::random::<f64>() < knob.failure_rate {
            return Err("injected failure".into());
        }
        Ok(())
    }
}
