//! Workflow definitions run by Martix. The order saga first; its types, names and events are
//! in `martix-order-contract`.

pub mod order;

pub use martix_order_contract::saga::OrderSaga;
pub use order::order;
