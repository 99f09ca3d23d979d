//! The outbox on both backends: shard leases, the relay's reads past its two cursors, moving
//! them, folding batches into projections in the cursor's transaction, rebuilds, status and
//! retention. The dialects differ in how rows past a cursor are ranged and whether shard rows
//! are locked (`Backend`); the rest is the same statement text.

use super::{Backend, Column, SqlStore};
use crate::clock::Millis;
use crate::store::events::{Consumer, EventStore, OutboxStatus, SHARDS, ShardLease, StoredEvent};
use crate::store::projection::{Pools, Projection};
use crate::store::{StoreError, classify};
use sqlx::Row as _;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The outbox columns, in the order `event_from_row` reads them: of `outbox o` joined with
/// its shard `outbox_shards s`.
const EVENT_COLUMNS: &str = "o.position, o.xact, o.shard, o.event_id, o.namespace, o.subject, \
    o.workflow_type, o.run_id, o.sequence, o.event_type, o.occurred_at, o.body, \
    (o.xact, o.position) <= (s.sent_xact, s.sent_position)";

/// Outbox rows after position `$1` (of namespace `$2`, or all), in order, up to `$3`.
/// Deletes outbox rows of shard `$1` among its oldest `$2` that occurred before `$3` and are
/// behind its projected cursor (`PURGE_FOLDED`) and its sent one too.
macro_rules! purge_outbox {
    ($sent:literal) => {
        concat!(
            "DELETE FROM outbox WHERE position IN (SELECT w.position FROM \
             (SELECT position, xact, occurred_at FROM outbox WHERE shard = $1 \
              ORDER BY xact, position LIMIT $2) w \
             JOIN outbox_shards s ON s.shard = $1 WHERE w.occurred_at < $3 ",
            $sent,
            "AND (w.xact, w.position) <= (s.projected_xact, s.projected_position))"
        )
    };
}
const PURGE_SENT_AND_FOLDED: &str =
    purge_outbox!("AND (w.xact, w.position) <= (s.sent_xact, s.sent_position) ");
const PURGE_FOLDED: &str = purge_outbox!("");

const LIST_OUTBOX: &str = "SELECT o.position, o.xact, o.shard, o.event_id, o.namespace, \
    o.subject, o.workflow_type, o.run_id, o.sequence, o.event_type, o.occurred_at, o.body, \
    (o.xact, o.position) <= (s.sent_xact, s.sent_position) \
    FROM outbox o JOIN outbox_shards s ON s.shard = o.shard \
    WHERE o.position > $1 AND ($2 IS NULL OR o.namespace = $2) \
    ORDER BY o.position LIMIT $3";

/// An outbox row's place in its shard's order, the order cursors move in: `xact` first (the
/// writing transaction's id on PostgreSQL; 0 on SQLite), then `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Place {
    pub(crate) xact: i64,
    pub(crate) position: i64,
}

/// The first and last place of a batch's events in one shard.
struct Extent {
    first: Place,
    last: Place,
}

/// Each shard of `events` with its first and last place there.
fn extents(events: &[StoredEvent]) -> BTreeMap<i32, Extent> {
    let mut extents = BTreeMap::new();
    for e in events {
        let at = Place {
            xact: e.xact,
            position: e.position,
        };
        let extent = extents.entry(e.shard).or_insert(Extent {
            first: at,
            last: at,
        });
        extent.first = extent.first.min(at);
        extent.last = extent.last.max(at);
    }
    extents
}

/// The shards' binds, separated, and the `)` that closes their `IN (`.
fn push_shards<DB: sqlx::Database>(qb: &mut sqlx::QueryBuilder<DB>, shards: &[i32])
where
    i32: Column<DB>,
{
    let mut sep = qb.separated(", ");
    for s in shards {
        sep.push_bind(*s);
    }
    sep.push_unseparated(")");
}

