//! Workflow definitions run by Martix. The order saga first.

pub mod order;

pub use order::{OrderOutcome, order};

/// The workflow type name of the order saga.
pub const ORDER: &str = "order";
