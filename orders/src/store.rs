//! The orders read model's SQL: the `orders` rows and the `order_events` list, folded inside
//! the projection host's transaction and read for the order service and the REST gateway.
//!
//! One body of code for both backends: the statements are the same text on PostgreSQL and
//! SQLite (but the row lock, which SQLite's one writer does not need), and [`martix_engine::on_projection_conn!`]
//! compiles each body once per backend's connection type.

use crate::view::{OrderQuery, OrderView, fold};
use martix_engine::events::{Pools, ProjectionError, ProjectionTx};
use martix_engine::store::events::{StoredEvent, shard_of};
use sqlx::Row;
use std::collections::{BTreeMap, HashSet};

/// The order columns, in the order `order_from_row` reads them.
const ORDER_COLS: &str = "namespace, order_id, customer_id, status, step, currency, items, \
     subtotal_cents, discount_cents, tax_cents, total_cents, charged_cents, refunded_cents, \
     shipment, last_error, created_at, updated_at, last_sequence";

fn order_from_row<R: Row>(r: &R) -> Result<OrderView, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(OrderView {
        namespace: r.try_get(0)?,
        order_id: r.try_get(1)?,
        customer_id: r.try_get(2)?,
        status: r.try_get(3)?,
        step: r.try_get(4)?,
        currency: r.try_get(5)?,
        items: r.try_get(6)?,
        subtotal_cents: r.try_get(7)?,
        discount_cents: r.try_get(8)?,
        tax_cents: r.try_get(9)?,
        total_cents: r.try_get(10)?,
        charged_cents: r.try_get(11)?,
        refunded_cents: r.try_get(12)?,
        shipment: r.try_get(13)?,
        last_error: r.try_get(14)?,
        created_at: r.try_get(15)?,
        updated_at: r.try_get(16)?,
        last_sequence: r.try_get(17)?,
    })
}

/// The event columns, in the order `event_from_row` reads them.
const EVENT_COLS: &str = "event_id, namespace, order_id, sequence, event_type, occurred_at, body";

/// An `order_events` row whose [`EVENT_COLS`] start at column `at`.
fn event_from_row<R: Row>(r: &R, at: usize) -> Result<StoredEvent, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let event_id: String = r.try_get(at)?;
    let namespace: String = r.try_get(at + 1)?;
    let subject: String = r.try_get(at + 2)?;
    Ok(StoredEvent {
        position: 0,
        xact: 0,
        shard: shard_of(&namespace, &subject),
        run_id: event_id.split('/').next().unwrap_or_default().to_owned(),
        event_id,
        namespace,
        subject,
        workflow_type: martix_order_contract::ORDER_WORKFLOW_TYPE.into(),
        sequence: r.try_get(at + 3)?,
        event_type: r.try_get(at + 4)?,
        occurred_at: r.try_get(at + 5)?,
        body: r.try_get(at + 6)?,
        sent: false,
    })
}

