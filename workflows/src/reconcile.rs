//! The nightly reconciliation of payments against orders, workflow type `reconcile_payments`
//! (`martix_order_contract::saga::ReconcilePaymentsWorkflow`): the payment gateway's ledger
//! against the shipments, for the orders whose payments moved in the window. Meant to run on a
//! schedule:
//!
//! ```text
//! martix schedule create nightly-reconcile --cron '0 2 * * *' --timezone Europe/Paris \
//!     --type reconcile_payments --queue orders --input '{"hours": 26}'
//! ```
//!
//! A clean ledger completes the run with the figures; a discrepancy fails it
//! (`LedgerMismatch`, naming the orders), so the failed run is what an operator is alerted to.

use martix_order_contract::reconcile::{ReconcileWindow, Reconciliation};
use martix_order_contract::saga::ReconcilePayments;
use martix_sdk::{WorkflowContext, WorkflowError};

/// Orders named per kind of discrepancy in the failure.
const NAMED: usize = 10;

pub async fn reconcile_payments(
    ctx: WorkflowContext,
    mut window: ReconcileWindow,
) -> Result<Reconciliation, WorkflowError> {
    if window.until_ms == 0 {
        // The run's time (a scheduled run's), fixed in history: a retried or late activity
        // looks at the same window.
        window.until_ms = ctx
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
    }
    let found = ctx.activity(ReconcilePayments, &window).await?;
    if found.is_clean() {
        return Ok(found);
    }
    let list = |what: &str, orders: &[String]| {
        (!orders.is_empty()).then(|| {
            let more = orders.len().saturating_sub(NAMED);
            format!(
                "{} {what}: {}{}",
                orders.len(),
                orders[..orders.len().min(NAMED)].join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )
        })
    };
    let parts: Vec<String> = [
        list("charged and not shipped", &found.charged_not_shipped),
        list("shipped and not charged", &found.shipped_not_charged),
        list("charged twice", &found.charged_twice),
    ]
    .into_iter()
    .flatten()
    .collect();
    Err(WorkflowError::failed(
        "LedgerMismatch",
        format!(
            "{} of {} orders do not reconcile: {}",
            found.discrepancies,
            found.orders_checked,
            parts.join("; ")
        ),
    ))
}
