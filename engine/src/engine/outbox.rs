//! The outbox as operators read it: its backlog and leases, and its rows in order. Domains
//! answer these over their own services; the checks of
//! the request live here, once.

use super::Engine;
use crate::error::EngineError;
use crate::store::events::{OutboxStatus, StoredEvent};

impl Engine {
    /// The outbox backlog and leases.
    pub async fn outbox_status(&self) -> Result<OutboxStatus, EngineError> {
        Ok(self.store().outbox_status(self.now()).await?)
    }

    /// Up to `page_size` outbox rows after `after_position` (0: 100; at most 1,000), of
    /// `namespace` (empty: all).
    pub async fn list_outbox_events(
        &self,
        namespace: &str,
        after_position: i64,
        page_size: i32,
    ) -> Result<Vec<StoredEvent>, EngineError> {
        let limit = match page_size {
            0 => 100,
            n if n < 0 => return Err(EngineError::invalid("page_size", "must not be negative")),
            n => (n as usize).min(1000),
        };
        if after_position < 0 {
            return Err(EngineError::invalid(
                "after_position",
                "must not be negative",
            ));
        }
        let ns = (!namespace.is_empty()).then_some(namespace);
        Ok(self.store().list_outbox(ns, after_position, limit).await?)
    }
}
