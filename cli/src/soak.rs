//! `martix bench --soak N`: the reference workload run for a long time with a short retention,
//! printing each minute the throughput and the size of every engine table, so that one can
//! see whether the database stays the same size under steady load (retention of closed runs,
//! purge of the outbox and of signal request ids).

use crate::bench::{self, Target};
use anyhow::Result;
use martix_engine::Engine;
use martix_engine::events::Pools;
use std::time::Duration;

/// The engine's tables whose size a soak prints.
const TABLES: [&str; 7] = [
    "executions",
    "history_events",
    "activity_tasks",
    "timers",
    "outbox",
    "signal_requests",
    "breakers",
];

/// Runs `sagas` sagas at `concurrency`, a minute a line, on `engine`'s store.
pub(crate) async fn run(
    engine: &Engine,
    target: &Target<'_>,
    run: &str,
    concurrency: usize,
    sagas: u64,
    retention: Duration,
) -> Result<()> {
    println!(
        "soak: {sagas} sagas at C = {concurrency}, closed runs and events kept {}",
        humantime::format_duration(retention)
    );
    let header: Vec<String> = TABLES
        .iter()
        .map(|t| format!("{:>26}", format!("{t} rows/MiB")))
        .collect();
    println!(
        "{:>4} {:>8} {:>9} {}",
        "min",
        "sagas",
        "sagas/s",
        header.join("")
    );
    let mut done = 0;
    let mut minute = 0;
    while done < sagas {
        minute += 1;
        let level = bench::closed_loop(
            target,
            &format!("{run}-soak-{minute}"),
            concurrency,
            sagas - done,
            Duration::from_secs(60),
        )
        .await?;
        done += level.sagas;
        let sizes = table_sizes(&engine.store().pools()).await?;
        let cells: Vec<String> = sizes
            .iter()
            .map(|(rows, bytes)| {
                format!("{:>26}", format!("{rows}/{:.1}", *bytes as f64 / 1048576.0))
            })
            .collect();
        println!(
            "{minute:>4} {done:>8} {:>9.1} {}",
            level.sagas_per_second,
            cells.join("")
        );
    }
    Ok(())
}

/// Rows and bytes (with indexes) of each of `TABLES`: PostgreSQL's statistics (estimates,
/// refreshed by autovacuum) and relation sizes; SQLite's counts and its pages (`dbstat` is not
/// compiled in everywhere: the whole file, shown on each row).
async fn table_sizes(pools: &Pools) -> Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    match pools {
        Pools::Postgres { read, .. } => {
            for t in TABLES {
                let (rows, bytes): (i64, i64) = sqlx::query_as(
                    "SELECT GREATEST(n_live_tup, 0)::BIGINT, pg_total_relation_size(relid)::BIGINT \
                     FROM pg_stat_user_tables WHERE relname = $1 AND schemaname = current_schema()",
                )
                .bind(t)
                .fetch_optional(read)
                .await?
                .unwrap_or((0, 0));
                out.push((rows, bytes));
            }
        }
        Pools::Sqlite { read, .. } => {
            let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                .fetch_one(read)
                .await?;
            let size: i64 = sqlx::query_scalar("PRAGMA page_size")
                .fetch_one(read)
                .await?;
            for t in TABLES {
                let rows: i64 =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {t}")))
                        .fetch_one(read)
                        .await?;
                out.push((rows, pages * size));
            }
        }
    }
    Ok(out)
}
