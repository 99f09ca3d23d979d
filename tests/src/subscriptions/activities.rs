//! The subscription activities over an in-memory biller: `charge_renewal` and
//! `notify_customer`.
//!
//! Activities run at least once; the biller keys each charge and notice by the activity's
//! idempotency key, so an attempt run twice charges once and returns the same charge. Tests set
//! which customers' cards are declined and read the ledger to check the read model against it.

use super::model::{CARD_DECLINED, Charge, LapseNotice, Renewal, names};
use martix_sdk::{ActivityContext, ActivityError, Worker};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// One charge the biller made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeLine {
    pub subscription_id: String,
    pub renewal: u32,
    pub charge: Charge,
}

#[derive(Debug, Default)]
struct Ledger {
    /// By idempotency key.
    charges: BTreeMap<String, ChargeLine>,
    /// By idempotency key.
    notices: BTreeMap<String, LapseNotice>,
    /// Attempts of `charge_renewal`, by (subscription, renewal).
    attempts: HashMap<(String, u32), u32>,
    /// Customers whose card is declined from this renewal on.
    declined_from: HashMap<String, u32>,
}

/// The biller behind the activities, shared by a worker's activities and the test.
#[derive(Debug, Default)]
pub struct Billing {
    ledger: Mutex<Ledger>,
}

impl Billing {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Declines `customer`'s card from renewal `renewal` on.
    pub fn decline_from(&self, customer: &str, renewal: u32) {
        self.ledger()
            .declined_from
            .insert(customer.to_owned(), renewal);
    }

    /// Registers `charge_renewal` and `notify_customer` on `worker`.
    pub fn register(self: &Arc<Self>, worker: &mut Worker) {
        let me = self.clone();
        worker.register_activity(names::CHARGE_RENEWAL, move |ctx, r: Renewal| {
            let me = me.clone();
            async move { me.charge(&ctx, r) }
        });
        let me = self.clone();
        worker.register_activity(names::NOTIFY_CUSTOMER, move |ctx, n: LapseNotice| {
            let me = me.clone();
            async move { me.notify(&ctx, n) }
        });
    }

    fn charge(&self, ctx: &ActivityContext, r: Renewal) -> Result<Charge, ActivityError> {
        let mut ledger = self.ledger();
        *ledger
            .attempts
            .entry((r.subscription_id.clone(), r.renewal))
            .or_default() += 1;
        let key = ctx.idempotency_key();
        if let Some(line) = ledger.charges.get(&key) {
            return Ok(line.charge.clone());
        }
        if ledger
            .declined_from
            .get(&r.customer)
            .is_some_and(|from| r.renewal >= *from)
        {
            return Err(ActivityError::non_retryable(
                CARD_DECLINED,
                format!("the card of {} was declined", r.customer),
            ));
        }
        let charge = Charge {
            charge_id: format!("ch-{}", uuid::Uuid::new_v4().simple()),
            amount_cents: r.amount_cents,
        };
        ledger.charges.insert(
            key,
            ChargeLine {
                subscription_id: r.subscription_id,
                renewal: r.renewal,
                charge: charge.clone(),
            },
        );
        Ok(charge)
    }

    fn notify(&self, ctx: &ActivityContext, n: LapseNotice) -> Result<(), ActivityError> {
        self.ledger().notices.insert(ctx.idempotency_key(), n);
        Ok(())
    }

    /// The charges of `subscription_id`, by renewal.
    pub fn charges(&self, subscription_id: &str) -> Vec<ChargeLine> {
        let mut lines: Vec<ChargeLine> = self
            .ledger()
            .charges
            .values()
            .filter(|l| l.subscription_id == subscription_id)
            .cloned()
            .collect();
        lines.sort_by_key(|l| l.renewal);
        lines
    }

    /// How many times renewal `renewal` of `subscription_id` was attempted.
    pub fn attempts(&self, subscription_id: &str, renewal: u32) -> u32 {
        self.ledger()
            .attempts
            .get(&(subscription_id.to_owned(), renewal))
            .copied()
            .unwrap_or(0)
    }

    /// The lapse notices sent.
    pub fn notices(&self) -> Vec<LapseNotice> {
        self.ledger().notices.values().cloned().collect()
    }
}