// Private helpers of the trait impls (the outbox statements). `private_bounds`: the bounds name
// the crate's own traits (`Backend`, `Column`), and nothing outside the crate calls these.
#[allow(private_bounds)]
impl<DB> SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    String: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    bool: Column<DB>,
    Vec<u8>: Column<DB>,
    for<'r> &'r [u8]: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q [u8]>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    fn event_from_row(r: &DB::Row) -> Result<StoredEvent, StoreError> {
        Ok(StoredEvent {
            position: r.try_get(0).map_err(classify)?,
            xact: r.try_get(1).map_err(classify)?,
            shard: r.try_get(2).map_err(classify)?,
            event_id: r.try_get(3).map_err(classify)?,
            namespace: r.try_get(4).map_err(classify)?,
            subject: r.try_get(5).map_err(classify)?,
            workflow_type: r.try_get(6).map_err(classify)?,
            run_id: r.try_get(7).map_err(classify)?,
            sequence: r.try_get(8).map_err(classify)?,
            event_type: r.try_get(9).map_err(classify)?,
            occurred_at: r.try_get(10).map_err(classify)?,
            body: r.try_get(11).map_err(classify)?,
            sent: r.try_get(12).map_err(classify)?,
        })
    }

    /// The relay's own bookkeeping (read model, sent marks) need not wait for the disk: a
    /// commit lost in a crash loses the fold and its mark together, so the events are folded
    /// (or sent) again; history and outbox rows are always committed durably by the run store.
    async fn relaxed_commit(conn: &mut DB::Connection) -> Result<(), StoreError> {
        if let Some(relaxed) = DB::RELAXED_COMMIT {
            sqlx::query(relaxed)
                .execute(&mut *conn)
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    /// Locks `consumer`'s cursors of the shards of `events` (PostgreSQL; SQLite's one write
    /// connection serializes its transactions anyway) and checks that `events` are the next
    /// rows past them: no row of a shard lies between its cursor and the batch's first row
    /// there, else `CursorMoved`. A rebuild of the read model sets the cursors back; a batch
    /// read before it and folded after would otherwise move them forward past the rows the
    /// rebuild wiped from the read model. The rebuild's first statement updates these rows, so
    /// a fold waits for a rebuild under way.
    async fn follows_cursor(
        conn: &mut DB::Connection,
        consumer: Consumer,
        events: &[StoredEvent],
    ) -> Result<(), StoreError> {
        let first = extents(events)
            .into_iter()
            .map(|(shard, extent)| (shard, extent.first))
            .collect();
        if DB::outbox_follows_cursor(conn, consumer, &first).await? {
            Ok(())
        } else {
            Err(StoreError::CursorMoved)
        }
    }

    /// Locks every shard's row, in shard order (`Backend::LOCK_SHARDS`). Whatever changes
    /// several shard rows in one transaction (leases, cursors, a rebuild) locks them in that
    /// order first, so two such transactions never wait for each other both ways.
    async fn lock_shards(conn: &mut DB::Connection) -> Result<(), StoreError> {
        if let Some(lock) = DB::LOCK_SHARDS {
            sqlx::query(lock)
                .fetch_all(&mut *conn)
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    /// Moves `consumer`'s cursor of each shard of `events` to its last event there, never
    /// back (in shard order, see `lock_shards`).
    async fn advance(
        conn: &mut DB::Connection,
        consumer: Consumer,
        events: &[StoredEvent],
    ) -> Result<(), StoreError> {
        for (shard, extent) in extents(events) {
            sqlx::query(consumer.advance_sql())
                .bind(extent.last.xact)
                .bind(extent.last.position)
                .bind(shard)
                .execute(&mut *conn)
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    /// The oldest events of `shards` past `consumer`'s cursors, in `(xact, position)` order
    /// (`Backend::push_pending_from` has what each backend reads).
    async fn events_of_shards(
        &self,
        shards: &[i32],
        consumer: Consumer,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if shards.is_empty() {
            return Ok(Vec::new());
        }
        let past = DB::past_cursor(consumer);
        let mut qb = sqlx::QueryBuilder::<DB>::new("SELECT ");
        qb.push(EVENT_COLUMNS);
        DB::push_pending_from(&mut qb, &past, limit as i64);
        push_shards(&mut qb, shards);
        qb.push(" ORDER BY o.xact, o.position LIMIT ")
            .push_bind(limit as i64);
        qb.build()
            .fetch_all(&self.read)
            .await
            .map_err(classify)?
            .iter()
            .map(Self::event_from_row)
            .collect()
    }

    /// The shards `owner` holds a lease of at `now`.
    async fn held_shards(
        tx: &mut DB::Connection,
        owner: &str,
        now: Millis,
    ) -> Result<Vec<i32>, StoreError> {
        sqlx::query_scalar::<_, i32>(
            "SELECT shard FROM outbox_shards WHERE owner = $1 AND lease_until > $2 \
             ORDER BY shard",
        )
        .bind(owner)
        .bind(now)
        .fetch_all(tx)
        .await
        .map_err(classify)
    }
}

#[async_trait::async_trait]
impl<DB> EventStore for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    String: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    bool: Column<DB>,
    Vec<u8>: Column<DB>,
    for<'r> &'r [u8]: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q [u8]>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    async fn lease_shards(
        &self,
        owner: &str,
        now: Millis,
        lease_ms: i64,
    ) -> Result<Vec<i32>, StoreError> {
        let until = now + lease_ms;
        let mut tx = DB::begin_write(&self.write).await.map_err(classify)?;
        Self::lock_shards(&mut tx).await?;
        sqlx::query(
            "UPDATE outbox_shards SET lease_until = $1 WHERE owner = $2 AND lease_until > $3",
        )
        .bind(until)
        .bind(owner)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        // Say this node is alive, so nodes holding more than their share give some back even
        // before this one holds any.
        sqlx::query(
            "INSERT INTO relay_nodes (owner, seen_until) VALUES ($1, $2) \
             ON CONFLICT (owner) DO UPDATE SET seen_until = $2",
        )
        .bind(owner)
        .bind(until)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        sqlx::query("DELETE FROM relay_nodes WHERE seen_until < $1")
            .bind(now - lease_ms)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let others: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM relay_nodes WHERE seen_until > $1 AND owner <> $2",
        )
        .bind(now)
        .bind(owner)
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        let share = (SHARDS as u64).div_ceil(others.max(0) as u64 + 1) as usize;
        let mut held = Self::held_shards(&mut tx, owner, now).await?;
        if held.len() > share {
            for s in held.split_off(share) {
                sqlx::query(
                    "UPDATE outbox_shards SET owner = NULL, lease_until = 0 \
                     WHERE shard = $1 AND owner = $2",
                )
                .bind(s)
                .bind(owner)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
        } else if held.len() < share {
            sqlx::query(
                "UPDATE outbox_shards SET owner = $1, lease_until = $2 \
                 WHERE lease_until <= $3 AND shard IN \
                 (SELECT shard FROM outbox_shards WHERE lease_until <= $3 \
                  ORDER BY shard LIMIT $4)",
            )
            .bind(owner)
            .bind(until)
            .bind(now)
            .bind((share - held.len()) as i64)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            held = Self::held_shards(&mut tx, owner, now).await?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(held)
    }

    async fn release_shards(&self, owner: &str) -> Result<(), StoreError> {
        let mut tx = DB::begin_write(&self.write).await.map_err(classify)?;
        Self::lock_shards(&mut tx).await?;
        sqlx::query("UPDATE outbox_shards SET owner = NULL, lease_until = 0 WHERE owner = $1")
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        sqlx::query("DELETE FROM relay_nodes WHERE owner = $1")
            .bind(owner)
            .execute(&self.write)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn unsent_events(
        &self,
        shards: &[i32],
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.events_of_shards(shards, Consumer::Sent, limit).await
    }

    async fn mark_sent(&self, events: &[StoredEvent]) -> Result<(), StoreError> {
        let mut tx = DB::begin_write(&self.write).await.map_err(classify)?;
        Self::relaxed_commit(&mut tx).await?;
        Self::advance(&mut tx, Consumer::Sent, events).await?;
        tx.commit().await.map_err(classify)
    }

    async fn unprojected_events(
        &self,
        shards: &[i32],
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.events_of_shards(shards, Consumer::Projected, limit)
            .await
    }

    async fn project(
        &self,
        events: &[StoredEvent],
        projections: &[Arc<dyn Projection>],
    ) -> Result<(), StoreError> {
        let mut tx = DB::begin_write(&self.write).await.map_err(classify)?;
        Self::relaxed_commit(&mut tx).await?;
        Self::follows_cursor(&mut tx, Consumer::Projected, events).await?;
        for p in projections {
            let taken: Vec<&StoredEvent> = events.iter().filter(|e| p.takes(e)).collect();
            if !taken.is_empty() {
                let mut ptx = DB::projection_tx(&mut tx);
                p.fold(&mut ptx, &taken).await?;
            }
        }
        Self::advance(&mut tx, Consumer::Projected, events).await?;
        tx.commit().await.map_err(classify)
    }

    async fn rebuild_projections(
        &self,
        projections: &[Arc<dyn Projection>],
        events: &[StoredEvent],
    ) -> Result<(), StoreError> {
        let mut tx = DB::begin_write(&self.write).await.map_err(classify)?;
        Self::lock_shards(&mut tx).await?;
        // Every event is to be folded again unless the rebuild below holds it: one the relay
        // folded after the histories were read is folded again after.
        sqlx::query("UPDATE outbox_shards SET projected_xact = 0, projected_position = 0")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        for p in projections {
            let mut ptx = DB::projection_tx(&mut tx);
            p.clear(&mut ptx).await?;
            let taken: Vec<&StoredEvent> = events.iter().filter(|e| p.takes(e)).collect();
            for chunk in taken.chunks(500) {
                let mut ptx = DB::projection_tx(&mut tx);
                p.fold(&mut ptx, chunk).await?;
            }
        }
        tx.commit().await.map_err(classify)
    }

    fn pools(&self) -> Pools {
        DB::pools(&self.write, &self.read)
    }

    async fn set_aside(&self, events: &[StoredEvent]) -> Result<(), StoreError> {
        let mut tx = DB::begin_write(&self.write).await.map_err(classify)?;
        Self::follows_cursor(&mut tx, Consumer::Projected, events).await?;
        Self::advance(&mut tx, Consumer::Projected, events).await?;
        tx.commit().await.map_err(classify)
    }

    async fn outbox_status(&self, now: Millis) -> Result<OutboxStatus, StoreError> {
        // Scraped with /metrics, so cheap whatever the outbox keeps: each backlog is a range
        // of `outbox_pending` per shard past its cursor (a subquery per shard, not a join,
        // which PostgreSQL answered with a scan of every row); the rows kept come from the
        // range of positions (an upper bound: rolled-back positions leave gaps).
        let backlog = |consumer: Consumer, of: &str| {
            format!(
                "(SELECT {of} FROM outbox o WHERE o.shard = s.shard AND {})",
                DB::past_cursor(consumer)
            )
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT \
             (SELECT COALESCE(MAX(position) - MIN(position) + 1, 0) FROM outbox), \
             CAST(COALESCE(SUM({}), 0) AS BIGINT), MIN({}), \
             CAST(COALESCE(SUM({}), 0) AS BIGINT), MIN({}) \
             FROM outbox_shards s",
            backlog(Consumer::Sent, "COUNT(*)"),
            backlog(Consumer::Sent, "MIN(o.occurred_at)"),
            backlog(Consumer::Projected, "COUNT(*)"),
            backlog(Consumer::Projected, "MIN(o.occurred_at)"),
        )))
        .fetch_one(&self.read)
        .await
        .map_err(classify)?;
        let leases = sqlx::query(
            "SELECT shard, owner, lease_until FROM outbox_shards \
             WHERE lease_until > $1 ORDER BY shard",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?
        .iter()
        .map(|r| {
            Ok(ShardLease {
                shard: r.try_get(0).map_err(classify)?,
                owner: r
                    .try_get::<Option<String>, _>(1)
                    .map_err(classify)?
                    .unwrap_or_default(),
                until: r.try_get(2).map_err(classify)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(OutboxStatus {
            total: row.try_get(0).map_err(classify)?,
            unsent: row.try_get(1).map_err(classify)?,
            oldest_unsent_at: row.try_get(2).map_err(classify)?,
            unprojected: row.try_get(3).map_err(classify)?,
            oldest_unprojected_at: row.try_get(4).map_err(classify)?,
            leases,
        })
    }

    async fn list_outbox(
        &self,
        namespace: Option<&str>,
        after_position: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        sqlx::query(LIST_OUTBOX)
            .bind(after_position)
            .bind(namespace)
            .bind(limit as i64)
            .fetch_all(&self.read)
            .await
            .map_err(classify)?
            .iter()
            .map(Self::event_from_row)
            .collect()
    }

    async fn purge_events(
        &self,
        before: Millis,
        limit: usize,
        sent_required: bool,
    ) -> Result<u64, StoreError> {
        // Each shard's oldest rows (its range of `outbox_pending`), those of them behind both
        // cursors (behind the projected one only, without a broker): a look at `limit` rows a
        // shard, not a scan of every row kept, and a shard that lags holds back only its own
        // rows.
        let sql = if sent_required {
            PURGE_SENT_AND_FOLDED
        } else {
            PURGE_FOLDED
        };
        let mut purged = 0;
        for shard in 0..SHARDS {
            let done = sqlx::query(sql)
                .bind(shard)
                .bind(limit as i64)
                .bind(before)
                .execute(&self.write)
                .await
                .map_err(classify)?;
            purged += DB::rows_affected(&done);
        }
        sqlx::query("DELETE FROM signal_requests WHERE received_at < $1")
            .bind(before)
            .execute(&self.write)
            .await
            .map_err(classify)?;
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_listing_reads_the_event_columns() {
        assert!(
            LIST_OUTBOX.contains(EVENT_COLUMNS),
            "list_outbox selects EVENT_COLUMNS in event_from_row's order"
        );
    }
}
