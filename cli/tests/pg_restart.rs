//! Restarting PostgreSQL in the middle of a run. A test binary of its own, so that no other
//! test runs while the database is down.

mod common;

use common::orders::{Placing, worker, workload};
use common::spawn_at;
use martix_sdk::Client;
use std::process::Command;
use std::time::Instant;

/// Restarts the local PostgreSQL cluster (Debian's `pg_ctlcluster`, as root).
fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a local Debian PostgreSQL cluster (/etc/postgresql); this test restarts it")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .expect("a PostgreSQL version under /etc/postgresql");
    let status = Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            &version,
            "main",
            "restart",
            "--mode",
            "fast",
        ])
        .status()
        .expect("run pg_ctlcluster (as root)");
    assert!(status.success(), "pg_ctlcluster restart failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_postgres_mid_run_loses_no_order() {
    drop(martix_tests::postgres_store().await);
    let url = martix_tests::postgres_url();
    let engine = spawn_at(
        &["server", "--insecure", "--database-url", &url],
        "127.0.0.1:0",
    );
    let queue = martix_tests::unique("pgrestart");
    let mut w = worker(&url, &engine.grpc, &queue, &[]);
    let load = workload(&url, 150, 5).await;
    let client = Client::connect(engine.grpc.clone()).await.unwrap();
    let placing = Placing::start(client, &queue, &load, 16);
    placing.reach(40).await;
    let restarted = Instant::now();
    tokio::task::spawn_blocking(restart_postgres).await.unwrap();
    let outcomes = placing.finish().await;
    // The workload's pool reconnects too.
    load.verify("restart PostgreSQL", &outcomes, restarted.elapsed())
        .await;
    let _ = w.kill();
    let _ = w.wait();
}
