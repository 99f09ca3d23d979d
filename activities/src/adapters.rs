//! The downstream systems of the order saga, behind traits: the activities see only these, so
//! a real inventory service, payment gateway, carrier, mailer, fraud service or catalogue
//! plugs in without touching the saga. Reference implementations live in `reference`; `Noop` answers
//! at once.

use crate::catalog::CatalogEntry;
use crate::reference::{AdapterError, ReferenceAdapters};
use martix_order_contract::reconcile::{ReconcileWindow, Reconciliation};
use martix_order_contract::{Charge, Order};
use std::collections::BTreeMap;

/// Stock and reservations.
#[async_trait::async_trait]
pub trait Inventory: Send + Sync {
    /// Reserves all the order's items under `key`, or none; returns the reservation key.
    async fn reserve(&self, key: &str, order: &Order) -> Result<String, AdapterError>;
    /// Gives a reservation's stock back (no-op if not held).
    async fn release(&self, reservation_key: &str) -> Result<(), AdapterError>;
}

/// Charges and refunds.
#[async_trait::async_trait]
pub trait PaymentGateway: Send + Sync {
    /// Charges the order's invoice total (`martix_order_contract::invoice`) under `key`, once.
    async fn charge(&self, key: &str, order: &Order) -> Result<Charge, AdapterError>;
    /// Refunds a charge in full, once.
    async fn refund(&self, charge_key: &str) -> Result<(), AdapterError>;
    /// Reconciles the gateway's ledger against the shipments (see
    /// `martix_order_contract::reconcile`), as of `now` (ms since the epoch).
    async fn reconcile(
        &self,
        window: &ReconcileWindow,
        now: i64,
    ) -> Result<Reconciliation, AdapterError>;
}

/// Shipments.
#[async_trait::async_trait]
pub trait Shipping: Send + Sync {
    /// Ships the reserved stock under `key`; returns the shipment key.
    async fn ship(
        &self,
        key: &str,
        order: &Order,
        reservation_key: &str,
    ) -> Result<String, AdapterError>;
}

/// What the velocity rule of the fraud checks needs.
#[async_trait::async_trait]
pub trait FraudCheck: Send + Sync {
    /// Records order `order_id` against `key` (once; the order's `velocity_key`: who placed
    /// it, else its customer) and returns how many orders of that key fall in the minute
    /// ending with it, itself included. A retried call gives the same answer.
    async fn recent_orders(&self, key: &str, order_id: &str) -> Result<i64, AdapterError>;
}

/// The shop's prices.
#[async_trait::async_trait]
pub trait Catalog: Send + Sync {
    /// The catalogue's entries of those of `skus` it lists, by SKU; a SKU it does not list is
    /// absent (its items keep the client's price).
    async fn prices(&self, skus: &[&str]) -> Result<BTreeMap<String, CatalogEntry>, AdapterError>;
}

/// Customer notifications.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    /// Delivers a notification, at most once per `key` as far as the receiver can tell.
    async fn notify(
        &self,
        key: &str,
        order_id: &str,
        outcome: &str,
        body: &[u8],
    ) -> Result<(), AdapterError>;
}

#[async_trait::async_trait]
impl Inventory for ReferenceAdapters {
    async fn reserve(&self, key: &str, order: &Order) -> Result<String, AdapterError> {
        ReferenceAdapters::reserve(self, key, order).await
    }
    async fn release(&self, reservation_key: &str) -> Result<(), AdapterError> {
        ReferenceAdapters::release(self, reservation_key).await
    }
}

#[async_trait::async_trait]
impl PaymentGateway for ReferenceAdapters {
    async fn charge(&self, key: &str, order: &Order) -> Result<Charge, AdapterError> {
        ReferenceAdapters::charge(self, key, order).await
    }
    async fn refund(&self, charge_key: &str) -> Result<(), AdapterError> {
        ReferenceAdapters::refund(self, charge_key).await
    }
    async fn reconcile(
        &self,
        window: &ReconcileWindow,
        now: i64,
    ) -> Result<Reconciliation, AdapterError> {
        ReferenceAdapters::reconcile(self, window, now).await
    }
}

