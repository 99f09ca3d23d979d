//! Order activities and their downstream adapters. The saga's data, step names and pricing
//! are the order contract's (`martix-order-contract`); this crate does the I/O.
//!
//! - `adapters`: the traits the activities call (inventory, payment gateway, shipping,
//!   notifier, fraud check, catalogue) and a no-op implementation;
//! - `fraud`: the fraud rules (amount limit, orders per minute);
//! - `catalog`: the catalogue file and the check of an order's prices against it;
//! - `reference`: inventory, payment ledger, shipments, notifications, order attempts (for
//!   the velocity rule) and the catalogue in the engine's database, idempotent by key, stock
//!   never negative;
//! - `notify`: confirmations on RabbitMQ with publisher confirms;
//! - `breaker`: a `failsafe` circuit breaker per adapter, open breakers fail fast with a
//!   retry-after hint;
//! - `faults`: latency, failure-rate and outage knobs;
//! - `sample`: random orders for demos, tests and benchmarks;
//! - `activities`: the activity functions that tie them together.

pub mod activities;
pub mod adapters;
pub mod breaker;
pub mod catalog;
pub mod faults;
pub mod fraud;
pub mod notify;
pub mod reference;
pub mod sample;

pub use activities::{Backend, BreakerSettings, OrderActivities};
pub use adapters::{Catalog, FraudCheck};
pub use catalog::{CatalogEntry, CsvError, check_prices, parse_csv};
pub use faults::Faults;
pub use fraud::{FraudRules, Rejection, check_amount, check_velocity};
pub use reference::{AdapterError, ReferenceAdapters, StockTotals};
pub use sample::random_order;
