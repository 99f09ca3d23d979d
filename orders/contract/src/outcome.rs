//! How an order ended: the result of the `order` workflow, as the saga returns it and its
//! callers (the CLI, benchmarks, tests) read it back, and which terminal event says so.

use crate::events;
use serde::{Deserialize, Serialize};

/// How an order ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderOutcome {
    /// The order's id.
    pub order_id: String,
    /// `completed`, `compensated`, `failed` or `rejected`.
    pub status: String,
    /// The step that failed (`validate`, `reserve`, `payment`, `shipment`, `cancel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Money taken and kept: the order's total if it completed, else 0.
    pub charged_cents: i64,
    /// `sent` or `failed`.
    pub notification: String,
    /// Compensations that failed after all their retries (reported, never dropped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensation_failures: Vec<String>,
}

/// Where an order's saga is, as its `status` query answers ([`crate::saga::OrderStatus`]):
/// read from the running saga itself, not from the read model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaStatus {
    /// The step running now, or `done`: `validate`, `price`, `reserve`, `payment`,
    /// `shipment`, `compensate`, `resolve` (waiting for an operator's decision), `notify`.
    pub step: String,
    /// `running` until the outcome is known, then the outcome's status.
    pub status: String,
    /// The order's total once priced.
    pub total_cents: i64,
    /// Money charged so far (0 again once a refund undid it).
    pub charged_cents: i64,
    /// The step that failed, once one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// What an operator must decide while the step is `resolve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<String>,
}

impl OrderOutcome {
    /// The terminal event type this outcome is published as: `order.canceled` for an order
    /// compensated at step `cancel`, else the one named after its status; `order.completed`
    /// for `completed` and for a status it does not know.
    pub fn terminal_event(&self) -> &'static str {
        match (self.status.as_str(), self.failed_step.as_deref()) {
            ("compensated", Some("cancel")) => events::ORDER_CANCELED,
            ("compensated", _) => events::ORDER_COMPENSATED,
            ("rejected", _) => events::ORDER_REJECTED,
            ("failed", _) => events::ORDER_FAILED,
            _ => events::ORDER_COMPLETED,
        }
    }
}

impl From<&OrderOutcome> for events::OrderEnded {
    fn from(o: &OrderOutcome) -> Self {
        Self {
            cause: o.cause.clone(),
            charged_cents: o.charged_cents,
            failed_step: o.failed_step.clone(),
            notification: o.notification.clone(),
            reason: o.cause.clone(),
            status: o.status.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancellation_ends_as_order_canceled() {
        let outcome = |status: &str, step: Option<&str>| OrderOutcome {
            order_id: "o-1".into(),
            status: status.into(),
            failed_step: step.map(str::to_owned),
            cause: None,
            charged_cents: 0,
            notification: "sent".into(),
            compensation_failures: Vec::new(),
        };
        let cases = [
            ("completed", None, "order.completed"),
            ("compensated", Some("cancel"), "order.canceled"),
            ("compensated", Some("payment"), "order.compensated"),
            ("rejected", Some("validate"), "order.rejected"),
            ("failed", Some("reserve"), "order.failed"),
        ];
        for (status, step, event) in cases {
            assert_eq!(outcome(status, step).terminal_event(), event, "{status}");
        }
    }
}
