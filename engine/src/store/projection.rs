//! The projection host's contract: what a domain implements to keep a read model of the
//! events its workflows publish, and the database handles the store lends it. It lives with the
//! store because the store calls it, inside the transaction that moves the projection cursor;
//! `events::projection` re-exports it for domains.
//!
//! A domain registers its projections when the server is built ([`crate::Server::projection`]);
//! the relay then feeds each one, in outbox order per subject, the events it
//! [`takes`](Projection::takes), inside the transaction that moves the host's cursor past them,
//! so a read model never holds half a batch. Delivery is at least once: a rebuild sets the
//! cursor back, and a batch may come again after a crash between the fold and the commit
//! rolled both back. A projection therefore skips an event it already holds (by
//! [`StoredEvent::event_id`]).

use super::event::StoredEvent;

/// Runs `$body` once per backend with `$c` bound to the connection a [`ProjectionTx`] lends
/// (`&mut PgConnection` or `&mut SqliteConnection`) and `$lock` to that backend's row-lock
/// clause (`" FOR UPDATE"`, or `""` on SQLite, whose one writer needs none): a domain writes
/// its SQL once when the text is the same on both.
///
/// ```ignore
/// martix_engine::on_projection_conn!(tx, |c, lock| {
///     sqlx::query(&format!("SELECT n FROM counts WHERE id = $1{lock}")).bind(id).fetch_optional(&mut *c).await
/// })
/// ```
#[macro_export]
macro_rules! on_projection_conn {
    ($tx:expr, |$c:ident, $lock:ident| $body:expr) => {
        match $tx {
            $crate::events::ProjectionTx::Postgres($c) => {
                let $lock = " FOR UPDATE";
                $body
            }
            $crate::events::ProjectionTx::Sqlite($c) => {
                let $lock = "";
                let _ = $lock;
                $body
            }
        }
    };
}

/// Runs `$body` once per backend with `$p` bound to the read pool of [`Pools`] (`&PgPool` or
/// `&SqlitePool`), for a domain's reads of its read model.
#[macro_export]
macro_rules! on_read_pool {
    ($pools:expr, |$p:ident| $body:expr) => {
        match $pools {
            $crate::events::Pools::Postgres { read: $p, .. } => $body,
            $crate::events::Pools::Sqlite { read: $p, .. } => $body,
        }
    };
}

/// A transaction (or, for reads, a connection) of the store's database, lent to a
/// projection. Each backend's SQL dialect is the projection's business.
pub enum ProjectionTx<'a> {
    /// PostgreSQL.
    Postgres(&'a mut sqlx::PgConnection),
    /// SQLite (`martix dev`).
    Sqlite(&'a mut sqlx::SqliteConnection),
}

/// The store's connection pools, for a domain's reads of its own tables (its read model) and
/// its migrations.
#[derive(Clone, Debug)]
pub enum Pools {
    /// PostgreSQL: one pool for writes and one for reads (today the same pool).
    Postgres {
        write: sqlx::PgPool,
        read: sqlx::PgPool,
    },
    /// SQLite: the one write connection, and the readers.
    Sqlite {
        write: sqlx::SqlitePool,
        read: sqlx::SqlitePool,
    },
}

/// Why a projection could not fold a batch. The host folds the batch's events one by one after
/// a failure, and sets aside (logged) one that fails alone, so one bad event never holds up the
/// others; a failure of the database itself pauses the relay instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The database failed (connection lost, conflict, ...): the batch is tried again.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The event cannot be folded (its body is not what the projection expects).
    #[error("{0}")]
    Rejected(String),
}

/// A read model that a domain keeps from the events its workflows publish.
#[async_trait::async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name, for logs and the rebuild.
    fn name(&self) -> &'static str;

    /// Whether this projection folds `event` (by workflow type, event type, ...).
    fn takes(&self, event: &StoredEvent) -> bool;

    /// The workflow types whose events it may take, so that a rebuild reads only their
    /// histories; empty (the default): any type.
    fn workflow_types(&self) -> &[&'static str] {
        &[]
    }

    /// Folds `batch` (events it takes, in outbox order per subject) inside the transaction
    /// that moves the host's cursor past them. Skips events it holds already (by id).
    async fn fold(
        &self,
        tx: &mut ProjectionTx<'_>,
        batch: &[&StoredEvent],
    ) -> Result<(), ProjectionError>;

    /// Empties the read model (the first step of a rebuild, in the rebuild's transaction).
    async fn clear(&self, tx: &mut ProjectionTx<'_>) -> Result<(), ProjectionError>;

    /// The migrations of the read model's tables, tracked under the projection's own name; the
    /// server applies them before it serves (see `events::projection::migrate`).
    fn migrations(&self) -> Option<&'static martix_migrate::Owner> {
        None
    }
}

/// The projections a server runs, in registration order.
pub type Projections = std::sync::Arc<[std::sync::Arc<dyn Projection>]>;

/// A failure of the database pauses the relay (the batch is folded again later); only an event
/// the projection rejects is set aside.
impl From<ProjectionError> for super::StoreError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::Database(e) => match super::classify(e) {
                super::StoreError::Corrupt(why) => super::StoreError::Unavailable(why),
                other => other,
            },
            ProjectionError::Rejected(why) => super::StoreError::Corrupt(why),
        }
    }
}
