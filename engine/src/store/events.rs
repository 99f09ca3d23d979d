//! Events: the outbox the relay sends from, the shards relays lease, and the cursors of the
//! projection host, which folds batches into the read models that domains register
//! (`events::projection`), in the transaction that moves its cursor.
//!
//! Outbox rows are written by `RunStore::commit`, with the change that publishes them; from
//! there each shard has two cursors, the broker's (sent) and the read models' (projected),
//! which move forward only, over rows in `(xact, position)` order.

use crate::clock::Millis;
use crate::events::projection::{Pools, Projection};
use crate::store::StoreError;
use std::sync::Arc;

/// Outbox shards: a subject's events all fall in one, and one node at a time sends a shard.
pub const SHARDS: i32 = 16;

/// 32-bit FNV-1a: small and stable across versions and nodes.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes.into_iter().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The shard of a subject: FNV-1a of `namespace \0 subject`.
pub fn shard_of(namespace: &str, subject: &str) -> i32 {
    let h = fnv1a(namespace.bytes().chain([0]).chain(subject.bytes()));
    (h % SHARDS as u32) as i32
}

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

/// The outbox at a glance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Rows in the outbox, about (at most this many; sent rows stay until the retention
    /// purges them).
    pub total: i64,
    pub unsent: i64,
    pub oldest_unsent_at: Option<Millis>,
    pub unprojected: i64,
    pub oldest_unprojected_at: Option<Millis>,
    /// Shards with a live lease.
    pub leases: Vec<ShardLease>,
}

/// A relay's lease of an outbox shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardLease {
    pub shard: i32,
    /// The relay holding it.
    pub owner: String,
    pub until: Millis,
}

/// The outbox, its shards and the projection cursors. Every method is atomic.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync {
    /// Renews this owner's shard leases and takes or gives back shards so live owners share
    /// them evenly; returns the shards held until `now + lease_ms`.
    async fn lease_shards(
        &self,
        owner: &str,
        now: Millis,
        lease_ms: i64,
    ) -> Result<Vec<i32>, StoreError>;

    /// Gives back every shard of `owner` (it stops).
    async fn release_shards(&self, owner: &str) -> Result<(), StoreError>;

    /// The oldest unsent events of `shards`, in outbox order.
    async fn unsent_events(
        &self,
        shards: &[i32],
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Moves the sent cursors of their shards past `events` (the broker confirmed them):
    /// events from `unsent_events`, a prefix of its answer. A cursor never moves back.
    async fn mark_sent(&self, events: &[StoredEvent]) -> Result<(), StoreError>;

    /// The oldest events of `shards` not yet folded into the read model, in outbox order.
    async fn unprojected_events(
        &self,
        shards: &[i32],
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Folds outbox events into `projections` (each the events it takes) and moves the
    /// projection cursors of their shards past them, in one transaction: events from
    /// `unprojected_events`, a prefix of its answer. `CursorMoved`, and nothing folded, if they
    /// are not the next rows past the cursors any more.
    async fn project(
        &self,
        events: &[StoredEvent],
        projections: &[Arc<dyn Projection>],
    ) -> Result<(), StoreError>;

    /// Rebuilds `projections` from `events` (in `rebuild_order`), in one transaction: each is
    /// cleared and folds the events it takes, and the projection cursors go back to the start,
    /// so the relay folds again what the rebuild did not hold (events committed after the
    /// histories were read; the projections skip those they hold).
    async fn rebuild_projections(
        &self,
        projections: &[Arc<dyn Projection>],
        events: &[StoredEvent],
    ) -> Result<(), StoreError>;

    /// The store's connection pools, for a domain's own tables.
    fn pools(&self) -> Pools;

    /// Moves the projection cursors past `events` without folding them: events the read
    /// model cannot take (`CursorMoved` as for `project`).
    async fn set_aside(&self, events: &[StoredEvent]) -> Result<(), StoreError>;

    /// Counts and ages of the outbox.
    async fn outbox_status(&self, now: Millis) -> Result<OutboxStatus, StoreError>;

    /// Outbox rows after `after_position`, in order (of one namespace, or all).
    async fn list_outbox(
        &self,
        namespace: Option<&str>,
        after_position: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Deletes rows sent and projected that occurred before `before` (looking at each shard's
    /// oldest `limit` rows), and signal request ids older than it; returns how many outbox rows
    /// went.
    async fn purge_events(&self, before: Millis, limit: usize) -> Result<u64, StoreError>;
}

/// The relay's two readers of the outbox, each with a cursor per shard in `outbox_shards`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumer {
    /// The broker (`sent_xact`, `sent_position`).
    Sent,
    /// The read model (`projected_xact`, `projected_position`).
    Projected,
}

impl Consumer {
    /// The prefix of the cursor's columns.
    pub(crate) fn cursor(self) -> &'static str {
        match self {
            Consumer::Sent => "sent",
            Consumer::Projected => "projected",
        }
    }

    /// Moves the cursor of shard `$3` to `($1, $2)` unless it is there or past it already.
    pub(crate) fn advance_sql(self) -> &'static str {
        match self {
            Consumer::Sent => {
                "UPDATE outbox_shards SET sent_xact = $1, sent_position = $2 \
                 WHERE shard = $3 AND (sent_xact, sent_position) < ($1, $2)"
            }
            Consumer::Projected => {
                "UPDATE outbox_shards SET projected_xact = $1, projected_position = $2 \
                 WHERE shard = $3 AND (projected_xact, projected_position) < ($1, $2)"
            }
        }
    }
}

