//! Crash tests on the real `martix` binary and the real PostgreSQL: whatever dies, every order
//! reaches a terminal state, no payment is charged twice, and the ledger adds up. Each prints
//! its sagas, time to recover and duplicate charges (run with `-- --nocapture`).

mod common;

use common::orders::{Placing, worker, workload};
use common::{free_addr, signal, spawn_at, wait_exit};
use martix_sdk::Client;
use std::process::Command;
use std::time::{Duration, Instant};

fn kill(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_engine_mid_run_loses_no_order_and_charges_none_twice() {
    drop(martix_tests::postgres_store().await);
    let url = martix_tests::postgres_url();
    let addr = free_addr();
    let engine = spawn_at(&["server", "--insecure", "--database-url", &url], &addr);
    let queue = martix_tests::unique("crash");
    let mut w = worker(&url, &engine.grpc, &queue, &[]);
    let load = workload(&url, 300, 300).await;
    // A lazy channel reconnects to the restarted engine on the same address.
    let client = Client::from_channel(
        tonic::transport::Endpoint::from_shared(engine.grpc.clone())
            .unwrap()
            .connect_lazy(),
    );
    let placing = Placing::start(client, &queue, &load, 32);
    let killed_at = placing.reach(100).await;
    signal(&engine, "-KILL");
    wait_exit(engine);
    let restarted = Instant::now();
    let _engine = spawn_at(&["server", "--insecure", "--database-url", &url], &addr);
    let outcomes = placing.finish().await;
    load.verify(
        &format!("kill -9 the engine after {killed_at} orders, then restart it"),
        &outcomes,
        restarted.elapsed(),
    )
    .await;
    let _ = w.kill();
    let _ = w.wait();
}

/// Two workers on one engine; `disrupt` is done to the first once some orders are through.
async fn orders_survive_a_worker(disrupt: &str, n: usize) {
    drop(martix_tests::postgres_store().await);
    let url = martix_tests::postgres_url();
    let engine = spawn_at(
        &["server", "--insecure", "--database-url", &url],
        "127.0.0.1:0",
    );
    let queue = martix_tests::unique("crash");
    let slow = [("MARTIX_FAULT_SHIPPING_LATENCY_MS", "50")];
    let mut first = worker(&url, &engine.grpc, &queue, &slow);
    let mut second = worker(&url, &engine.grpc, &queue, &slow);
    let load = workload(&url, n, n as u64).await;
    let client = Client::connect(engine.grpc.clone()).await.unwrap();
    let placing = Placing::start(client, &queue, &load, 16);
    placing.reach(n / 4).await;
    let disrupted = Instant::now();
    match disrupt {
        "kill" => kill(first.id(), "-KILL"),
        "stop" => {
            // Longer than the saga's 10 s start-to-close timeout: its attempts are retried on
            // the second worker, and its late answers after SIGCONT are refused.
            kill(first.id(), "-STOP");
            tokio::time::sleep(Duration::from_secs(12)).await;
            kill(first.id(), "-CONT");
        }
        other => panic!("unknown disruption {other}"),
    }
    let outcomes = placing.finish().await;
    load.verify(
        &format!("{disrupt} a worker"),
        &outcomes,
        disrupted.elapsed(),
    )
    .await;
    for w in [&mut first, &mut second] {
        let _ = w.kill();
        let _ = w.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_engine_nodes_loses_no_order() {
    drop(martix_tests::postgres_store().await);
    let url = martix_tests::postgres_url();
    let mut nodes: Vec<_> = (0..3)
        .map(|_| {
            spawn_at(
                &["server", "--insecure", "--database-url", &url],
                "127.0.0.1:0",
            )
        })
        .collect();
    let queue = martix_tests::unique("crash");
    // One worker behind each node.
    let mut workers: Vec<_> = nodes
        .iter()
        .map(|n| worker(&url, &n.grpc, &queue, &[]))
        .collect();
    let load = workload(&url, 150, 3).await;
    // Orders are placed through a node that stays up.
    let client = Client::connect(nodes[0].grpc.clone()).await.unwrap();
    let placing = Placing::start(client, &queue, &load, 24);
    placing.reach(40).await;
    let victim = nodes.remove(1);
    let killed = Instant::now();
    signal(&victim, "-KILL");
    wait_exit(victim);
    let outcomes = placing.finish().await;
    load.verify(
        "kill -9 one of three engine nodes",
        &outcomes,
        killed.elapsed(),
    )
    .await;
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_while_its_activities_run_loses_no_order() {
    orders_survive_a_worker("kill", 120).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_is_overtaken_and_its_late_answers_refused() {
    orders_survive_a_worker("stop", 120).await;
}