/// Folds `events` (order events, in outbox order per order) into the read model: records each
/// in `order_events`, skips those recorded before, and folds the new ones into their orders'
/// rows, locked (PostgreSQL) so a relay whose lease ran out mid-batch waits instead of folding
/// onto a stale row.
pub(crate) async fn fold_batch(
    tx: &mut ProjectionTx<'_>,
    events: &[&StoredEvent],
) -> Result<(), ProjectionError> {
    martix_engine::on_projection_conn!(tx, |conn, lock| {
        let mut new_ids = HashSet::new();
        for chunk in events.chunks(200) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO order_events (event_id, namespace, order_id, sequence, \
                 event_type, occurred_at, body) ",
            );
            qb.push_values(chunk, |mut b, e| {
                b.push_bind(e.event_id.clone())
                    .push_bind(e.namespace.clone())
                    .push_bind(e.subject.clone())
                    .push_bind(e.sequence)
                    .push_bind(e.event_type.clone())
                    .push_bind(e.occurred_at)
                    .push_bind(e.body.clone());
            });
            qb.push(" ON CONFLICT (event_id) DO NOTHING RETURNING event_id");
            for id in qb
                .build_query_scalar::<String>()
                .fetch_all(&mut **conn)
                .await?
            {
                new_ids.insert(id);
            }
        }
        let fresh: Vec<&StoredEvent> = events
            .iter()
            .copied()
            .filter(|e| new_ids.contains(&e.event_id))
            .collect();
        let mut views: BTreeMap<(String, String), Option<OrderView>> = BTreeMap::new();
        for e in &fresh {
            views.insert((e.namespace.clone(), e.subject.clone()), None);
        }
        let keys: Vec<(String, String)> = views.keys().cloned().collect();
        for chunk in keys.chunks(200) {
            // A list of rows to look up (VALUES), which joins on the primary key; a list of
            // ORs made PostgreSQL scan every order of the namespace.
            let mut qb = sqlx::QueryBuilder::new(format!(
                "SELECT {ORDER_COLS} FROM orders WHERE (namespace, order_id) IN (VALUES "
            ));
            let mut sep = qb.separated(", ");
            for (ns, id) in chunk {
                sep.push("(")
                    .push_bind_unseparated(ns.clone())
                    .push_unseparated(", ")
                    .push_bind_unseparated(id.clone())
                    .push_unseparated(")");
            }
            qb.push(")").push(lock);
            for row in qb.build().fetch_all(&mut **conn).await? {
                let view = order_from_row(&row)?;
                views.insert((view.namespace.clone(), view.order_id.clone()), Some(view));
            }
        }
        for e in &fresh {
            let slot = views
                .get_mut(&(e.namespace.clone(), e.subject.clone()))
                .expect("every touched order has a slot");
            *slot = Some(fold(slot.take(), e));
        }
        let folded: Vec<&OrderView> = views.values().flatten().collect();
        for chunk in folded.chunks(100) {
            let mut qb = sqlx::QueryBuilder::new(format!("INSERT INTO orders ({ORDER_COLS}) "));
            qb.push_values(chunk, |mut b, o| {
                b.push_bind(o.namespace.clone())
                    .push_bind(o.order_id.clone())
                    .push_bind(o.customer_id.clone())
                    .push_bind(o.status.clone())
                    .push_bind(o.step.clone())
                    .push_bind(o.currency.clone())
                    .push_bind(o.items.clone())
                    .push_bind(o.subtotal_cents)
                    .push_bind(o.discount_cents)
                    .push_bind(o.tax_cents)
                    .push_bind(o.total_cents)
                    .push_bind(o.charged_cents)
                    .push_bind(o.refunded_cents)
                    .push_bind(o.shipment.clone())
                    .push_bind(o.last_error.clone())
                    .push_bind(o.created_at)
                    .push_bind(o.updated_at)
                    .push_bind(o.last_sequence);
            });
            qb.push(
                " ON CONFLICT (namespace, order_id) DO UPDATE SET \
                 customer_id = excluded.customer_id, status = excluded.status, \
                 step = excluded.step, currency = excluded.currency, items = excluded.items, \
                 subtotal_cents = excluded.subtotal_cents, \
                 discount_cents = excluded.discount_cents, tax_cents = excluded.tax_cents, \
                 total_cents = excluded.total_cents, charged_cents = excluded.charged_cents, \
                 refunded_cents = excluded.refunded_cents, shipment = excluded.shipment, \
                 last_error = excluded.last_error, created_at = excluded.created_at, \
                 updated_at = excluded.updated_at, last_sequence = excluded.last_sequence",
            );
            qb.build().execute(&mut **conn).await?;
        }
        Ok(())
    })
}

/// Empties the read model (a rebuild's first step).
pub(crate) async fn clear(tx: &mut ProjectionTx<'_>) -> Result<(), ProjectionError> {
    martix_engine::on_projection_conn!(tx, |conn, _lock| {
        for statement in ["DELETE FROM orders", "DELETE FROM order_events"] {
            sqlx::query(statement).execute(&mut **conn).await?;
        }
        Ok(())
    })
}

/// Reads of the read model, on the store's read pool.
#[derive(Clone, Debug)]
pub struct ReadModel {
    pools: Pools,
}

impl ReadModel {
    /// The read model in the store these pools reach.
    pub fn new(pools: Pools) -> Self {
        Self { pools }
    }

