//! The nightly reconciliation of payments against orders: what it looks at, and what it
//! finds. Every charge still held (not refunded) must be an order that shipped, once; every
//! shipped order must hold its charge.

use serde::{Deserialize, Serialize};

/// What a reconciliation looks at: the orders whose payments moved in the last `hours`, and
/// whose id starts with `prefix` (empty: every order). Payments younger than `settle_minutes`
/// are left out: their order may still be on its way to the shipment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileWindow {
    pub hours: u32,
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_settle_minutes")]
    pub settle_minutes: u32,
    /// The window's end, in ms since the epoch; 0: the workflow's time when it runs (a
    /// scheduled run's time, so a run retried or late looks at the window it was for).
    #[serde(default)]
    pub until_ms: i64,
}

fn default_settle_minutes() -> u32 {
    10
}

/// What a reconciliation found. Each list holds order ids (at most 1,000 each).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    /// Orders whose payments were looked at.
    pub orders_checked: u64,
    /// What they hold, charged and not refunded, in cents.
    pub held_cents: i64,
    /// A charge held and no shipment: money taken for goods that did not leave.
    pub charged_not_shipped: Vec<String>,
    /// A shipment and no charge held: goods that left unpaid.
    pub shipped_not_charged: Vec<String>,
    /// More than one charge held.
    pub charged_twice: Vec<String>,
    /// How many orders do not reconcile, all of them (the lists stop at 1,000 each).
    #[serde(default)]
    pub discrepancies: u64,
}

impl Reconciliation {
    /// Whether it found nothing wrong.
    pub fn is_clean(&self) -> bool {
        self.charged_not_shipped.is_empty()
            && self.shipped_not_charged.is_empty()
            && self.charged_twice.is_empty()
    }
}
