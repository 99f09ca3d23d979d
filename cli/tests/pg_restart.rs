//! Restarting PostgreSQL in the middle of a run. A test binary of its own, so that no other
//! test runs while the database is down.

mod common;

use common::spawn_at;
use futures::StreamExt;
use martix_activities::ReferenceAdapters;
use martix_activities::model::random_order;
use martix_sdk::{Client, StartOptions};
use martix_workflows::OrderOutcome;
use rand::SeedableRng;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

async fn place(client: &Client, queue: &str, order: &martix_activities::Order) -> OrderOutcome {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let attempt = async {
            let run = client
                .start_workflow(StartOptions::new("order", &order.order_id, queue), order)
                .await?;
            run.result::<OrderOutcome>().await
        }
        .await;
        match attempt {
            Ok(o) => return o,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "order {} never ended: {e}",
                    order.order_id
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Restarts the local PostgreSQL cluster (Debian's `pg_ctlcluster`).
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
    let engine = spawn_at(&["server", "--database-url", &url], "127.0.0.1:0");
    let queue = martix_tests::unique("pgrestart");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["worker", "--database-url", &url, "--address", &engine.grpc])
        .args(["--task-queue", &queue])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let adapters = ReferenceAdapters::connect(&url).await.unwrap();
    let prefix = martix_tests::unique("pgr").replace('-', "");
    for s in 0..4 {
        adapters
            .seed_stock(&format!("{prefix}-sku-{s}"), 100_000)
            .await
            .unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let orders: Vec<_> = (0..150)
        .map(|i| random_order(&mut rng, &prefix, i, 4))
        .collect();
    let client = Client::connect(engine.grpc.clone()).await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let work = {
        let (client, queue, orders, done) =
            (client.clone(), queue.clone(), orders.clone(), done.clone());
        futures::stream::iter(orders.into_iter().map(move |o| {
            let (client, queue, done) = (client.clone(), queue.clone(), done.clone());
            async move {
                let outcome = place(&client, &queue, &o).await;
                done.fetch_add(1, Ordering::SeqCst);
                outcome
            }
        }))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
    };
    let runner = tokio::spawn(work);
    while done.load(Ordering::SeqCst) < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let restarted = Instant::now();
    tokio::task::spawn_blocking(restart_postgres).await.unwrap();
    let outcomes = runner.await.unwrap();
    let adapters = ReferenceAdapters::connect(&url).await.unwrap();
    let completed: Vec<_> = orders
        .iter()
        .filter(|o| {
            outcomes
                .iter()
                .any(|x| x.order_id == o.order_id && x.status == "completed")
        })
        .collect();
    let ledger = adapters.ledger(&prefix).await.unwrap();
    let duplicates = ledger.values().filter(|(_, charges)| *charges > 1).count();
    println!(
        "crash test (restart PostgreSQL): {} sagas, all terminal {:.1} s after the restart began, duplicate charges found: {duplicates}",
        outcomes.len(),
        restarted.elapsed().as_secs_f64()
    );
    assert_eq!(outcomes.len(), 150);
    for c in adapters.check_ledger(&prefix, &completed).await.unwrap() {
        assert!(c.ok, "{}: {}", c.what, c.figures);
    }
    let _ = worker.kill();
    let _ = worker.wait();
    drop(engine);
}
