//! Order activities and their downstream adapters.
//!
//! - `adapters`: the traits the activities call (inventory, payment gateway, shipping,
//!   notifier, fraud check) and a no-op implementation;
//! - `model`: the saga's data and activity names (the contract with `martix-workflows`);
//! - `pricing`: invoices (volume and code discounts, tax by country, one rounding rule) and
//!   the fraud rules (amount limit, orders per minute);
//! - `reference`: inventory, payment ledger, shipments, notifications and order attempts
//!   (for the velocity rule) in the engine's database, idempotent by key, stock never
//!   negative;
//! - `notify`: confirmations on RabbitMQ with publisher confirms;
//! - `breaker`: a `failsafe` circuit breaker per adapter, open breakers fail fast with a
//!   retry-after hint;
//! - `faults`: latency, failure-rate and outage knobs;
//! - `activities`: the activity functions that tie them together.

pub mod activities;
pub mod adapters;
pub mod breaker;
pub mod faults;
pub mod model;
pub mod notify;
pub mod pricing;
pub mod reference;

pub use activities::{Backend, BreakerSettings, NotificationInput, OrderActivities};
pub use adapters::FraudCheck;
pub use faults::Faults;
pub use model::{Address, Charge, InvalidOrder, Item, Order, StepInput, names};
pub use pricing::{FraudRules, Invoice, Rejection, check_amount, check_velocity, invoice};
pub use reference::{AdapterError, ReferenceAdapters, StockTotals};