    /// One order with its events, read in one statement so that both come from one snapshot:
    /// the projection folds an event and records it in one transaction, and two reads could
    /// land on either side of its commit (a view one step behind its own event list).
    pub async fn order_with_events(
        &self,
        namespace: &str,
        order_id: &str,
    ) -> Result<Option<(OrderView, Vec<StoredEvent>)>, sqlx::Error> {
        let order_cols = ORDER_COLS.split(',').count();
        let events = EVENT_COLS
            .split(", ")
            .map(|c| format!("e.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT o.*, {events} FROM \
             (SELECT {ORDER_COLS} FROM orders WHERE namespace = $1 AND order_id = $2) o \
             LEFT JOIN order_events e ON e.namespace = o.namespace AND e.order_id = o.order_id \
             ORDER BY e.sequence, e.occurred_at"
        );
        martix_engine::on_read_pool!(&self.pools, |pool| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(namespace)
                .bind(order_id)
                .fetch_all(pool)
                .await?;
            let Some(first) = rows.first() else {
                return Ok(None);
            };
            let order = order_from_row(first)?;
            let mut events = Vec::with_capacity(rows.len());
            for r in &rows {
                // No event row (the LEFT JOIN's NULLs): an order whose events were purged.
                if r.try_get::<Option<String>, _>(order_cols)?.is_some() {
                    events.push(event_from_row(r, order_cols)?);
                }
            }
            Ok(Some((order, events)))
        })
    }

    /// A page of orders, newest first.
    pub async fn list_orders(&self, q: &OrderQuery) -> Result<Vec<OrderView>, sqlx::Error> {
        martix_engine::on_read_pool!(&self.pools, |pool| {
            let mut qb = sqlx::QueryBuilder::new(format!(
                "SELECT {ORDER_COLS} FROM orders WHERE namespace = "
            ));
            qb.push_bind(q.namespace.clone());
            if let Some(c) = &q.customer_id {
                qb.push(" AND customer_id = ").push_bind(c.clone());
            }
            if let Some(s) = &q.status {
                qb.push(" AND status = ").push_bind(s.clone());
            }
            if let Some(t) = q.created_after {
                qb.push(" AND created_at >= ").push_bind(t);
            }
            if let Some(t) = q.created_before {
                qb.push(" AND created_at < ").push_bind(t);
            }
            if let Some((t, id)) = &q.after {
                qb.push(" AND (created_at < ")
                    .push_bind(*t)
                    .push(" OR (created_at = ")
                    .push_bind(*t)
                    .push(" AND order_id < ")
                    .push_bind(id.clone())
                    .push("))");
            }
            qb.push(" ORDER BY created_at DESC, order_id DESC LIMIT ")
                .push_bind(q.limit as i64);
            qb.build()
                .fetch_all(pool)
                .await?
                .iter()
                .map(order_from_row)
                .collect()
        })
    }

    /// The events of one order as the read model holds them, by sequence.
    pub async fn order_events(
        &self,
        namespace: &str,
        order_id: &str,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        martix_engine::on_read_pool!(&self.pools, |pool| {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLS} FROM order_events WHERE namespace = $1 AND order_id = $2 \
                 ORDER BY sequence, occurred_at"
            )))
            .bind(namespace)
            .bind(order_id)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| event_from_row(r, 0))
            .collect()
        })
    }

    /// How many orders of `namespace` hold each of `statuses` (known status names: they are
    /// written into the statement), each counted up to `cap` (one index range read per status,
    /// so the work is bounded however many orders there are).
    pub async fn count_by_status(
        &self,
        namespace: &str,
        statuses: &[&'static str],
        cap: i64,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let sql = statuses
            .iter()
            .map(|s| {
                format!(
                    "SELECT '{s}', COUNT(*) FROM (SELECT 1 FROM orders \
                     WHERE namespace = $1 AND status = '{s}' LIMIT $2) AS x"
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        martix_engine::on_read_pool!(&self.pools, |pool| {
            sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql))
                .bind(namespace)
                .bind(cap)
                .fetch_all(pool)
                .await
        })
    }

    /// How many orders it holds.
    pub async fn count(&self) -> Result<usize, sqlx::Error> {
        martix_engine::on_read_pool!(&self.pools, |pool| {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
                .fetch_one(pool)
                .await?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    /// Every order (for comparisons after a rebuild), by namespace and id.
    pub async fn all_orders(&self) -> Result<Vec<OrderView>, sqlx::Error> {
        let sql = format!("SELECT {ORDER_COLS} FROM orders ORDER BY namespace, order_id");
        martix_engine::on_read_pool!(&self.pools, |pool| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await?
                .iter()
                .map(order_from_row)
                .collect()
        })
    }
}
