//! The `martix` binary as a user runs it: start, serve, stop on a signal, keep state.

use martix_proto::v1 as pb;
mod common;

use common::{free_addr, http_get, spawn, spawn_with, terminate};
use std::process::{Command, Stdio};
use std::time::Duration;

async fn start_order(grpc: &str, id: &str) -> String {
    let mut client = pb::workflow_service_client::WorkflowServiceClient::connect(grpc.to_owned())
        .await
        .expect("connect to the engine");
    client
        .start_workflow(pb::StartWorkflowRequest {
            workflow_id: id.into(),
            workflow_type: "order".into(),
            task_queue: "orders".into(),
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner()
        .run_id
}

async fn describe(grpc: &str, id: &str) -> pb::DescribeWorkflowResponse {
    let mut client = pb::workflow_service_client::WorkflowServiceClient::connect(grpc.to_owned())
        .await
        .unwrap();
    client
        .describe_workflow(pb::DescribeWorkflowRequest {
            namespace: String::new(),
            execution: Some(pb::WorkflowExecution {
                workflow_id: id.into(),
                run_id: String::new(),
            }),
        })
        .await
        .expect("describe")
        .into_inner()
}

#[tokio::test]
async fn dev_keeps_state_in_its_file_across_a_graceful_restart() {
    let dir = std::env::temp_dir().join(format!("martix-dev-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("dev.db");
    let db = db.to_str().unwrap();
    let first = spawn(&["dev", "--no-worker", "--db", db]);
    let run_id = start_order(&first.grpc, "order-1042").await;
    let status = terminate(first);
    assert!(status.success(), "graceful stop exits 0, got {status}");

    let second = spawn(&["dev", "--no-worker", "--db", db]);
    let d = describe(&second.grpc, "order-1042").await;
    let info = d.info.unwrap();
    assert_eq!(
        info.execution.unwrap().run_id,
        run_id,
        "the run survived the restart"
    );
    assert_eq!(info.status, pb::WorkflowStatus::Running as i32);
    assert!(
        d.pending_workflow_task.is_some(),
        "its workflow task is still there"
    );
    terminate(second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn server_runs_on_postgres() {
    // Make sure the test database exists, then run the real server on it.
    drop(martix_tests::postgres_store().await);
    let url = martix_tests::postgres_url();
    let server = spawn(&["server", "--insecure", "--database-url", &url]);
    let id = martix_tests::unique("order");
    start_order(&server.grpc, &id).await;
    assert_eq!(
        describe(&server.grpc, &id).await.info.unwrap().status,
        pb::WorkflowStatus::Running as i32
    );
    assert!(terminate(server).success());
}

#[test]
fn a_bad_database_url_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args([
            "migrate",
            "--database-url",
            "mysql://root:hunter2@localhost/x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported database URL"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password must not be printed: {err}"
    );
}

#[test]
fn a_catalogue_file_with_a_bad_line_is_refused_and_nothing_is_imported() {
    let dir = std::env::temp_dir().join(format!("martix-catalog-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("adapters.db").display());
    let catalog = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_martix"))
            .arg("catalog")
            .args(args)
            .args(["--database-url", &url])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let file = dir.join("prices.csv");
    let path = file.to_str().unwrap();
    std::fs::write(
        &file,
        "sku,price,currency,tax_class\nmug,15.00,EUR,standard\nbook,9,50,EUR,reduced\n",
    )
    .unwrap();
    let (ok, _, err) = catalog(&["import", path]);
    assert!(!ok);
    assert_eq!(
        err.trim_end(),
        format!(
            "martix: {path}: line 3: line has 5 fields, expected 4 \
             (sku,price,currency,tax_class); nothing imported"
        )
    );
    let (ok, listed, _) = catalog(&["list"]);
    assert!(ok);
    assert_eq!(listed.lines().count(), 1, "only the header: {listed}");

    std::fs::write(
        &file,
        "sku,price,currency,tax_class\nmug,15.00,EUR,standard\nbook,9.5,EUR,reduced\n",
    )
    .unwrap();
    let (ok, out, err) = catalog(&["import", path]);
    assert!(ok, "{err}");
    assert_eq!(out.trim_end(), format!("2 prices imported from {path}"));
    let (_, listed, _) = catalog(&["list"]);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["book", "9.50", "EUR", "reduced"],
            ["mug", "15.00", "EUR", "standard"]
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn the_demo_places_orders_and_the_ledger_adds_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["dev", "--ephemeral", "--demo", "200"])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stdout}\n{stderr}");
    assert!(stdout.contains("completed"), "{stdout}");
    assert!(stdout.contains("200 orders in"), "{stdout}");
    assert!(stdout.contains("money and stock add up"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // A quiet demo: the read model's relay, the adapters and the engine's writer share one
    // SQLite file without a warning (a lock wait is not one).
    let loud: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        loud.is_empty(),
        "{} warnings or errors:\n{stderr}",
        loud.len()
    );
}

#[tokio::test]
async fn server_and_worker_processes_run_an_order_on_postgres_with_tokens() {
    drop(martix_tests::postgres_store().await);
    let url = martix_tests::postgres_url();
    let metrics = free_addr();
    let server = spawn_with(
        &["server", "--database-url", &url, "--metrics-addr", &metrics],
        "127.0.0.1:0",
        &[("MARTIX_AUTH_SECRET", SECRET)],
    );
    let client_token = issue_token(&["client"], "default");
    let queue = martix_tests::unique("orders");
    // The worker holds the engine's secret and no token: it signs its own worker tokens.
    let mut worker = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["worker", "--database-url", &url, "--address", &server.grpc])
        .args(["--task-queue", &queue])
        .env("MARTIX_AUTH_SECRET", SECRET)
        .env_remove("MARTIX_TOKEN")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let adapters = martix_activities::ReferenceAdapters::connect(&url)
        .await
        .unwrap();
    let prefix = martix_tests::unique("proc").replace('-', "");
    adapters
        .seed_stock(&format!("{prefix}-sku"), 5)
        .await
        .unwrap();
    let order = martix_order_contract::Order {
        order_id: format!("{prefix}-order-1"),
        customer_id: format!("cust-{prefix}"),
        currency: "EUR".into(),
        items: vec![martix_order_contract::Item {
            sku: format!("{prefix}-sku"),
            qty: 2,
            unit_price_cents: 1000,
        }],
        shipping_address: martix_order_contract::Address {
            country: "FR".into(),
            ..Default::default()
        },
        discount_code: None,
        placed_by: None,
    };
    // Without a token the engine refuses, and nothing is started.
    let anonymous = martix_sdk::Client::connect(server.grpc.clone())
        .await
        .unwrap();
    let refused = anonymous
        .start_workflow(
            martix_sdk::StartOptions::new("order", &order.order_id, &queue),
            &order,
        )
        .await
        .err()
        .expect("refused");
    assert!(
        refused.to_string().contains("missing credentials"),
        "{refused}"
    );
    let client = martix_sdk::Client::connect_with(
        &server.grpc,
        &martix_sdk::ConnectOptions::default().token(&client_token),
    )
    .await
    .unwrap();
    let run = client
        .start_workflow(
            martix_sdk::StartOptions::new("order", &order.order_id, &queue),
            &order,
        )
        .await
        .unwrap();
    let outcome: martix_order_contract::OrderOutcome =
        tokio::time::timeout(Duration::from_secs(60), run.result())
            .await
            .expect("the worker process runs the order")
            .unwrap();
    assert_eq!(outcome.status, "completed");
    for c in adapters.check_ledger(&prefix, &[&order]).await.unwrap() {
        assert!(c.ok, "{}: {}", c.what, c.figures);
    }
    // Metrics: behind a token on the HTTP port, open on the metrics port (for Prometheus).
    let (status, _) = http_get(&server.http, "/metrics");
    assert_eq!(status, 401);
    let (status, text) = http_get(&metrics, "/metrics");
    assert_eq!(status, 200, "{text}");
    let started = text
        .lines()
        .find_map(|l| l.strip_prefix("martix_workflows_started_total{workflow_type=\"order\"} "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(started.is_some_and(|n| n >= 1), "{text}");
    assert_eq!(http_get(&metrics, "/readyz").0, 404);
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(terminate(server).success());
}

/// Guards the commit budget: the reference workload at concurrency 1 costs the engine seven
/// write transactions per completed saga (start, the first workflow task, then one per step:
/// pricing, reserve, charge, ship, notify, each result recorded with the decision the worker
/// made ahead); a declined order's compensation adds its steps. Figures of speed come from
/// `martix bench` itself, not from this test.
#[test]
fn bench_reports_the_commit_budget_of_the_reference_saga() {
    let out = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args([
            "bench",
            "--concurrency",
            "1",
            "--sagas",
            "20",
            "--warmup",
            "5",
        ])
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let levels: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let level = &levels[0];
    assert_eq!(level["sagas"], 20);
    assert_eq!(level["errors"], 0);
    assert_eq!(level["completed"], 18, "orders 9 and 19 are declined");
    assert_eq!(level["compensated"], 2);
    let writes = level["write_transactions_per_saga"].as_f64().unwrap();
    assert!(
        (7.0..=7.5).contains(&writes),
        "write transactions per saga: {writes}"
    );
}

/// The scale checks run and report their figures (small sizes: the figures of the full sizes
/// are in docs/performance.md).
#[test]
fn bench_scale_checks_run_and_report() {
    let out = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["bench", "--scale", "history,queues,timers"])
        .args([
            "--scale-activities",
            "30",
            "--scale-timers",
            "200",
            "--sagas",
            "40",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("history: ") && text.contains("(30 activities)"),
        "{text}"
    );
    assert!(
        text.contains("10 task queues x 8 workers: 40 sagas") && text.contains(", 0 errors"),
        "{text}"
    );
    assert!(
        text.contains("timers: 200 workflows waiting on a timer"),
        "{text}"
    );
}

fn cli(grpc: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["workflow", "--address", grpc])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn operators_drive_and_inspect_orders_from_the_cli() {
    let dir = std::env::temp_dir().join(format!("martix-cli-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("dev.db");
    let dev = spawn(&["dev", "--db", db.to_str().unwrap()]);
    let g = dev.grpc.as_str();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let adapters = rt
        .block_on(martix_activities::ReferenceAdapters::connect(&format!(
            "sqlite://{}",
            db.display()
        )))
        .unwrap();
    rt.block_on(adapters.seed_stock("cli-sku", 10)).unwrap();
    let order = r#"{"order_id":"cli-1","customer_id":"cust-1","currency":"EUR",
        "items":[{"sku":"cli-sku","qty":2,"unit_price_cents":1500}],
        "shipping_address":{"country":"FR"}}"#;
    let (code, out, err) = cli(
        g,
        &[
            "start",
            "--type",
            "order",
            "--id",
            "cli-1",
            "--input",
            order,
            "--task-queue",
            "orders",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("started cli-1 run "), "{out}");

    let (code, out, err) = cli(g, &["result", "cli-1", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("status  completed") && out.contains("\"charged_cents\":3600"),
        "{out}"
    );

    let (code, out, _) = cli(g, &["list", "--status", "completed", "--type", "order"]);
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().starts_with("WORKFLOW ID"));
    assert!(out.contains("cli-1") && out.contains("completed"), "{out}");

    let (code, out, _) = cli(g, &["describe", "cli-1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("status     completed") && out.contains("type       order"),
        "{out}"
    );

    // The saga answers its `status` query, closed as it is (a worker replays it).
    let (code, out, err) = cli(g, &["query", "cli-1", "status"]);
    assert_eq!(code, 0, "{out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["step"], "done", "{out}");
    assert_eq!(status["status"], "completed", "{out}");
    assert_eq!(status["charged_cents"], 3600, "{out}");
    let (code, _, err) = cli(g, &["query", "cli-1", "progress"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no query handler 'progress' (it answers: status)"),
        "{err}"
    );

    let (code, out, _) = cli(g, &["history", "cli-1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("workflowExecutionStarted") && out.contains("workflowExecutionCompleted"),
        "{out}"
    );
    // The JSON history is what the replay tester reads: the order saga replays it.
    let (code, json, _) = cli(g, &["history", "cli-1", "--output", "json"]);
    assert_eq!(code, 0);
    // With the ids of its run, which the replayer gives the workflow's code.
    let exported: martix_sdk::WorkflowHistory = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (exported.namespace.as_str(), exported.workflow_id.as_str()),
        ("default", "cli-1")
    );
    assert!(!exported.run_id.is_empty() && exported.first_run_id == exported.run_id);
    let mut replayer = martix_sdk::Replayer::new();
    replayer.workflow(martix_workflows::OrderSaga, martix_workflows::order);
    replayer
        .replay_json(&json)
        .expect("the exported history replays");

    // Signal, cancel and terminate a run nobody works on.
    let (code, _, _) = cli(
        g,
        &[
            "start",
            "--type",
            "idle",
            "--id",
            "cli-2",
            "--task-queue",
            "nobody",
        ],
    );
    assert_eq!(code, 0);
    // Starting a running id again returns the running run (idempotent start).
    let (code, again, _) = cli(
        g,
        &[
            "start",
            "--type",
            "idle",
            "--id",
            "cli-2",
            "--task-queue",
            "nobody",
        ],
    );
    assert_eq!(code, 0);
    assert!(
        again.starts_with("cli-2 is already running: run "),
        "{again}"
    );
    // Nobody polls queue `nobody`: describe and stuck say so.
    let (code, out, _) = cli(g, &["describe", "cli-2"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("queue      nobody (no worker has polled it in the last minute)"),
        "{out}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["stuck", "--address", g, "--older-than", "0s"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.contains("cli-2") && out.contains("no worker has polled queue 'nobody'"),
        "{out}"
    );
    let (code, out, _) = cli(g, &["signal", "cli-2", "poke", "--input", "{\"n\":1}"]);
    assert_eq!((code, out.trim()), (0, "signal poke sent to cli-2"));
    let (code, _, _) = cli(g, &["cancel", "cli-2", "--reason", "test"]);
    assert_eq!(code, 0);
    let (code, out, _) = cli(g, &["describe", "cli-2", "--output", "json"]);
    assert_eq!(code, 0);
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["cancelRequested"], true);
    let (code, _, _) = cli(g, &["terminate", "cli-2", "--reason", "stuck"]);
    assert_eq!(code, 0);
    let (code, out, _) = cli(g, &["result", "cli-2"]);
    assert_eq!(
        code, 1,
        "a terminated workflow's result is a failure: {out}"
    );
    assert!(out.contains("terminated") && out.contains("stuck"), "{out}");

    // Orders at a glance: place one that cannot ship, then show its steps and ledger.
    let order_cmd = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_martix"))
            .args(["order", "--address", g])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = order_cmd(&[
        "place",
        "--id",
        "cli-o1",
        "--customer",
        "cust-9",
        "--item",
        "cli-sku:1:250",
        "--country",
        "ZZ",
        "--wait",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("order cli-o1 placed") && out.contains("\"status\":\"compensated\""),
        "{out}"
    );
    let (_, compensated) = cli_out(g, &["list", "--status", "compensated"]);
    assert!(
        compensated.contains("cli-o1") && compensated.contains("compensated"),
        "{compensated}"
    );
    let db_url = format!("sqlite://{}", db.display());
    // The read model follows the histories asynchronously: wait for the terminal event.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (code, out) = loop {
        let (code, out) = order_cmd(&["show", "cli-o1", "--database-url", &db_url]);
        if out.contains("order.compensated ") || std::time::Instant::now() > deadline {
            break (code, out);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, 0, "{out}");
    for needle in [
        "read model: compensated (step order.compensated)",
        "refunded 2.50 EUR",
        "order cli-o1: compensated",
        "reserve_inventory    completed (attempt 1)",
        "charge_payment       completed (attempt 1)",
        "create_shipment      failed (attempt 1): cannot ship order cli-o1 to country ZZ (Unshippable)",
        "refund_payment       completed",
        "release_inventory    completed",
        "ledger:",
        "charge        2.50 EUR",
        "refund        2.50 EUR",
    ] {
        assert!(out.contains(needle), "missing '{needle}' in:\n{out}");
    }
    insta::assert_snapshot!("order_show_unshippable", redact(&out));
    let (_, describe) = cli_out(g, &["describe", "cli-o1"]);
    insta::assert_snapshot!("describe_table", redact(&describe));
    let (_, describe_json) = cli_out(g, &["describe", "cli-o1", "--output", "json"]);
    insta::assert_snapshot!("describe_json", redact(&sorted_json(&describe_json)));
    let (code, _) = order_cmd(&["place", "--id", "x", "--customer", "c", "--item", "bad"]);
    assert_eq!(code, 1, "a malformed --item is refused");

    // Batch forms: counted first, applied with --yes, paced, with a summary.
    for i in 1..=3 {
        let id = format!("batch-{i}");
        let (code, _, _) = cli(
            g,
            &[
                "start",
                "--type",
                "idle",
                "--id",
                &id,
                "--task-queue",
                "nobody",
            ],
        );
        assert_eq!(code, 0);
    }
    // Pause and resume, one and by query: shown by list, describe and stuck.
    let (code, out, err) = cli(g, &["pause", "batch-1", "--reason", "stock count"]);
    assert_eq!((code, out.as_str()), (0, "batch-1 paused\n"), "{err}");
    let (code, out, _) = cli(g, &["pause", "--prefix", "batch-", "--reason", "audit"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("3 running workflows match ids starting with 'batch-'"),
        "{out}"
    );
    let (_, listed, _) = cli(g, &["list", "--prefix", "batch-", "--status", "paused"]);
    assert_eq!(listed.lines().count(), 2, "one paused: {listed}");
    assert!(
        listed.contains("batch-1") && listed.contains("paused"),
        "{listed}"
    );
    let (_, described, _) = cli(g, &["describe", "batch-1"]);
    assert!(
        described.contains("paused     since ") && described.contains(": stock count"),
        "{described}"
    );
    let stuck = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["stuck", "--address", g, "--older-than", "0s"])
        .output()
        .unwrap();
    let stuck = String::from_utf8_lossy(&stuck.stdout);
    assert!(
        stuck.contains("paused since ") && stuck.contains(": stock count"),
        "{stuck}"
    );
    let (code, out, _) = cli(
        g,
        &["pause", "--prefix", "batch-", "--reason", "audit", "--yes"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("3 done, 0 failed"), "{out}");
    let (_, listed, _) = cli(g, &["list", "--prefix", "batch-", "--status", "paused"]);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    let (code, out, _) = cli(g, &["resume", "--prefix", "batch-", "--yes"]);
    assert_eq!(code, 0);
    assert!(out.contains("3 done, 0 failed"), "{out}");
    let (_, listed, _) = cli(g, &["list", "--prefix", "batch-", "--status", "paused"]);
    assert_eq!(listed.lines().count(), 1, "none paused: {listed}");
    let (code, out, _) = cli(g, &["resume", "batch-2"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "batch-2 was not paused (unchanged)\n")
    );
    let (code, _, err) = cli(g, &["pause", "batch-2", "--reason", " "]);
    assert_eq!(code, 1);
    assert!(err.contains("reason") && err.lines().count() == 1, "{err}");

    // Stock by hand: set, listed, refused out of range (nothing changes).
    let stock = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_martix"))
            .args(["stock", args[0]])
            .args(["--database-url", &format!("sqlite://{}", db.display())])
            .args(&args[1..])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = stock(&["set", "cli-stock-1", "7"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "cli-stock-1: 7 available\n"),
        "{err}"
    );
    let (code, _, err) = stock(&["set", "cli-stock-1", "--", "-1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("stock must be 0 to") && err.lines().count() == 1,
        "{err}"
    );
    let (_, listed, _) = stock(&["list", "--prefix", "cli-stock"]);
    let row: Vec<&str> = listed
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row, ["cli-stock-1", "7", "0", "0"], "{listed}");

    // Breakers: held open and released by hand, listed.
    let breaker = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_martix"))
            .args(["breaker", "--address", g])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = breaker(&["open", "payment", "--reason", "gateway maintenance"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "breaker payment held open\n"),
        "{err}"
    );
    let (_, listed, _) = breaker(&["list"]);
    assert!(
        listed.contains("payment  open, 0 task(s) parked behind it")
            && listed.contains(": gateway maintenance"),
        "{listed}"
    );
    let (code, _, err) = breaker(&["close", "payment", "--reason", ""]);
    assert_eq!(code, 1);
    assert!(err.contains("reason") && err.lines().count() == 1, "{err}");
    let (code, out, _) = breaker(&["release", "payment"]);
    assert_eq!(code, 0, "{out}");
    let (_, listed, _) = breaker(&["list"]);
    assert!(!listed.contains("held"), "{listed}");

    // Schedules: created, described, triggered (a run of the order saga's reconciliation),
    // listed and deleted.
    let schedule = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_martix"))
            .args(["schedule", "--address", g])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = schedule(&[
        "create",
        "cli-nightly",
        "--cron",
        "0 2 * * *",
        "--timezone",
        "Europe/Paris",
        "--type",
        "reconcile_payments",
        "--queue",
        "orders",
        "--input",
        r#"{"hours": 26}"#,
        "--overlap",
        "buffer-one",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("schedule cli-nightly created; next run at "),
        "{out}"
    );
    let (_, out, _) = schedule(&["describe", "cli-nightly"]);
    assert!(
        out.contains("when       0 2 * * * (Europe/Paris)")
            && out.contains(r#"starts     reconcile_payments on queue orders with {"hours":26}"#)
            && out.contains("overlap    buffer_one")
            && out.contains("counts     0 started, 0 skipped, 0 missed"),
        "{out}"
    );
    let (code, out, err) = schedule(&["trigger", "cli-nightly"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("started: cli-nightly-"), "{out}");
    let (_, out, _) = schedule(&["list"]);
    assert!(
        out.contains("cli-nightly") && out.contains("0 2 * * * (Europe/Paris)"),
        "{out}"
    );
    let (code, _, err) = schedule(&[
        "create", "cli-bad", "--cron", "0 2 * *", "--type", "t", "--queue", "q",
    ]);
    assert_eq!(code, 1);
    assert!(err.lines().count() == 1 && err.contains("cron"), "{err}");
    let (code, out, _) = schedule(&["delete", "cli-nightly"]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "schedule cli-nightly deleted (the runs it started go on)\n"
        )
    );

    let (code, out, _) = cli(
        g,
        &["terminate", "--prefix", "batch-", "--reason", "cleanup"],
    );
    assert_eq!(code, 0);
    assert!(
        out.starts_with("3 running workflows match ids starting with 'batch-'"),
        "{out}"
    );
    let (_, listed, _) = cli(g, &["list", "--prefix", "batch-", "--status", "running"]);
    assert_eq!(
        listed.lines().count(),
        4,
        "nothing changed without --yes: {listed}"
    );
    let (code, out, _) = cli(
        g,
        &[
            "terminate",
            "--prefix",
            "batch-",
            "--reason",
            "cleanup",
            "--yes",
            "--rate",
            "50",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 done, 0 failed"), "{out}");
    let (_, listed, _) = cli(g, &["list", "--prefix", "batch-", "--status", "terminated"]);
    assert_eq!(listed.lines().count(), 4, "{listed}");

    // Failures exit 1 with one line saying what failed; usage errors exit 2.
    let (code, _, err) = cli(g, &["terminate", "no-such-order", "--reason", "x"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "martix: workflow 'no-such-order' not found in namespace 'default'\n"
    );
    let (code, _, _) = cli(g, &["retry"]);
    assert_eq!(code, 2);
    let (code, _, err) = cli(
        g,
        &[
            "start",
            "--type",
            "order",
            "--id",
            "x",
            "--input",
            "{not json",
            "--task-queue",
            "orders",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.starts_with("martix: --input is not valid JSON: ") && err.lines().count() == 1,
        "{err}"
    );

    terminate(dev);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What an operator sees for a workflow id that does not exist: one line naming the id and
/// the namespace, exit 1, and no backtrace even when the environment asks for them.
#[test]
fn an_unknown_workflow_is_one_line_on_stderr_even_with_backtraces_on() {
    let dev = spawn(&["dev", "--ephemeral", "--no-worker"]);
    let created = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["namespace", "--address", &dev.grpc, "create", "shop"])
        .output()
        .unwrap();
    assert!(created.status.success());
    for (args, namespace) in [
        (&["describe", "o-17"][..], "default"),
        (&["result", "o-17", "--wait"][..], "default"),
        (&["history", "o-17", "--follow"][..], "default"),
        (&["cancel", "o-17", "--reason", "x"][..], "default"),
        (
            &["signal", "o-17", "poke", "--namespace", "shop"][..],
            "shop",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_martix"))
            .args(["workflow", "--address", &dev.grpc])
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
        assert_eq!(
            err,
            format!("martix: workflow 'o-17' not found in namespace '{namespace}'\n"),
            "{args:?}"
        );
    }
    // Asked for, the causes and the backtrace follow the line.
    let out = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args([
            "workflow",
            "--address",
            &dev.grpc,
            "describe",
            "o-17",
            "--debug",
        ])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.starts_with("martix: workflow 'o-17' not found in namespace 'default'\n")
            && err.contains("backtrace"),
        "{err}"
    );
    terminate(dev);
}

/// Nothing listening: the line says where and what to do.
#[test]
fn an_engine_that_is_not_running_is_one_line_saying_how_to_start_it() {
    let addr = common::free_addr();
    let out = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["workflow", "--address", &format!("http://{addr}"), "list"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "martix: cannot reach the engine at http://{addr}: connection refused \
             (start it with 'martix dev')\n"
        )
    );
}

/// `martix probe` (the container image's health check): 0 while the engine is ready, 1 with
/// one line once nothing answers.
#[test]
fn probe_says_ready_while_the_engine_runs_and_fails_in_one_line_once_it_stopped() {
    let dev = spawn(&["dev", "--ephemeral"]);
    let http = dev.http.clone();
    let probe = |path: &str| {
        Command::new(env!("CARGO_BIN_EXE_martix"))
            .args(["probe", "--http-addr", &http, "--path", path])
            .output()
            .unwrap()
    };
    let ready = probe("/readyz");
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );
    let missing = probe("/no-such-page");
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        format!(
            "martix: http://{http}/no-such-page answered 404: not ready (the engine's log says why)\n"
        )
    );
    assert!(terminate(dev).success());
    let gone = probe("/readyz");
    assert_eq!(gone.status.code(), Some(1));
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(
        err.starts_with(&format!("martix: cannot ask http://{http}/readyz: "))
            && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn stuck_lists_orders_whose_payment_keeps_failing_with_why() {
    let switch = std::env::temp_dir().join(format!("martix-outage-{}", uuid_like()));
    std::fs::write(&switch, b"out").unwrap();
    let dir = std::env::temp_dir().join(format!("martix-stuck-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("dev.db");
    let dev = spawn_with(
        &["dev", "--db", db.to_str().unwrap()],
        "127.0.0.1:0",
        &[("MARTIX_PAYMENT_OUTAGE_FILE", switch.to_str().unwrap())],
    );
    let g = dev.grpc.as_str();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let adapters = rt
        .block_on(martix_activities::ReferenceAdapters::connect(&format!(
            "sqlite://{}",
            db.display()
        )))
        .unwrap();
    rt.block_on(adapters.seed_stock("stuck-sku", 5)).unwrap();
    let order = r#"{"order_id":"stuck-1","customer_id":"cust-1","currency":"EUR",
        "items":[{"sku":"stuck-sku","qty":1,"unit_price_cents":100}],
        "shipping_address":{"country":"FR"}}"#;
    let (code, _, err) = cli(
        g,
        &[
            "start",
            "--type",
            "order",
            "--id",
            "stuck-1",
            "--input",
            order,
            "--task-queue",
            "orders",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let stuck = || {
        let out = Command::new(env!("CARGO_BIN_EXE_martix"))
            .args([
                "stuck",
                "--address",
                g,
                "--older-than",
                "0s",
                "--min-attempts",
                "3",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The payment gateway is out: the charge is retried, attempt after attempt.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let report = loop {
        // Until then it may be listed for another reason (no poll of its queue noted yet).
        let report = stuck();
        if report.contains("stuck-1") && report.contains("charge_payment") {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never listed as stuck: {report}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The payment breaker opens after 5 failures; operators see it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, d) = cli_out(g, &["describe", "stuck-1"]);
        // Its charge then waits parked behind the breaker, attempts no longer counted.
        if d.contains("open breaker: payment on worker")
            && d.contains("parked behind the payment breaker since")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the open breaker is never shown: {d}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let now_stuck = stuck();
    assert!(
        now_stuck.contains("breaker open: payment"),
        "stuck says why"
    );
    assert!(
        now_stuck.contains("parked behind the payment breaker"),
        "{now_stuck}"
    );
    assert!(
        report.contains("outage") || report.contains("CircuitOpen"),
        "says why: {report}"
    );
    // `order show` says where the running saga is, from the saga itself (100 cents and 20%
    // French VAT).
    let show = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["order", "--address", g, "show", "stuck-1"])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout).into_owned();
    assert!(
        show.contains("saga now: at payment, total 120 cents, charged 0 cents"),
        "{show}"
    );
    // The operator resets it to its first task: a new run replays from the start (its
    // activities' keys name the run it reset, so the reservation is found, not made twice).
    let (code, out, err) = cli(
        g,
        &[
            "reset",
            "stuck-1",
            "--to",
            "first",
            "--reason",
            "gateway swap",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("stuck-1 reset: new run "), "{out}");
    // The gateway comes back: the order completes and is no longer stuck.
    std::fs::remove_file(&switch).unwrap();
    let (code, out, _) = cli(g, &["result", "stuck-1", "--wait"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"status\":\"completed\""), "{out}");
    assert!(stuck().contains("no stuck workflows"));
    let totals = rt.block_on(adapters.stock("stuck-sku")).unwrap();
    assert_eq!(
        (totals.available, totals.reserved, totals.shipped),
        (4, 0, 1),
        "reserved once, shipped once"
    );
    terminate(dev);
    let _ = std::fs::remove_dir_all(&dir);
}

fn cli_out(grpc: &str, args: &[&str]) -> (i32, String) {
    let (code, out, _) = cli(grpc, args);
    (code, out)
}

/// Replaces what changes from run to run (UUIDs, times, durations) with placeholders, for
/// snapshots.
/// `text` (JSON) with every object's keys in order: maps (search attributes) print in no
/// fixed order.
fn sorted_json(text: &str) -> String {
    fn sort(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.sort_keys();
                m.values_mut().for_each(sort);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(sort),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(text).expect("JSON");
    sort(&mut v);
    serde_json::to_string_pretty(&v).expect("JSON")
}

fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let is_hex = |c: char| c.is_ascii_hexdigit();
    while i < chars.len() {
        // A UUID: 8-4-4-4-12 hex digits.
        let uuid = i + 36 <= chars.len()
            && chars[i..i + 36].iter().enumerate().all(|(k, c)| match k {
                8 | 13 | 18 | 23 => *c == '-',
                _ => is_hex(*c),
            });
        if uuid {
            out.push_str("[uuid]");
            i += 36;
            continue;
        }
        // A time: 2026-11-24T16:59:01Z, or 2026-11-24T16:59:01.123+00:00 as in proto3 JSON.
        let time = i + 20 <= chars.len()
            && chars[i..i + 4].iter().all(char::is_ascii_digit)
            && chars[i + 4] == '-'
            && chars[i + 10] == 'T'
            && chars[i + 13] == ':';
        if time {
            let mut j = i + 19;
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                j += 1;
            }
            let zone = if j < chars.len() && chars[j] == 'Z' {
                Some(1)
            } else if chars[j..].iter().take(6).collect::<String>() == "+00:00" {
                Some(6)
            } else {
                None
            };
            if let Some(len) = zone {
                out.push_str("[time]");
                i = j + len;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

const SECRET: &str = "process-test-secret-0123456789abcdef";

/// `martix token issue` as an operator runs it.
fn issue_token(roles: &[&str], namespace: &str) -> String {
    common::issue_token(SECRET, roles, namespace)
}

#[test]
fn server_refuses_to_start_without_a_key_unless_insecure() {
    let out = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args([
            "server",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
        ])
        .env_remove("MARTIX_AUTH_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no token key"), "{err}");
    assert!(err.contains("--insecure"), "{err}");
}

#[test]
fn serving_without_authentication_beyond_loopback_needs_the_override() {
    let dir = std::env::temp_dir().join(format!("martix-remote-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("dev.db");
    let refused = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["dev", "--no-worker", "--db", db.to_str().unwrap()])
        .args(["--grpc-addr", "0.0.0.0:0", "--http-addr", "127.0.0.1:0"])
        .env_remove("MARTIX_ALLOW_UNAUTHENTICATED_REMOTE")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--grpc-addr 0.0.0.0:0 is reachable from other machines")
            && err.contains("--allow-unauthenticated-remote"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!db.exists(), "nothing was created: the check comes first");

    let insecure = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args([
            "server",
            "--insecure",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
        ])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "[::]:0"])
        .env_remove("MARTIX_AUTH_SECRET")
        .env_remove("MARTIX_ALLOW_UNAUTHENTICATED_REMOTE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&insecure.stderr);
    assert!(err.contains("--http-addr [::]:0 is reachable"), "{err}");

    let allowed = common::spawn_with(
        &[
            "dev",
            "--no-worker",
            "--ephemeral",
            "--allow-unauthenticated-remote",
        ],
        "0.0.0.0:0",
        &[],
    );
    assert!(allowed.grpc.contains(":"), "it serves: {}", allowed.grpc);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_cli_needs_a_token_of_the_right_role() {
    drop(martix_tests::postgres_store().await);
    let url = martix_tests::postgres_url();
    let server = spawn_with(
        &["server", "--database-url", &url],
        "127.0.0.1:0",
        &[("MARTIX_AUTH_SECRET", SECRET)],
    );
    let list = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_martix"));
        cmd.args(["workflow", "list", "--address", &server.grpc])
            .env_remove("MARTIX_TOKEN");
        if let Some(t) = token {
            cmd.env("MARTIX_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = list(None);
    assert!(
        !ok && err.starts_with("martix: missing credentials") && err.lines().count() == 1,
        "{err}"
    );
    let client = issue_token(&["client"], "default");
    let (ok, err) = list(Some(&client));
    assert!(
        !ok && err.starts_with("martix: permission denied") && err.lines().count() == 1,
        "{err}"
    );
    assert!(
        !err.contains(&client),
        "the token must not be printed: {err}"
    );
    let operator = issue_token(&["operator"], "default");
    let (ok, err) = list(Some(&operator));
    assert!(ok, "{err}");
    // The common errors, each one line, as a person reads them (exit code, then stderr).
    let nowhere = format!("http://{}", common::free_addr());
    let long_id = "a".repeat(300);
    let mut seen = String::new();
    for (what, address, token, args) in [
        (
            "not found",
            &server.grpc,
            Some(&operator),
            &["workflow", "describe", "o-404"][..],
        ),
        (
            "unauthenticated",
            &server.grpc,
            None,
            &["workflow", "list"][..],
        ),
        (
            "permission denied",
            &server.grpc,
            Some(&client),
            &["workflow", "list"][..],
        ),
        (
            "unreachable",
            &nowhere,
            Some(&operator),
            &["workflow", "list"][..],
        ),
        (
            "bad input (engine)",
            &server.grpc,
            Some(&operator),
            &[
                "workflow",
                "start",
                "--type",
                "t",
                "--id",
                &long_id,
                "--input",
                "{}",
                "--task-queue",
                "q",
            ][..],
        ),
        (
            "bad input (CLI)",
            &server.grpc,
            Some(&operator),
            &[
                "workflow",
                "start",
                "--type",
                "t",
                "--id",
                "x",
                "--input",
                "{bad",
                "--task-queue",
                "q",
            ][..],
        ),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_martix"));
        cmd.args(args)
            .args(["--address", address])
            .env_remove("MARTIX_TOKEN")
            .env("RUST_BACKTRACE", "1");
        if let Some(t) = token {
            cmd.env("MARTIX_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr)
            .replace(&nowhere, "http://ADDR")
            .replace(&server.grpc, "http://ENGINE");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        seen.push_str(&format!(
            "{what}: exit {:?}\n{err}",
            out.status.code().unwrap()
        ));
    }
    insta::assert_snapshot!("common_errors", seen);
    assert!(terminate(server).success());
}

/// The open loop starts sagas on schedule and measures from the intended start.
#[test]
fn bench_runs_an_open_loop_at_a_fixed_rate() {
    let out = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["bench", "--rate", "40", "--sagas", "40", "--warmup", "5"])
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let levels: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let level = &levels[0];
    assert_eq!(level["rate"], 40.0);
    assert_eq!(level["sagas"], 40);
    assert_eq!(level["errors"], 0);
    assert_eq!(
        level["compensated"], 4,
        "orders 9, 19, 29 and 39 are declined"
    );
    // 40 sagas scheduled over about one second.
    let seconds = level["seconds"].as_f64().unwrap();
    assert!((0.9..30.0).contains(&seconds), "{seconds} s");
}

/// The files in deploy/ set only variables `martix` reads: a renamed flag fails here, not in
/// someone's cluster. (The dashboard's metrics are checked by the engine's metrics tests.)
#[test]
fn deploy_files_set_only_settings_that_exist() {
    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    fn names(text: &str, prefix: &str) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for (i, _) in text.match_indices(prefix) {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
        out
    }
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut all = Vec::new();
    files(&deploy, &mut all);
    let text: String = all
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let help: String = ["server", "worker", "migrate", "probe", "dev"]
        .iter()
        .map(|c| {
            let out = Command::new(env!("CARGO_BIN_EXE_martix"))
                .args([c, "--help"])
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        })
        .collect();
    let settings = names(&text, "MARTIX_");
    assert!(settings.len() >= 8, "{settings:?}");
    for s in &settings {
        assert!(
            help.contains(&format!("env: {s}")),
            "deploy/ sets {s}, which martix does not read"
        );
    }
}

/// A new `martix dev` database holds a starter catalogue with stock, so an order placed by hand
/// completes; `--empty` leaves it empty, and the same order fails for want of stock.
#[test]
fn dev_seeds_a_starter_catalogue_unless_empty() {
    let place = |grpc: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_martix"))
            .args(["order", "--address", grpc, "place", "--id", "hand-1"])
            .args(["--customer", "c-1", "--item", "mug:2:1500", "--wait"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dev = spawn(&["dev", "--ephemeral"]);
    let out = place(&dev.grpc);
    assert!(out.contains("\"status\":\"completed\""), "{out}");
    assert!(terminate(dev).success());
    let dev = spawn(&["dev", "--ephemeral", "--empty"]);
    let out = place(&dev.grpc);
    assert!(
        out.contains("\"status\":\"failed\"") && out.contains("OutOfStock"),
        "{out}"
    );
    assert!(terminate(dev).success());
}

/// A client that knows nothing of Martix but what server reflection tells (Python's
/// grpcio-reflection, which speaks `v1alpha` and asks for each file's imports) lists the
/// services and calls one. The interpreter is MARTIX_TEST_PYTHON (scripts/test.sh makes one
/// with grpcio from scripts/py-requirements.txt), else `python3`.
#[test]
fn a_python_client_lists_and_calls_through_reflection() {
    let python = std::env::var("MARTIX_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let dev = spawn(&["dev", "--ephemeral"]);
    let placed = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["order", "--address", &dev.grpc, "place", "--id", "refl-1"])
        .args(["--customer", "c-1", "--item", "mug:1:1500", "--wait"])
        .output()
        .unwrap();
    assert!(placed.status.success());
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/reflect_call.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(dev.grpc.trim_start_matches("http://"))
        .args(["martix.v1.WorkflowService", "DescribeWorkflow"])
        .arg(r#"{"namespace": "default", "execution": {"workflowId": "refl-1"}}"#)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}; run scripts/test.sh, or pip install -r scripts/py-requirements.txt"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{python} {}: {stdout}{} (scripts/test.sh installs grpcio into a virtualenv)",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    for service in [
        "martix.v1.WorkflowService",
        "martix.v1.WorkerService",
        "martix.v1.OrderService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            stdout.contains(&format!("service {service}\n")),
            "{service}: {stdout}"
        );
    }
    let response = stdout.lines().last().unwrap_or_default();
    assert!(
        response.contains(r#""workflowId": "refl-1""#)
            && response.contains(r#""status": "WORKFLOW_STATUS_COMPLETED""#),
        "{response}"
    );
    assert!(terminate(dev).success());
}

/// The replay gate on a real engine: histories exported to files replay against this build,
/// from the files and from the engine; an edited history (a step that is not the code's) is
/// named with its first differing step and fails the command.
#[test]
fn replay_passes_on_real_runs_and_fails_on_a_changed_one() {
    let dev = spawn(&["dev", "--ephemeral"]);
    let placed = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["order", "--address", &dev.grpc, "place", "--id", "replay-1"])
        .args(["--customer", "c-1", "--item", "mug:1:1500", "--wait"])
        .output()
        .unwrap();
    assert!(placed.status.success());
    let dir = std::env::temp_dir().join(format!("martix-replay-{}", uuid_like()));
    let martix = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_martix"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = martix(&[
        "workflow",
        "export",
        "--address",
        &dev.grpc,
        "--type",
        "order",
        "--to",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(
        (code, out.trim()),
        (0, &*format!("exported 1 histories to {}", dir.display()))
    );
    let (code, out) = martix(&["replay", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("replayed 1: 1 as they ran, 0 not"), "{out}");
    let (code, out) = martix(&["replay", "--address", &dev.grpc, "--type", "order"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 as they ran, 0 not"), "{out}");
    // A history whose first step is not the code's first step.
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"price_order\""));
    std::fs::write(
        &file,
        text.replacen("\"price_order\"", "\"quote_order\"", 1),
    )
    .unwrap();
    let (code, out) = martix(&["replay", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL ") && out.contains("replay-1"), "{out}");
    assert!(
        out.contains("price_order") || out.contains("quote_order"),
        "{out}"
    );
    assert!(out.contains("0 as they ran, 1 not"), "{out}");
    terminate(dev);
    let _ = std::fs::remove_dir_all(&dir);
}