#[async_trait::async_trait]
impl Shipping for ReferenceAdapters {
    async fn ship(
        &self,
        key: &str,
        order: &Order,
        reservation_key: &str,
    ) -> Result<String, AdapterError> {
        ReferenceAdapters::ship(self, key, order, reservation_key).await
    }
}

#[async_trait::async_trait]
impl FraudCheck for ReferenceAdapters {
    async fn recent_orders(&self, key: &str, order_id: &str) -> Result<i64, AdapterError> {
        ReferenceAdapters::recent_orders(self, key, order_id).await
    }
}

#[async_trait::async_trait]
impl Catalog for ReferenceAdapters {
    async fn prices(&self, skus: &[&str]) -> Result<BTreeMap<String, CatalogEntry>, AdapterError> {
        ReferenceAdapters::prices(self, skus).await
    }
}

#[async_trait::async_trait]
impl Notifier for ReferenceAdapters {
    async fn notify(
        &self,
        key: &str,
        order_id: &str,
        outcome: &str,
        body: &[u8],
    ) -> Result<(), AdapterError> {
        self.record_notification(key, order_id, outcome, &String::from_utf8_lossy(body))
            .await
    }
}

#[async_trait::async_trait]
impl Notifier for crate::notify::AmqpNotifier {
    async fn notify(
        &self,
        key: &str,
        _order_id: &str,
        outcome: &str,
        body: &[u8],
    ) -> Result<(), AdapterError> {
        self.publish(key, outcome, body).await
    }
}

/// Adapters that do nothing and answer at once, following the reference rules for declines
/// (`declined...` customers) and unshippable addresses (country `ZZ`); for benchmarks of the
/// engine alone. Its catalogue is empty: every order keeps its prices.
#[derive(Clone, Copy, Debug, Default)]
pub struct Noop;

#[async_trait::async_trait]
impl Inventory for Noop {
    async fn reserve(&self, key: &str, _order: &Order) -> Result<String, AdapterError> {
        Ok(key.to_owned())
    }
    async fn release(&self, _reservation_key: &str) -> Result<(), AdapterError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl PaymentGateway for Noop {
    async fn charge(&self, key: &str, order: &Order) -> Result<Charge, AdapterError> {
        if order.customer_id.starts_with("declined") {
            return Err(AdapterError::Rejected {
                kind: "PaymentDeclined",
                message: "card declined".into(),
            });
        }
        Ok(Charge {
            key: key.to_owned(),
            amount_cents: martix_order_contract::invoice(order).total_cents,
        })
    }
    async fn reconcile(
        &self,
        _window: &ReconcileWindow,
        _now: i64,
    ) -> Result<Reconciliation, AdapterError> {
        // The no-op gateway keeps no ledger: there is nothing to reconcile.
        Ok(Reconciliation::default())
    }
    async fn refund(&self, _charge_key: &str) -> Result<(), AdapterError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl Shipping for Noop {
    async fn ship(
        &self,
        key: &str,
        order: &Order,
        _reservation_key: &str,
    ) -> Result<String, AdapterError> {
        if order.shipping_address.country == "ZZ" {
            return Err(AdapterError::Rejected {
                kind: "Unshippable",
                message: "cannot ship to ZZ".into(),
            });
        }
        Ok(key.to_owned())
    }
}

#[async_trait::async_trait]
impl FraudCheck for Noop {
    /// Every order is the customer's first.
    async fn recent_orders(&self, _key: &str, _order_id: &str) -> Result<i64, AdapterError> {
        Ok(1)
    }
}

#[async_trait::async_trait]
impl Catalog for Noop {
    async fn prices(&self, _skus: &[&str]) -> Result<BTreeMap<String, CatalogEntry>, AdapterError> {
        Ok(BTreeMap::new())
    }
}

#[async_trait::async_trait]
impl Notifier for Noop {
    async fn notify(
        &self,
        _key: &str,
        _order_id: &str,
        _outcome: &str,
        _body: &[u8],
    ) -> Result<(), AdapterError> {
        Ok(())
    }
}
