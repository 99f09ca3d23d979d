//! The Martix engine: keeps each run's history and checkpoint in a store (PostgreSQL, or
//! SQLite for `martix dev`), hands workflow and activity tasks to long-polling workers, fires
//! durable timers, and serves the `martix.v1` gRPC services and an HTTP port for health.
//!
//! Modules by responsibility: `store` (the transactions), `history` (pure state machine),
//! `matching` (long-poll hand-off), `timers`, `edge` (auth,
//! limits, TLS), `api` (gRPC), `http`, `server` (wiring).

pub mod api;
pub mod clock;
pub mod edge;
pub mod engine;
pub mod error;
pub mod events;
pub mod history;
pub mod http;
pub mod ids;
pub mod matching;
pub mod metrics;
pub mod reflection;
pub mod schedules;
pub mod server;
pub mod store;
pub mod timers;
pub mod visibility;

pub use engine::{Engine, EngineConfig, MAX_HISTORY_BYTES};
pub use error::EngineError;
pub use martix_migrate;
pub use server::{Server, ServerConfig};
