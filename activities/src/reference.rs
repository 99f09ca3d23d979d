//! Reference adapters in the engine's database (PostgreSQL, or SQLite in dev), through
//! `sqlx::Any` so one SQL text serves both. Stock never goes negative (a CHECK and a guarded
//! UPDATE), and every effect is keyed by an idempotency key, so a retried step applies once.

use crate::catalog::CatalogEntry;
use martix_order_contract::reconcile::{ReconcileWindow, Reconciliation};
use martix_order_contract::{Charge, Order, pricing};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use std::collections::BTreeMap;

/// How long the fraud velocity rule keeps an order attempt: a day, far past its minute, so a
/// `price_order` retried within it gets the same answer.
pub const ATTEMPTS_KEPT_MS: i64 = 24 * 3600 * 1000;
/// What an adapter call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdapterError {
    /// A business answer that no retry changes (declined card, out of stock, unshippable).
    #[error("{kind}: {message}")]
    Rejected { kind: &'static str, message: String },
    /// The downstream system failed; retrying may help.
    #[error("{0}")]
    Unavailable(String),
}

impl AdapterError {
    fn db(e: sqlx::Error) -> Self {
        Self::Unavailable(format!("database: {e}"))
    }

    /// Whether this error counts against a circuit breaker.
    pub fn is_outage(&self) -> bool {
        matches!(self, AdapterError::Unavailable(_))
    }
}

/// The reference adapters' tables (inventory, reservations, payments, shipments,
/// notifications, pricing's order attempts, the catalogue), tracked as owner `adapters`.
pub static MIGRATIONS: martix_migrate::Owner = martix_migrate::Owner {
    name: "adapters",
    shared_history: true,
    postgres: martix_migrate::embedded!("adapters_postgres"),
    sqlite: martix_migrate::embedded!("adapters_sqlite"),
};

