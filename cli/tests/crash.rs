//! Crash tests on the real `martix` binary and the real PostgreSQL: whatever dies, every order
//! reaches a terminal state, no payment is charged twice, and the ledger adds up.

mod common;

use common::{free_addr, signal, spawn_at, wait_exit};
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

/// Starts (idempotently: the id is the order's) and waits for an order, through engine
/// restarts: calls that fail because the engine is down are retried.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_engine_mid_run_loses_no_order_and_charges_none_twice() {
    drop(martix_tests::postgres_store().await);
    let url = martix_tests::postgres_url();
    let addr = free_addr();
    let engine = spawn_at(&["server", "--database-url", &url], &addr);
    let endpoint = engine.grpc.clone();
    let queue = martix_tests::unique("crash");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["worker", "--database-url", &url, "--address", &endpoint])
        .args(["--task-queue", &queue])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    let adapters = ReferenceAdapters::connect(&url).await.unwrap();
    let prefix = martix_tests::unique("crash").replace('-', "");
    for s in 0..4 {
        adapters
            .seed_stock(&format!("{prefix}-sku-{s}"), 100_000)
            .await
            .unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(300);
    let orders: Vec<_> = (0..300)
        .map(|i| random_order(&mut rng, &prefix, i, 4))
        .collect();
    let client = Client::from_channel(
        tonic::transport::Endpoint::from_shared(endpoint.clone())
            .unwrap()
            .connect_lazy(),
    );

    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let runner = {
        let (client, queue, orders, done) =
            (client.clone(), queue.clone(), orders.clone(), done.clone());
        let work = futures::stream::iter(orders.into_iter().map(move |o| {
            let (client, queue, done) = (client.clone(), queue.clone(), done.clone());
            async move {
                let outcome = place(&client, &queue, &o).await;
                done.fetch_add(1, Ordering::SeqCst);
                outcome
            }
        }))
        .buffer_unordered(32)
        .collect::<Vec<_>>();
        tokio::spawn(work)
    };
    // Kill the engine in the middle of the run.
    while done.load(Ordering::SeqCst) < 100 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no progress before the crash"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(&engine, "-KILL");
    wait_exit(engine);
    let killed_at = done.load(Ordering::SeqCst);
    let restarted = Instant::now();
    let engine = spawn_at(&["server", "--database-url", &url], &addr);
    let outcomes = runner.await.unwrap();
    let recovered = restarted.elapsed();

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
        "crash test: {} sagas, engine killed after {killed_at}, all terminal {:.1} s after the restart, duplicate charges found: {duplicates}",
        outcomes.len(),
        recovered.as_secs_f64()
    );
    assert_eq!(outcomes.len(), 300, "every order reached a terminal state");
    for c in adapters.check_ledger(&prefix, &completed).await.unwrap() {
        assert!(c.ok, "{}: {}", c.what, c.figures);
    }
    let _ = worker.kill();
    let _ = worker.wait();
    drop(engine);
}

/// Two workers on one engine; `disrupt` is done to the first once some orders are through.
async fn orders_survive_a_worker(disrupt: &str, n: usize) {
    drop(martix_tests::postgres_store().await);
    let url = martix_tests::postgres_url();
    let engine = spawn_at(&["server", "--database-url", &url], "127.0.0.1:0");
    let endpoint = engine.grpc.clone();
    let queue = martix_tests::unique("crash");
    let worker = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_martix"))
            .args(["worker", "--database-url", &url, "--address", &endpoint])
            .args(["--task-queue", &queue])
            .env("MARTIX_FAULT_SHIPPING_LATENCY_MS", "50")
            .env("HOSTNAME", name)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = worker("first");
    let mut second = worker("second");
    let adapters = ReferenceAdapters::connect(&url).await.unwrap();
    let prefix = martix_tests::unique("crash").replace('-', "");
    for s in 0..4 {
        adapters
            .seed_stock(&format!("{prefix}-sku-{s}"), 100_000)
            .await
            .unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    let orders: Vec<_> = (0..n)
        .map(|i| random_order(&mut rng, &prefix, i, 4))
        .collect();
    let client = Client::connect(endpoint.clone()).await.unwrap();
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
    while done.load(Ordering::SeqCst) < n / 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = first.id().to_string();
    let disrupted = Instant::now();
    match disrupt {
        "kill" => {
            assert!(
                Command::new("kill")
                    .args(["-KILL", &pid])
                    .status()
                    .unwrap()
                    .success()
            );
        }
        "stop" => {
            // Longer than the saga's 10 s start-to-close timeout: its attempts are retried on
            // the second worker, and its late answers after SIGCONT are refused.
            assert!(
                Command::new("kill")
                    .args(["-STOP", &pid])
                    .status()
                    .unwrap()
                    .success()
            );
            tokio::time::sleep(Duration::from_secs(12)).await;
            assert!(
                Command::new("kill")
                    .args(["-CONT", &pid])
                    .status()
                    .unwrap()
                    .success()
            );
        }
        other => panic!("unknown disruption {other}"),
    }
    let outcomes = runner.await.unwrap();
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
        "crash test ({disrupt} a worker): {} sagas, all terminal {:.1} s after the disruption, duplicate charges found: {duplicates}",
        outcomes.len(),
        disrupted.elapsed().as_secs_f64()
    );
    assert_eq!(outcomes.len(), n);
    for c in adapters.check_ledger(&prefix, &completed).await.unwrap() {
        assert!(c.ok, "{}: {}", c.what, c.figures);
    }
    for w in [&mut first, &mut second] {
        let _ = w.kill();
        let _ = w.wait();
    }
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_engine_nodes_loses_no_order() {
    drop(martix_tests::postgres_store().await);
    let url = martix_tests::postgres_url();
    let nodes: Vec<_> = (0..3)
        .map(|_| spawn_at(&["server", "--database-url", &url], "127.0.0.1:0"))
        .collect();
    let queue = martix_tests::unique("crash");
    // One worker behind each node.
    let mut workers: Vec<_> = nodes
        .iter()
        .map(|n| {
            Command::new(env!("CARGO_BIN_EXE_martix"))
                .args(["worker", "--database-url", &url, "--address", &n.grpc])
                .args(["--task-queue", &queue])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let adapters = ReferenceAdapters::connect(&url).await.unwrap();
    let prefix = martix_tests::unique("crash").replace('-', "");
    for s in 0..4 {
        adapters
            .seed_stock(&format!("{prefix}-sku-{s}"), 100_000)
            .await
            .unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let orders: Vec<_> = (0..150)
        .map(|i| random_order(&mut rng, &prefix, i, 4))
        .collect();
    // Clients start orders through the nodes that stay up.
    let client = Client::connect(nodes[0].grpc.clone()).await.unwrap();
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
        .buffer_unordered(24)
        .collect::<Vec<_>>()
    };
    let runner = tokio::spawn(work);
    while done.load(Ordering::SeqCst) < 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut nodes = nodes;
    let victim = nodes.remove(1);
    let killed = Instant::now();
    signal(&victim, "-KILL");
    wait_exit(victim);
    let outcomes = runner.await.unwrap();
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
        "crash test (kill 1 of 3 engine nodes): {} sagas, all terminal {:.1} s after the kill, duplicate charges found: {duplicates}",
        outcomes.len(),
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(outcomes.len(), 150);
    for c in adapters.check_ledger(&prefix, &completed).await.unwrap() {
        assert!(c.ok, "{}: {}", c.what, c.figures);
    }
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
