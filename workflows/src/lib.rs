//! Workflow definitions run by Martix. The order saga first; its types, names and events are
//! in `martix-order-contract`.

pub mod order;

pub use order::order;
