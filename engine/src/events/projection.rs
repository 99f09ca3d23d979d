//! The projection host's side in `events`: the contract (defined with the store, which calls
//! it, and re-exported here for domains), the order a rebuild folds in, and the projections'
//! own migrations.

use crate::store::StoreError;
pub use crate::store::event::StoredEvent;
pub use crate::store::projection::{Pools, Projection, ProjectionError, ProjectionTx, Projections};

/// Sorts events of a rebuild into folding order (per namespace and subject, by sequence) and
/// drops repeats (one id twice, as a reset copies history): what a fold of the histories sees.
pub fn rebuild_order(events: &mut Vec<StoredEvent>) {
    events.sort_by(|a, b| {
        (
            &a.namespace,
            &a.subject,
            a.sequence,
            a.occurred_at,
            &a.event_id,
        )
            .cmp(&(
                &b.namespace,
                &b.subject,
                b.sequence,
                b.occurred_at,
                &b.event_id,
            ))
    });
    let mut seen = std::collections::HashSet::new();
    events.retain(|e| seen.insert(e.event_id.clone()));
}

/// Applies `owner`'s migrations to the database `pools` reach, one migrator at a time.
pub async fn migrate(pools: &Pools, owner: &martix_migrate::Owner) -> Result<(), StoreError> {
    let failed = |e: sqlx::migrate::MigrateError| {
        StoreError::Unavailable(format!("migrations of {} failed: {e}", owner.name))
    };
    match pools {
        Pools::Postgres { write, .. } => {
            let mut conn = write.acquire().await.map_err(crate::store::classify)?;
            // Closed after, whatever happens: a session that may hold the migrations' lock
            // never goes back to the pool (an error midway, or this future dropped).
            conn.close_on_drop();
            martix_migrate::apply_postgres(&mut conn, owner)
                .await
                .map_err(failed)
        }
        Pools::Sqlite { write, .. } => {
            let mut conn = write.acquire().await.map_err(crate::store::classify)?;
            martix_migrate::apply_sqlite(&mut conn, owner)
                .await
                .map_err(failed)
        }
    }
}
