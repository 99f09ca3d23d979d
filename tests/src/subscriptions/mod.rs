//! A second domain, subscription renewals, built on the engine without the engine knowing it:
//! the proof that the engine is generic (nothing under `engine/` names subscriptions, and
//! nothing there changed for them).
//!
//! The `subscription` workflow publishes `subscription.started`, renews on a durable timer by
//! charging each renewal (`charge_renewal`), publishes `subscription.renewed` each time and
//! `subscription.ended` at the end; a charge that fails for good lapses it (published, and the
//! customer told by `notify_customer`), and signal `cancel` cancels it. The `subscriptions`
//! projection keeps a read model of those events in its own tables (its own migrations, which
//! the server applies), registered on a server by [`install`] through the same hook as the
//! order domain's.
//!
//! Modules: `model` (the contract: inputs, outcome, events), `workflow`, `activities` (an
//! in-memory biller), `view` (the pure fold), `store` (its SQL on both backends).

pub mod activities;
pub mod model;
pub mod store;
pub mod view;
pub mod workflow;

pub use activities::{Billing, ChargeLine};
pub use model::{CANCEL_SIGNAL, CancelRequest, Event, Outcome, SUBSCRIPTION, Status, Subscription};
pub use store::{FoldedEvent, Subscriptions};
pub use view::SubscriptionRow;
pub use workflow::subscription;

use martix_engine::events::{Projection, ProjectionError, ProjectionTx};
use martix_engine::martix_migrate::Owner;
use martix_engine::store::events::StoredEvent;
use std::sync::Arc;

/// The subscriptions read model as a projection of the engine's projection host.
#[derive(Debug, Default)]
pub struct SubscriptionsProjection;

#[async_trait::async_trait]
impl Projection for SubscriptionsProjection {
    fn name(&self) -> &'static str {
        "subscriptions"
    }

    fn takes(&self, event: &StoredEvent) -> bool {
        event.workflow_type == SUBSCRIPTION
    }

    fn workflow_types(&self) -> &[&'static str] {
        &[SUBSCRIPTION]
    }

    async fn fold(
        &self,
        tx: &mut ProjectionTx<'_>,
        batch: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        store::fold_batch(tx, batch).await
    }

    async fn clear(&self, tx: &mut ProjectionTx<'_>) -> Result<(), ProjectionError> {
        store::clear(tx).await
    }

    fn migrations(&self) -> Option<&'static Owner> {
        Some(&MIGRATIONS)
    }
}

/// The read model's tables (`subscriptions`, `subscription_events`), tracked as owner
/// `subscriptions`; the server applies them before it serves.
pub static MIGRATIONS: Owner = Owner {
    name: "subscriptions",
    shared_history: false,
    postgres: martix_engine::martix_migrate::embedded!("subscriptions_postgres"),
    sqlite: martix_engine::martix_migrate::embedded!("subscriptions_sqlite"),
};

/// Registers the subscription domain's read side on `server`: the `subscriptions` projection
/// in the relay, and `subscription_id` as the published events' subject name.
pub fn install(server: martix_engine::Server) -> martix_engine::Server {
    server
        .projection(Arc::new(SubscriptionsProjection))
        .subject_name(SUBSCRIPTION, "subscription_id")
}