/// A key that was used for another effect, or for one since undone: a bug in the caller (a
/// key not unique per effect), refused rather than answered as success.
fn key_reused(key: &str, recorded: &str) -> AdapterError {
    AdapterError::Rejected {
        kind: "IdempotencyKeyReused",
        message: format!("idempotency key {key} was used for {recorded}"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The reference inventory, payment gateway, shipper and notification table.
#[derive(Clone)]
pub struct ReferenceAdapters {
    pool: AnyPool,
    sqlite: bool,
}

/// Stock totals over all SKUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StockTotals {
    pub initial: i64,
    pub available: i64,
    pub reserved: i64,
    pub shipped: i64,
}

impl ReferenceAdapters {
    /// Connects to the database `url` names and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, AdapterError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            // SQLite has one writer: queue here rather than fail with SQLITE_BUSY.
            .max_connections(if sqlite { 1 } else { 8 })
            .connect(url)
            .await
            .map_err(AdapterError::db)?;
        if sqlite {
            sqlx::query("PRAGMA busy_timeout = 10000")
                .execute(&pool)
                .await
                .map_err(AdapterError::db)?;
        }
        let mut conn = pool.acquire().await.map_err(AdapterError::db)?;
        if !sqlite {
            // Closed after, whatever happens: a session that may hold the migrations' lock
            // never goes back to the pool (an error midway, or this future dropped). SQLite
            // takes no lock, and its one connection carries the busy timeout set above.
            conn.close_on_drop();
        }
        let applied = martix_migrate::apply_any(&mut conn, &MIGRATIONS).await;
        applied.map_err(|e| AdapterError::Unavailable(format!("migrations: {e}")))?;
        drop(conn);
        Ok(Self { pool, sqlite })
    }

    /// Begins a transaction that writes: on SQLite with the write lock taken at once, so that it
    /// waits out the engine's writes (busy timeout) rather than fail `database is locked` when
    /// its first read turns into a write.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, AdapterError> {
        let tx = if self.sqlite {
            self.pool.begin_with("BEGIN IMMEDIATE").await
        } else {
            self.pool.begin().await
        };
        tx.map_err(AdapterError::db)
    }

    /// Sets the stock of `sku` to `qty` available (and `qty` as its initial stock).
    pub async fn seed_stock(&self, sku: &str, qty: i64) -> Result<(), AdapterError> {
        sqlx::query(
            "INSERT INTO inventory (sku, initial, available, reserved, shipped) \
             VALUES ($1, $2, $2, 0, 0) ON CONFLICT (sku) DO UPDATE SET \
             initial = inventory.initial + $2, available = inventory.available + $2",
        )
        .bind(sku)
        .bind(qty)
        .execute(&self.pool)
        .await
        .map_err(AdapterError::db)?;
        Ok(())
    }

    /// Sets how many units of `sku` are available to new orders (0 to 1,000,000,000): what a
    /// stock count says; reserved and shipped units stay as they are.
    pub async fn set_stock(&self, sku: &str, available: i64) -> Result<(), AdapterError> {
        if !(0..=1_000_000_000).contains(&available) {
            return Err(AdapterError::Rejected {
                kind: "InvalidStock",
                message: format!("{available} units: stock must be 0 to 1,000,000,000"),
            });
        }
        sqlx::query(
            "INSERT INTO inventory (sku, initial, available, reserved, shipped) \
             VALUES ($1, $2, $2, 0, 0) ON CONFLICT (sku) DO UPDATE SET \
             initial = inventory.initial + ($2 - inventory.available), available = $2",
        )
        .bind(sku)
        .bind(available)
        .execute(&self.pool)
        .await
        .map_err(AdapterError::db)?;
        Ok(())
    }

    /// The stock of the SKUs starting with `prefix`, by SKU (at most 1,000): available,
    /// reserved and shipped units.
    pub async fn stock_levels(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, i64, i64, i64)>, AdapterError> {
        sqlx::query_as(
            "SELECT sku, available, reserved, shipped FROM inventory \
             WHERE substr(sku, 1, length($1)) = $1 ORDER BY sku LIMIT 1000",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(AdapterError::db)
    }

    /// Reserves the order's stock under `key`; all items or none.
    pub async fn reserve(&self, key: &str, order: &Order) -> Result<String, AdapterError> {
        let mut per_sku: BTreeMap<&str, i64> = BTreeMap::new();
        for item in &order.items {
            *per_sku.entry(item.sku.as_str()).or_default() += item.qty;
        }
        let items = serde_json::to_string(&per_sku).expect("a map of numbers serializes");
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO reservations (reservation_key, order_id, items, status, created_at) \
             VALUES ($1, $2, $3, 'reserved', $4) ON CONFLICT (reservation_key) DO NOTHING",
        )
        .bind(key)
        .bind(&order.order_id)
        .bind(&items)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(AdapterError::db)?
        .rows_affected();
        if inserted == 0 {
            // A retry of a reservation that was made: the same answer, if it is the same
            // reservation and it is still what it was.
            let (order_id, recorded, status): (String, String, String) = sqlx::query_as(
                "SELECT order_id, items, status FROM reservations WHERE reservation_key = $1",
            )
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(AdapterError::db)?;
            if order_id != order.order_id || recorded != items {
                return Err(key_reused(
                    key,
                    &format!("order {order_id} items {recorded}"),
                ));
            }
            if status == "released" {
                return Err(key_reused(key, "a reservation that was released"));
            }
            return Ok(key.to_owned());
        }
        for (sku, qty) in &per_sku {
            let done = sqlx::query(
                "UPDATE inventory SET available = available - $1, reserved = reserved + $1 \
                 WHERE sku = $2 AND available >= $1",
            )
            .bind(*qty)
            .bind(*sku)
            .execute(&mut *tx)
            .await
            .map_err(AdapterError::db)?
            .rows_affected();
            if done == 0 {
                return Err(AdapterError::Rejected {
                    kind: "OutOfStock",
                    message: format!("not enough stock of {sku} for {qty}"),
                });
            }
        }
        tx.commit().await.map_err(AdapterError::db)?;
        Ok(key.to_owned())
    }

    /// Moves a held reservation to `to_status`, applying `set` (with `$1` = quantity) to
    /// each of its SKUs. `false` if the reservation is not held.
    async fn move_reserved(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        reservation_key: &str,
        to_status: &str,
        set: &str,
    ) -> Result<bool, AdapterError> {
        let row: Option<(String,)> = sqlx::query_as(
            "UPDATE reservations SET status = $1 WHERE reservation_key = $2 AND status = 'reserved' \
             RETURNING items",
        )
        .bind(to_status)
        .bind(reservation_key)
        .fetch_optional(&mut **tx)
        .await
        .map_err(AdapterError::db)?;
        let Some((items,)) = row else {
            return Ok(false);
        };
        let per_sku: BTreeMap<String, i64> = serde_json::from_str(&items)
            .map_err(|e| AdapterError::Unavailable(format!("corrupt reservation: {e}")))?;
        for (sku, qty) in per_sku {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE inventory SET {set} WHERE sku = $2"
            )))
            .bind(qty)
            .bind(&sku)
            .execute(&mut **tx)
            .await
            .map_err(AdapterError::db)?;
        }
        Ok(true)
    }

    /// Gives a reservation's stock back. Releasing twice, or what was never reserved or was
    /// shipped, changes nothing.
    pub async fn release(&self, reservation_key: &str) -> Result<(), AdapterError> {
        let mut tx = self.begin_write().await?;
        Self::move_reserved(
            &mut tx,
            reservation_key,
            "released",
            "available = available + $1, reserved = reserved - $1",
        )
        .await?;
        tx.commit().await.map_err(AdapterError::db)
    }

    /// Charges the order's invoice total (discount and tax included, `pricing::invoice`)
    /// under `key`. Customers whose id starts with `declined` are declined (the demo's way to
    /// exercise compensation).
    pub async fn charge(&self, key: &str, order: &Order) -> Result<Charge, AdapterError> {
        if order.customer_id.starts_with("declined") {
            return Err(AdapterError::Rejected {
                kind: "PaymentDeclined",
                message: format!("card of {} declined", order.customer_id),
            });
        }
        let amount = pricing::invoice(order).total_cents;
        let inserted = sqlx::query(
            "INSERT INTO payments (payment_key, order_id, kind, amount_cents, currency, charge_key, created_at) \
             VALUES ($1, $2, 'charge', $3, $4, NULL, $5) ON CONFLICT (payment_key) DO NOTHING",
        )
        .bind(key)
        .bind(&order.order_id)
        .bind(amount)
        .bind(&order.currency)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(AdapterError::db)?
        .rows_affected();
        if inserted == 0 {
            // A retry: the charge that was recorded, never another amount or a refunded one.
            let (order_id, recorded, currency, refunds): (String, i64, String, i64) =
                sqlx::query_as(
                    "SELECT c.order_id, c.amount_cents, c.currency, \
                     CAST((SELECT COUNT(*) FROM payments r WHERE r.charge_key = c.payment_key) AS BIGINT) \
                     FROM payments c WHERE c.payment_key = $1 AND c.kind = 'charge'",
                )
                .bind(key)
                .fetch_one(&self.pool)
                .await
                .map_err(AdapterError::db)?;
            if order_id != order.order_id || recorded != amount || currency != order.currency {
                return Err(key_reused(
                    key,
                    &format!("order {order_id}, {recorded} {currency}"),
                ));
            }
            if refunds > 0 {
                return Err(key_reused(key, "a charge that was refunded"));
            }
        }
        Ok(Charge {
            key: key.to_owned(),
            amount_cents: amount,
        })
    }

    /// Refunds a charge in full, once. Refunding what was never charged changes nothing.
    pub async fn refund(&self, charge_key: &str) -> Result<(), AdapterError> {
        sqlx::query(
            "INSERT INTO payments (payment_key, order_id, kind, amount_cents, currency, charge_key, created_at) \
             SELECT payment_key || '/refund', order_id, 'refund', amount_cents, currency, payment_key, $2 \
             FROM payments WHERE payment_key = $1 AND kind = 'charge' \
             ON CONFLICT (payment_key) DO NOTHING",
        )
        .bind(charge_key)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(AdapterError::db)?;
        Ok(())
    }

    /// Ships a reservation under `key`. The reference shipper does not ship to country `ZZ`.
    pub async fn ship(
        &self,
        key: &str,
        order: &Order,
        reservation_key: &str,
    ) -> Result<String, AdapterError> {
        if order.shipping_address.country == "ZZ" {
            return Err(AdapterError::Rejected {
                kind: "Unshippable",
                message: format!("cannot ship order {} to country ZZ", order.order_id),
            });
        }
        // The shipment and the stock it takes are one transaction: a retry finds both or none.
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO shipments (shipment_key, order_id, reservation_key, country, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (shipment_key) DO NOTHING",
        )
        .bind(key)
        .bind(&order.order_id)
        .bind(reservation_key)
        .bind(&order.shipping_address.country)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(AdapterError::db)?
        .rows_affected();
        if inserted == 0 {
            let (order_id, recorded): (String, String) = sqlx::query_as(
                "SELECT order_id, reservation_key FROM shipments WHERE shipment_key = $1",
            )
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(AdapterError::db)?;
            if order_id != order.order_id || recorded != reservation_key {
                return Err(key_reused(
                    key,
                    &format!("order {order_id} reservation {recorded}"),
                ));
            }
        } else {
            let moved = Self::move_reserved(
                &mut tx,
                reservation_key,
                "shipped",
                "reserved = reserved - $1, shipped = shipped + $1",
            )
            .await?;
            if !moved {
                return Err(AdapterError::Rejected {
                    kind: "Unshippable",
                    message: format!(
                        "order {}: its reservation is no longer held",
                        order.order_id
                    ),
                });
            }
        }
        tx.commit().await.map_err(AdapterError::db)?;
        Ok(key.to_owned())
    }

    /// The velocity rule's count: records order `order_id` against `key` (the order's
    /// `velocity_key`; column `customer_id`, named before orders had another key) at the
    /// current time (once: a retry keeps the first record), then returns how many orders of
    /// that key fall in the minute ending at this order's recorded time, itself included
    /// (`at` in `(this - 60 s, this]`, ties on `at` broken by order id). Later orders do not
    /// change the answer, so a retried call returns the same count. The key is the one first
    /// recorded for the order. Attempts older than [`ATTEMPTS_KEPT_MS`] are deleted as new
    /// ones come (two per call).
    pub async fn recent_orders(&self, key: &str, order_id: &str) -> Result<i64, AdapterError> {
        sqlx::query(
            "INSERT INTO order_attempts (order_id, customer_id, at) VALUES ($1, $2, $3) \
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(key)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(AdapterError::db)?;
        // Two out for each one in: the table keeps about a day of attempts at any rate.
        sqlx::query(
            "DELETE FROM order_attempts WHERE order_id IN (SELECT order_id FROM order_attempts \
             WHERE at < $1 ORDER BY at LIMIT 2)",
        )
        .bind(now_ms() - ATTEMPTS_KEPT_MS)
        .execute(&self.pool)
        .await
        .map_err(AdapterError::db)?;
        let (count,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM order_attempts o \
             JOIN order_attempts me ON me.order_id = $1 \
             WHERE o.customer_id = me.customer_id AND o.at > me.at - 60000 \
             AND (o.at < me.at OR (o.at = me.at AND o.order_id <= me.order_id))",
        )
        .bind(order_id)
        .fetch_one(&self.pool)
        .await
        .map_err(AdapterError::db)?;
        Ok(count)
    }

    /// The catalogue's entries of those of `skus` it lists, by SKU.
    pub async fn prices(
        &self,
        skus: &[&str],
    ) -> Result<BTreeMap<String, CatalogEntry>, AdapterError> {
        if skus.is_empty() {
            return Ok(BTreeMap::new());
        }
        let params: Vec<String> = (1..=skus.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT sku, price_cents, currency, tax_class FROM catalog WHERE sku IN ({})",
            params.join(", ")
        );
        let mut query = sqlx::query_as::<_, crate::catalog::CatalogRow>(sqlx::AssertSqlSafe(sql));
        for sku in skus {
            query = query.bind(*sku);
        }
        let entries = query
            .fetch_all(&self.pool)
            .await
            .map_err(AdapterError::db)?;
        Ok(entries
            .into_iter()
            .map(|row| (row.0.clone(), CatalogEntry::from(row)))
            .collect())
    }

    /// Sets the price of each SKU of `entries` (added or replaced), all in one transaction;
    /// SKUs not in `entries` keep theirs.
    pub async fn import_catalog(&self, entries: &[CatalogEntry]) -> Result<(), AdapterError> {
        let mut tx = self.begin_write().await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO catalog (sku, price_cents, currency, tax_class) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (sku) DO UPDATE SET \
                 price_cents = excluded.price_cents, currency = excluded.currency, \
                 tax_class = excluded.tax_class",
            )
            .bind(&e.sku)
            .bind(e.price_cents)
            .bind(&e.currency)
            .bind(&e.tax_class)
            .execute(&mut *tx)
            .await
            .map_err(AdapterError::db)?;
        }
        tx.commit().await.map_err(AdapterError::db)
    }

    /// The whole catalogue, by SKU.
    pub async fn catalog(&self) -> Result<Vec<CatalogEntry>, AdapterError> {
        let rows: Vec<crate::catalog::CatalogRow> = sqlx::query_as(
            "SELECT sku, price_cents, currency, tax_class FROM catalog ORDER BY sku",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(AdapterError::db)?;
        Ok(rows.into_iter().map(CatalogEntry::from).collect())
    }

    /// Records a notification under `key` (once).
    pub async fn record_notification(
        &self,
        key: &str,
        order_id: &str,
        outcome: &str,
        body: &str,
    ) -> Result<(), AdapterError> {
        sqlx::query(
            "INSERT INTO notifications (notification_key, order_id, outcome, body, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (notification_key) DO NOTHING",
        )
        .bind(key)
        .bind(order_id)
        .bind(outcome)
        .bind(body)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(AdapterError::db)?;
        Ok(())
    }

    /// Stock totals over all SKUs whose name starts with `prefix`.
    pub async fn stock(&self, prefix: &str) -> Result<StockTotals, AdapterError> {
        let row: (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(initial), 0) AS BIGINT), CAST(COALESCE(SUM(available), 0) AS BIGINT), \
             CAST(COALESCE(SUM(reserved), 0) AS BIGINT), CAST(COALESCE(SUM(shipped), 0) AS BIGINT) \
             FROM inventory WHERE substr(sku, 1, length($1)) = $1",
        )
        .bind(prefix)
        .fetch_one(&self.pool)
        .await
        .map_err(AdapterError::db)?;
        Ok(StockTotals {
            initial: row.0,
            available: row.1,
            reserved: row.2,
            shipped: row.3,
        })
    }

    /// Net money per order (charges minus refunds), for orders whose id starts with `prefix`,
    /// and how many charges each order got.
    pub async fn ledger(&self, prefix: &str) -> Result<BTreeMap<String, (i64, i64)>, AdapterError> {
        let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for (order, kind, amount) in self.lines(prefix).await? {
            let e = out.entry(order).or_default();
            if kind == "charge" {
                e.0 += amount;
                e.1 += 1;
            } else {
                e.0 -= amount;
            }
        }
        Ok(out)
    }

    /// Every ledger line of orders whose id starts with `prefix`: (order, kind, amount).
    async fn lines(&self, prefix: &str) -> Result<Vec<(String, String, i64)>, AdapterError> {
        sqlx::query_as(
            "SELECT order_id, kind, amount_cents FROM payments \
             WHERE substr(order_id, 1, length($1)) = $1",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(AdapterError::db)
    }

    /// Reconciles the ledger against the shipments for the orders whose payments moved in the
    /// window (`martix_order_contract::reconcile`), as of `now`.
    pub async fn reconcile(
        &self,
        window: &ReconcileWindow,
        now: i64,
    ) -> Result<Reconciliation, AdapterError> {
        const MAX_LISTED: usize = 1_000;
        let until = if window.until_ms > 0 {
            window.until_ms
        } else {
            now
        };
        let since = until - i64::from(window.hours) * 3_600_000;
        let settled = until - i64::from(window.settle_minutes) * 60_000;
        let orders: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT p.order_id, \
                CAST(SUM(CASE WHEN p.kind = 'charge' THEN 1 ELSE -1 END) AS BIGINT), \
                CAST(SUM(CASE WHEN p.kind = 'charge' THEN p.amount_cents \
                    ELSE -p.amount_cents END) AS BIGINT), \
                (SELECT COUNT(*) FROM shipments s WHERE s.order_id = p.order_id) \
             FROM payments p WHERE p.order_id IN (SELECT order_id FROM payments \
                WHERE created_at >= $1 AND created_at < $2 \
                AND substr(order_id, 1, length($3)) = $3) \
             GROUP BY p.order_id ORDER BY p.order_id",
        )
        .bind(since)
        .bind(settled)
        .bind(&window.prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(AdapterError::db)?;
        let unpaid: Vec<(String,)> = sqlx::query_as(
            "SELECT s.order_id FROM shipments s WHERE s.created_at >= $1 AND s.created_at < $2 \
             AND substr(s.order_id, 1, length($3)) = $3 AND NOT EXISTS \
                (SELECT 1 FROM payments p WHERE p.order_id = s.order_id) \
             ORDER BY s.order_id",
        )
        .bind(since)
        .bind(settled)
        .bind(&window.prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(AdapterError::db)?;
        let mut r = Reconciliation {
            orders_checked: orders.len() as u64,
            ..Reconciliation::default()
        };
        let mut discrepancies = 0;
        let mut note = |list: &mut Vec<String>, order: &str| {
            discrepancies += 1;
            if list.len() < MAX_LISTED {
                list.push(order.to_owned());
            }
        };
        for (order, held, net, shipped) in &orders {
            r.held_cents += net;
            match (held, shipped) {
                (h, _) if *h > 1 => note(&mut r.charged_twice, order),
                (1, 0) => note(&mut r.charged_not_shipped, order),
                (h, s) if *h < 1 && *s > 0 => note(&mut r.shipped_not_charged, order),
                _ => {}
            }
        }
        for (order,) in &unpaid {
            note(&mut r.shipped_not_charged, order);
        }
        r.discrepancies = discrepancies;
        Ok(r)
    }

    /// An order's ledger lines: (kind, amount in cents, currency, payment key), oldest first.
    pub async fn payments(
        &self,
        order_id: &str,
    ) -> Result<Vec<(String, i64, String, String)>, AdapterError> {
        sqlx::query_as(
            "SELECT kind, amount_cents, currency, payment_key FROM payments WHERE order_id = $1 \
             ORDER BY created_at, payment_key",
        )
        .bind(order_id)
        .fetch_all(&self.pool)
        .await
        .map_err(AdapterError::db)
    }

    /// The notifications recorded for an order.
    pub async fn notifications(&self, order_id: &str) -> Result<Vec<String>, AdapterError> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT outcome FROM notifications WHERE order_id = $1")
                .bind(order_id)
                .fetch_all(&self.pool)
                .await
                .map_err(AdapterError::db)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}

/// One line of a ledger check.
#[derive(Clone, Debug)]
pub struct Check {
    pub what: &'static str,
    pub figures: String,
    pub ok: bool,
}

impl ReferenceAdapters {
    /// Checks that money and stock add up for the orders under `prefix` (ids and SKUs start
    /// with it), given the orders that completed: charges minus refunds equal the sum of
    /// their invoice totals (`pricing::invoice`), no
    /// order was charged twice, stock is conserved, nothing stays reserved, and what shipped is
    /// what they ordered. Meaningful once every order is terminal.
    pub async fn check_ledger(
        &self,
        prefix: &str,
        completed: &[&Order],
    ) -> Result<Vec<Check>, AdapterError> {
        self.check_ledger_setting_aside(prefix, completed, &[])
            .await
    }

    /// [`Self::check_ledger`], with the money of `set_aside` orders left out: orders that
    /// need attention, or whose failed compensation an operator settled by hand (`done`) or
    /// gave up (`fail`): what they hold is the operator's to settle, and is shown apart.
    pub async fn check_ledger_setting_aside(
        &self,
        prefix: &str,
        completed: &[&Order],
        set_aside: &[&str],
    ) -> Result<Vec<Check>, AdapterError> {
        let mut ledger = self.ledger(prefix).await?;
        let aside: i64 = set_aside
            .iter()
            .filter_map(|id| ledger.remove(*id))
            .map(|(net, _)| net)
            .sum();
        let net: i64 = ledger.values().map(|(net, _)| net).sum();
        // Charges not refunded: a second run of an order id may charge again once the first
        // run's charge was refunded, never while it is held.
        let mut held: BTreeMap<String, i64> = BTreeMap::new();
        for (order, kind, _) in self.lines(prefix).await? {
            if !set_aside.contains(&order.as_str()) {
                *held.entry(order).or_default() += if kind == "charge" { 1 } else { -1 };
            }
        }
        let double_charged = held.values().filter(|n| **n > 1).count();
        let expected_net: i64 = completed
            .iter()
            .map(|o| pricing::invoice(o).total_cents)
            .sum();
        let expected_shipped: i64 = completed.iter().flat_map(|o| &o.items).map(|i| i.qty).sum();
        let stock = self.stock(&format!("{prefix}-sku")).await?;
        let mut checks = Vec::new();
        if !set_aside.is_empty() {
            checks.push(Check {
                what: "orders set aside for an operator (not counted below)",
                figures: format!("{} orders holding {aside}", set_aside.len()),
                ok: true,
            });
        }
        checks.extend([
            Check {
                what: "charges - refunds = invoice totals of completed orders",
                figures: format!("{net} = {expected_net}"),
                ok: net == expected_net,
            },
            Check {
                what: "no order holds two charges",
                figures: format!("{double_charged} orders holding two"),
                ok: double_charged == 0,
            },
            Check {
                what: "available + reserved + shipped = initial stock",
                figures: format!(
                    "{} + {} + {} = {}",
                    stock.available, stock.reserved, stock.shipped, stock.initial
                ),
                ok: stock.available + stock.reserved + stock.shipped == stock.initial,
            },
            Check {
                what: "nothing left reserved",
                figures: format!("{} reserved", stock.reserved),
                ok: stock.reserved == 0,
            },
            Check {
                what: "shipped = items of completed orders",
                figures: format!("{} = {expected_shipped}", stock.shipped),
                ok: stock.shipped == expected_shipped,
            },
        ]);
        Ok(checks)
    }
}
