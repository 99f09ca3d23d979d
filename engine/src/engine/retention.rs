//! Retention: closed runs are deleted, with their histories, once they have been closed longer
//! than their namespace's retention (7 days unless set). A loop on every node deletes them in
//! small batches (`PURGE_BATCH` runs, one short transaction each, oldest first), a few batches a
//! namespace per pass, so that the work never holds up the hot path and a backlog (a first
//! start on an old database, a shortened retention) drains over several passes. Nodes that
//! delete at once meet only on rows another already deleted.
//!
//! What a deleted run leaves: nothing of it (describe and history answer NOT_FOUND), and its
//! workflow id is free again: an id-reuse policy looks at the runs kept, as Temporal's does.
//! A run continued as new is deleted by its own close time; the runs after it hold their own
//! histories. A reset copies the history it keeps into the new run, so the old run is not
//! needed by it either.

use super::Engine;
use crate::error::EngineError;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Runs deleted in one transaction.
const PURGE_BATCH: usize = 500;
/// Batches per namespace and pass.
const MAX_BATCHES_PER_PASS: usize = 20;

impl Engine {
    /// One pass of the retention over every namespace; returns how many runs it deleted.
    pub async fn purge_closed_runs(&self) -> Result<u64, EngineError> {
        let mut total = 0;
        for ns in self.store.namespace_settings().await? {
            let now = self.now();
            let before = now - ns.retention_ms;
            for _ in 0..MAX_BATCHES_PER_PASS {
                let n = self
                    .store
                    .purge_closed_runs(&ns.name, before, PURGE_BATCH)
                    .await?;
                total += n;
                self.metrics.runs_purged(n);
                if (n as usize) < PURGE_BATCH {
                    break;
                }
            }
            let oldest = self.store.oldest_closed_run(&ns.name).await?;
            self.metrics.oldest_closed_run(&ns.name, oldest, now);
        }
        if total > 0 {
            tracing::debug!(runs = total, "closed runs past their retention deleted");
        }
        // Breakers and pollers of workers gone quiet for a day: worker identities come and go.
        self.store
            .purge_breakers(self.now() - crate::store::BREAKER_REPORT_KEPT_MS)
            .await?;
        self.store
            .purge_pollers(self.now() - super::breakers::POLLERS_KEPT_MS)
            .await?;
        Ok(total)
    }
}

/// Runs the retention every `retention_interval` until `shutdown` is cancelled.
///
/// # Cancel safety
/// Stopping between batches loses nothing: each batch is one transaction.
pub async fn run(engine: Arc<Engine>, shutdown: CancellationToken) {
    let every = engine.config().retention_interval;
    loop {
        if let Err(e) = engine.purge_closed_runs().await {
            tracing::warn!(error = %e, "retention pass failed; will retry");
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
}
