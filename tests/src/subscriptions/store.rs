//! The subscriptions read model's SQL on both backends: the fold inside the projection host's
//! transaction, the reads on the store's read pool, and the tables.
//!
//! Each event is recorded in `subscription_events` (its id the primary key) before it is
//! folded; an event recorded before (a batch the relay folds again after a rebuild or a crash)
//! is skipped, so a row never counts a renewal twice. The statements are the same text on
//! both backends, but PostgreSQL's row lock.

use super::view::{SubscriptionRow, fold};
use martix_engine::events::{Pools, ProjectionError, ProjectionTx};
use martix_engine::store::events::StoredEvent;
use std::collections::BTreeMap;

/// The columns of `subscriptions`, in the order of [`SubscriptionRow`].
const COLS: &str = "namespace, subscription_id, customer, plan, price_cents, status, renewals, \
     charged_cents, last_charge_id, reason, started_at, updated_at, last_event_id, last_sequence";

/// Folds `events` (subscription events, in outbox order per subscription): skips those
/// recorded before, folds the others into their rows (locked on PostgreSQL, so a relay whose
/// lease ran out mid-batch waits rather than folds onto a stale row), writes the rows back.
pub(crate) async fn fold_batch(
    tx: &mut ProjectionTx<'_>,
    events: &[&StoredEvent],
) -> Result<(), ProjectionError> {
    martix_engine::on_projection_conn!(tx, |conn, lock| {
        let select = format!(
            "SELECT {COLS} FROM subscriptions WHERE namespace = $1 AND subscription_id = $2{lock}"
        );
        let mut rows: BTreeMap<(String, String), Option<SubscriptionRow>> = BTreeMap::new();
        for e in events {
            let recorded: Option<String> = sqlx::query_scalar(
                "INSERT INTO subscription_events \
                 (event_id, namespace, subscription_id, sequence, event_type) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING \
                 RETURNING event_id",
            )
            .bind(&e.event_id)
            .bind(&e.namespace)
            .bind(&e.subject)
            .bind(e.sequence)
            .bind(&e.event_type)
            .fetch_optional(&mut **conn)
            .await?;
            if recorded.is_none() {
                continue;
            }
            let key = (e.namespace.clone(), e.subject.clone());
            if !rows.contains_key(&key) {
                let row = sqlx::query_as::<_, SubscriptionRow>(sqlx::AssertSqlSafe(select.clone()))
                    .bind(&e.namespace)
                    .bind(&e.subject)
                    .fetch_optional(&mut **conn)
                    .await?;
                rows.insert(key.clone(), row);
            }
            let slot = rows.entry(key).or_default();
            *slot = Some(fold(slot.take(), e).map_err(ProjectionError::Rejected)?);
        }
        for r in rows.values().flatten() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO subscriptions ({COLS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 ON CONFLICT (namespace, subscription_id) DO UPDATE SET \
                 customer = excluded.customer, plan = excluded.plan, \
                 price_cents = excluded.price_cents, status = excluded.status, \
                 renewals = excluded.renewals, charged_cents = excluded.charged_cents, \
                 last_charge_id = excluded.last_charge_id, reason = excluded.reason, \
                 started_at = excluded.started_at, updated_at = excluded.updated_at, \
                 last_event_id = excluded.last_event_id, last_sequence = excluded.last_sequence"
            )))
            .bind(&r.namespace)
            .bind(&r.subscription_id)
            .bind(&r.customer)
            .bind(&r.plan)
            .bind(r.price_cents)
            .bind(&r.status)
            .bind(r.renewals)
            .bind(r.charged_cents)
            .bind(&r.last_charge_id)
            .bind(&r.reason)
            .bind(r.started_at)
            .bind(r.updated_at)
            .bind(&r.last_event_id)
            .bind(r.last_sequence)
            .execute(&mut **conn)
            .await?;
        }
        Ok(())
    })
}

/// Empties the read model (a rebuild's first step).
pub(crate) async fn clear(tx: &mut ProjectionTx<'_>) -> Result<(), ProjectionError> {
    martix_engine::on_projection_conn!(tx, |conn, _lock| {
        for statement in [
            "DELETE FROM subscriptions",
            "DELETE FROM subscription_events",
        ] {
            sqlx::query(statement).execute(&mut **conn).await?;
        }
        Ok(())
    })
}

/// An event the read model folded.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct FoldedEvent {
    pub event_id: String,
    pub subscription_id: String,
    pub event_type: String,
}

/// Reads of the subscriptions read model, on the store's read pool.
#[derive(Clone, Debug)]
pub struct Subscriptions {
    pools: Pools,
}

impl Subscriptions {
    /// The read model in the store these pools reach (`engine.store().pools()`).
    pub fn new(pools: Pools) -> Self {
        Self { pools }
    }

    /// One subscription.
    pub async fn get(
        &self,
        namespace: &str,
        subscription_id: &str,
    ) -> Result<Option<SubscriptionRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLS} FROM subscriptions WHERE namespace = $1 AND subscription_id = $2"
        );
        martix_engine::on_read_pool!(&self.pools, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(namespace)
                .bind(subscription_id)
                .fetch_optional(pool)
                .await
        })
    }

    /// Every subscription, by namespace and id.
    pub async fn all(&self) -> Result<Vec<SubscriptionRow>, sqlx::Error> {
        let sql = format!("SELECT {COLS} FROM subscriptions ORDER BY namespace, subscription_id");
        martix_engine::on_read_pool!(&self.pools, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await
        })
    }

    /// Every event the read model folded, by id.
    pub async fn events(&self) -> Result<Vec<FoldedEvent>, sqlx::Error> {
        martix_engine::on_read_pool!(&self.pools, |pool| {
            sqlx::query_as(
                "SELECT event_id, subscription_id, event_type FROM subscription_events \
                 ORDER BY event_id",
            )
            .fetch_all(pool)
            .await
        })
    }
}
