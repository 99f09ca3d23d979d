//! An outbox event as the store keeps it: the row the relay sends and the projection host
//! hands to projections.

use crate::clock::Millis;

/// An event as stored: in the outbox (with its place and delivery state) or in the read
/// model's event list (position 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub position: i64,
    /// The id of the transaction that wrote the outbox row (PostgreSQL; 0 on SQLite, where
    /// positions follow commit order): the relay's cursors move in `(xact, position)` order.
    pub xact: i64,
    /// `shard_of(namespace, subject)`.
    pub shard: i32,
    pub event_id: String,
    pub namespace: String,
    /// The workflow id that published it (the business key).
    pub subject: String,
    pub workflow_type: String,
    pub run_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub occurred_at: Millis,
    /// A JSON object.
    pub body: String,
    /// The broker confirmed it (its shard's sent cursor is at or past it).
    pub sent: bool,
}
