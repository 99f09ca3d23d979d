//! Workflow definitions run by Martix. The order saga first; its types, names and events are
//! in `martix-order-contract`.

pub mod order;
pub mod reconcile;

pub use martix_order_contract::saga::{OrderSaga, ReconcilePaymentsWorkflow};
pub use order::order;
pub use reconcile::reconcile_payments;

/// A replayer with every workflow of this crate registered as its current code: what
/// `martix replay` and the corpus test (`tests/replay_corpus.rs`) check histories against.
pub fn replayer() -> martix_sdk::Replayer {
    let mut r = martix_sdk::Replayer::new();
    r.workflow(OrderSaga, order);
    r.workflow(ReconcilePaymentsWorkflow, reconcile_payments);
    r
}
