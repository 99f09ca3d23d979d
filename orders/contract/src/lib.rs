//! The order domain's contract: the types and names the order saga (`martix-workflows`),
//! its activities (`martix-activities`) and the read side (`martix-orders`) share, so that
//! none of them has to import another to agree on them.
//!
//! It holds the order and its validation ([`Order`]), its pricing ([`pricing`],
//! [`Invoice`]), what the saga passes its activities and gets back ([`names`], [`StepInput`],
//! [`Charge`], [`NotificationInput`], [`failures`]), how an order ends ([`OrderOutcome`]),
//! the events the saga publishes ([`events`]), and the names a client uses to start and
//! cancel an order ([`ORDER_WORKFLOW_TYPE`], [`CANCEL_SIGNAL`]). Everything here is plain data
//! and pure code: no I/O, no engine, and the SDK only behind feature `sdk`, so the
//! deterministic saga and the read side can link it.
//!
//! Feature `openapi` derives `utoipa::ToSchema` for the types the REST gateway describes.
//! Feature `sdk` adds [`saga`]: the steps, the workflow and the signals as typed SDK
//! definitions, for the saga and the worker that runs its activities.

pub mod events;
mod order;
mod outcome;
pub mod pricing;
pub mod reconcile;
#[cfg(feature = "sdk")]
pub mod saga;
mod steps;

pub use order::{Address, InvalidOrder, Item, Order};
pub use outcome::{OrderOutcome, SagaStatus};
pub use pricing::{Invoice, invoice};
pub use steps::{Charge, NotificationInput, StepInput, failures, names};

/// The workflow type of the order saga.
pub const ORDER_WORKFLOW_TYPE: &str = "order";

/// The signal that cancels an order like a cancel request does (inbound
/// `order.cancel_requested` messages send it).
pub const CANCEL_SIGNAL: &str = "cancel";

/// The signal carrying an operator's decision on an order that needs attention (body
/// [`Resolution`]; `martix order resolve` and `POST /v1/orders/{id}/resolve` send it).
pub const RESOLVE_SIGNAL: &str = "resolve";

/// An operator's decision on an order whose compensation failed for good.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resolution {
    /// `retry`: run the failed compensations again; `done`: they were done by hand (the
    /// order ends compensated, the reason recorded); `fail`: give up, the order ends failed.
    pub action: String,
    /// Why, recorded in the order's history.
    pub reason: String,
}

impl Resolution {
    /// The decisions an operator can take.
    pub const ACTIONS: [&'static str; 3] = ["retry", "done", "fail"];

    /// A decision, or why it is not one.
    pub fn new(action: &str, reason: &str) -> Result<Self, String> {
        if !Self::ACTIONS.contains(&action) {
            return Err(format!("action '{action}' is not one of retry, done, fail"));
        }
        if action != "retry" && reason.trim().is_empty() {
            return Err(format!("a '{action}' decision needs a reason"));
        }
        Ok(Self {
            action: action.to_owned(),
            reason: reason.to_owned(),
        })
    }
}