/// The outbox columns, in the order `event_from_row` reads them: of `outbox o` joined with
/// its shard `outbox_shards s`.
macro_rules! event_cols {
    () => {
        "o.position, o.xact, o.shard, o.event_id, o.namespace, o.subject, o.workflow_type, \
         o.run_id, o.sequence, o.event_type, o.occurred_at, o.body, \
         (o.xact, o.position) <= (s.sent_xact, s.sent_position)"
    };
}

macro_rules! impl_event_store {
    ($store:ty, $db:ty, $backend:ident, $for_update:literal, $relaxed:literal, $postgres:literal) => {
        mod event_store {
            use super::*;
            use crate::clock::Millis;
            use crate::store::classify;
            use crate::store::events::{
                Consumer, EventStore, OutboxStatus, SHARDS, ShardLease, StoredEvent,
            };
            use crate::store::StoreError;

            type DbRow = <$db as sqlx::Database>::Row;
            type Conn = <$db as sqlx::Database>::Connection;

            fn event_from_row(r: &DbRow) -> Result<StoredEvent, StoreError> {
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

            /// The relay's own bookkeeping (read model, sent marks) need not wait for the disk
            /// (PostgreSQL): a commit lost in a crash loses the fold and its mark together, so
            /// the events are folded (or sent) again; history and outbox rows are always
            /// committed durably by the run store.
            async fn relaxed_commit(conn: &mut Conn) -> Result<(), StoreError> {
                if !$relaxed.is_empty() {
                    sqlx::query($relaxed).execute(&mut *conn).await.map_err(classify)?;
                }
                Ok(())
            }

            /// Each shard of `events` with its first and last `(xact, position)` there.
            fn extents(
                events: &[StoredEvent],
            ) -> std::collections::BTreeMap<i32, ((i64, i64), (i64, i64))> {
                let mut extents = std::collections::BTreeMap::new();
                for e in events {
                    let at = (e.xact, e.position);
                    let (first, last) = extents.entry(e.shard).or_insert((at, at));
                    *first = (*first).min(at);
                    *last = (*last).max(at);
                }
                extents
            }

            /// Locks `consumer`'s cursors of the shards of `events` (PostgreSQL; SQLite's one
            /// write connection serializes its transactions anyway) and checks that `events`
            /// are the next rows past them: no row of a shard lies between its cursor and the
            /// batch's first row there, else `CursorMoved`. A rebuild of the read model sets
            /// the cursors back; a batch read before it and folded after would otherwise move
            /// them forward past the rows the rebuild wiped from the read model. The rebuild's
            /// first statement updates these rows, so a fold waits for a rebuild under way.
            async fn follows_cursor(
                conn: &mut Conn,
                consumer: Consumer,
                events: &[StoredEvent],
            ) -> Result<(), StoreError> {
                let first = extents(events).into_iter().map(|(s, (f, _))| (s, f)).collect();
                if outbox_follows_cursor(conn, consumer, &first).await? {
                    Ok(())
                } else {
                    Err(StoreError::CursorMoved)
                }
            }

            /// Locks every shard's row, in shard order (PostgreSQL; SQLite has one writer).
            /// Whatever changes several shard rows in one transaction (leases, cursors, a
            /// rebuild) locks them in that order first, so two such transactions never wait
            /// for each other both ways.
            async fn lock_shards(conn: &mut Conn) -> Result<(), StoreError> {
                if $postgres {
                    sqlx::query(concat!(
                        "SELECT shard FROM outbox_shards ORDER BY shard",
                        $for_update
                    ))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(classify)?;
                }
                Ok(())
            }

            /// Moves `consumer`'s cursor of each shard of `events` to its last event there,
            /// never back (in shard order, see `lock_shards`).
            async fn advance(
                conn: &mut Conn,
                consumer: Consumer,
                events: &[StoredEvent],
            ) -> Result<(), StoreError> {
                for (shard, (_, (xact, position))) in extents(events) {
                    sqlx::query(consumer.advance_sql())
                        .bind(xact)
                        .bind(position)
                        .bind(shard)
                        .execute(&mut *conn)
                        .await
                        .map_err(classify)?;
                }
                Ok(())
            }

            fn push_shards(qb: &mut sqlx::QueryBuilder<$db>, shards: &[i32]) {
                let mut sep = qb.separated(", ");
                for s in shards {
                    sep.push_bind(*s);
                }
                sep.push_unseparated(")");
            }

            /// The rows of `outbox o` past `consumer`'s cursor of their shard `outbox_shards s`,
            /// as a range of `outbox_pending`: by `(xact, position)` on PostgreSQL; on SQLite,
            /// where `xact` is always 0, by position (SQLite ranges a row-value comparison over
            /// its first column only and filters the rest: every row of the shard).
            fn past_cursor(consumer: Consumer) -> String {
                let cursor = consumer.cursor();
                if $postgres {
                    format!("(o.xact, o.position) > (s.{cursor}_xact, s.{cursor}_position)")
                } else {
                    format!("o.xact = 0 AND o.position > s.{cursor}_position")
                }
            }

            /// The oldest events of `shards` past `consumer`'s cursors, in
            /// `(xact, position)` order. On PostgreSQL only rows of transactions older than every
            /// running one: a transaction still running may hold a lower position, and a cursor
            /// moved past its rows would skip them (migration 0013).
            async fn events_of_shards(
                pool: &sqlx::Pool<$db>,
                shards: &[i32],
                consumer: Consumer,
                limit: usize,
            ) -> Result<Vec<StoredEvent>, StoreError> {
                if shards.is_empty() {
                    return Ok(Vec::new());
                }
                let past = past_cursor(consumer);
                let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT ");
                qb.push($crate::store::events::event_cols!());
                if $postgres {
                    // Each shard's range of `outbox_pending`, from its cursor.
                    qb.push(format!(
                        " FROM outbox_shards s CROSS JOIN LATERAL (SELECT * FROM outbox o \
                         WHERE o.shard = s.shard AND {past} \
                         AND o.xact < (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint) \
                         ORDER BY o.xact, o.position LIMIT "
                    ))
                    .push_bind(limit as i64)
                    .push(") o WHERE s.shard IN (");
                } else {
                    qb.push(format!(
                        " FROM outbox_shards s JOIN outbox o ON o.shard = s.shard AND {past} \
                         WHERE s.shard IN ("
                    ));
                }
                push_shards(&mut qb, shards);
                qb.push(" ORDER BY o.xact, o.position LIMIT ").push_bind(limit as i64);
                qb.build()
                    .fetch_all(pool)
                    .await
                    .map_err(classify)?
                    .iter()
                    .map(event_from_row)
                    .collect()
            }

            #[async_trait::async_trait]
            impl EventStore for $store {
                async fn lease_shards(
                    &self,
                    owner: &str,
                    now: Millis,
                    lease_ms: i64,
                ) -> Result<Vec<i32>, StoreError> {
                    let until = now + lease_ms;
                    let mut tx = self.write.begin().await.map_err(classify)?;
                    lock_shards(&mut tx).await?;
                    sqlx::query(
                        "UPDATE outbox_shards SET lease_until = $1 WHERE owner = $2 AND lease_until > $3",
                    )
                    .bind(until)
                    .bind(owner)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                    // Say this node is alive, so nodes holding more than their share give
                    // some back even before this one holds any.
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
                    async fn mine(tx: &mut Conn, owner: &str, now: Millis) -> Result<Vec<i32>, StoreError> {
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
                    let mut held = mine(&mut tx, owner, now).await?;
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
                        held = mine(&mut tx, owner, now).await?;
                    }
                    tx.commit().await.map_err(classify)?;
                    Ok(held)
                }

                async fn release_shards(&self, owner: &str) -> Result<(), StoreError> {
                    let mut tx = self.write.begin().await.map_err(classify)?;
                    lock_shards(&mut tx).await?;
                    sqlx::query(
                        "UPDATE outbox_shards SET owner = NULL, lease_until = 0 WHERE owner = $1",
                    )
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
                    events_of_shards(&self.read, shards, Consumer::Sent, limit).await
                }

                async fn mark_sent(&self, events: &[StoredEvent]) -> Result<(), StoreError> {
                    let mut tx = self.write.begin().await.map_err(classify)?;
                    relaxed_commit(&mut tx).await?;
                    advance(&mut tx, Consumer::Sent, events).await?;
                    tx.commit().await.map_err(classify)
                }

                async fn unprojected_events(
                    &self,
                    shards: &[i32],
                    limit: usize,
                ) -> Result<Vec<StoredEvent>, StoreError> {
                    events_of_shards(&self.read, shards, Consumer::Projected, limit).await
                }

                async fn project(
                    &self,
                    events: &[StoredEvent],
                    projections: &[std::sync::Arc<dyn crate::events::projection::Projection>],
                ) -> Result<(), StoreError> {
                    let mut tx = self.write.begin().await.map_err(classify)?;
                    relaxed_commit(&mut tx).await?;
                    follows_cursor(&mut tx, Consumer::Projected, events).await?;
                    for p in projections {
                        let taken: Vec<&StoredEvent> = events.iter().filter(|e| p.takes(e)).collect();
                        if !taken.is_empty() {
                            let mut ptx = crate::events::projection::ProjectionTx::$backend(&mut *tx);
                            p.fold(&mut ptx, &taken).await?;
                        }
                    }
                    advance(&mut tx, Consumer::Projected, events).await?;
                    tx.commit().await.map_err(classify)
                }

                async fn rebuild_projections(
                    &self,
                    projections: &[std::sync::Arc<dyn crate::events::projection::Projection>],
                    events: &[StoredEvent],
                ) -> Result<(), StoreError> {
                    let mut tx = self.write.begin().await.map_err(classify)?;
                    lock_shards(&mut tx).await?;
                    // Every event is to be folded again unless the rebuild below holds it: one
                    // the relay folded after the histories were read is folded again after.
                    sqlx::query("UPDATE outbox_shards SET projected_xact = 0, projected_position = 0")
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                    for p in projections {
                        let mut ptx = crate::events::projection::ProjectionTx::$backend(&mut *tx);
                        p.clear(&mut ptx).await?;
                        let taken: Vec<&StoredEvent> = events.iter().filter(|e| p.takes(e)).collect();
                        for chunk in taken.chunks(500) {
                            let mut ptx = crate::events::projection::ProjectionTx::$backend(&mut *tx);
                            p.fold(&mut ptx, chunk).await?;
                        }
                    }
                    tx.commit().await.map_err(classify)
                }

                fn pools(&self) -> crate::events::projection::Pools {
                    crate::events::projection::Pools::$backend {
                        write: self.write.clone(),
                        read: self.read.clone(),
                    }
                }

                async fn set_aside(&self, events: &[StoredEvent]) -> Result<(), StoreError> {
                    let mut tx = self.write.begin().await.map_err(classify)?;
                    follows_cursor(&mut tx, Consumer::Projected, events).await?;
                    advance(&mut tx, Consumer::Projected, events).await?;
                    tx.commit().await.map_err(classify)
                }

                async fn outbox_status(&self, now: Millis) -> Result<OutboxStatus, StoreError> {
                    // Scraped with /metrics, so cheap whatever the outbox keeps: each backlog is
                    // a range of `outbox_pending` per shard past its cursor (a subquery per
                    // shard, not a join, which PostgreSQL answered with a scan of every row);
                    // the rows kept come from the range of positions (an upper bound:
                    // rolled-back positions leave gaps).
                    let backlog = |consumer: Consumer, of: &str| {
                        format!(
                            "(SELECT {of} FROM outbox o WHERE o.shard = s.shard AND {})",
                            past_cursor(consumer)
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
                            owner: r.try_get::<Option<String>, _>(1).map_err(classify)?.unwrap_or_default(),
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
                    sqlx::query(concat!(
                        "SELECT ", $crate::store::events::event_cols!(),
                        " FROM outbox o JOIN outbox_shards s ON s.shard = o.shard \
                         WHERE o.position > $1 AND ($2 IS NULL OR o.namespace = $2) \
                         ORDER BY o.position LIMIT $3"
                    ))
                    .bind(after_position)
                    .bind(namespace)
                    .bind(limit as i64)
                    .fetch_all(&self.read)
                    .await
                    .map_err(classify)?
                    .iter()
                    .map(event_from_row)
                    .collect()
                }

                async fn purge_events(&self, before: Millis, limit: usize) -> Result<u64, StoreError> {
                    // Each shard's oldest rows (its range of `outbox_pending`), those of them
                    // behind both cursors: a look at `limit` rows a shard, not a scan of every
                    // row kept, and a shard that lags holds back only its own rows.
                    let mut purged = 0;
                    for shard in 0..SHARDS {
                        purged += sqlx::query(
                            "DELETE FROM outbox WHERE position IN (SELECT w.position FROM \
                             (SELECT position, xact, occurred_at FROM outbox WHERE shard = $1 \
                              ORDER BY xact, position LIMIT $2) w \
                             JOIN outbox_shards s ON s.shard = $1 WHERE w.occurred_at < $3 \
                             AND (w.xact, w.position) <= (s.sent_xact, s.sent_position) \
                             AND (w.xact, w.position) <= (s.projected_xact, s.projected_position))",
                        )
                        .bind(shard)
                        .bind(limit as i64)
                        .bind(before)
                        .execute(&self.write)
                        .await
                        .map_err(classify)?
                        .rows_affected();
                    }
                    sqlx::query("DELETE FROM signal_requests WHERE received_at < $1")
                        .bind(before)
                        .execute(&self.write)
                        .await
                        .map_err(classify)?;
                    Ok(purged)
                }

            }
        }
    };
}

pub(crate) use {event_cols, impl_event_store};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            let s = shard_of("default", &format!("w-{i}"));
            assert!((0..SHARDS).contains(&s));
            seen.insert(s);
        }
        assert_eq!(
            seen.len(),
            SHARDS as usize,
            "200 subjects reach every shard"
        );
        // A fixed value: a change of the hash would move subjects between shards mid-flight.
        assert_eq!(shard_of("default", "w-1"), 13);
        assert_eq!(
            fnv1a(*b"a"),
            0xe40c_292c,
            "the published FNV-1a test vector"
        );
    }
}
