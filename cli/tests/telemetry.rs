//! Observability of real processes: one trace per order across a worker restart (received by
//! an in-test OTLP collector), and structured logs that never hold a token.

mod common;

use common::orders::worker;
use common::{spawn_with, terminate};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A span as received, with the `service.instance.id` of the process that sent it.
#[derive(Clone, Debug)]
struct Received {
    span: Span,
    service: String,
    instance: String,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Received>>>);

fn text(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match &a.value {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some(s.clone()),
            Some(AnyValue {
                value: Some(any_value::Value::IntValue(i)),
            }) => Some(i.to_string()),
            _ => None,
        })
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let attrs = rs.resource.map(|r| r.attributes).unwrap_or_default();
            let service = text(&attrs, "service.name").unwrap_or_default();
            let instance = text(&attrs, "service.instance.id").unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.push(Received {
                        span,
                        service: service.clone(),
                        instance: instance.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn collector() -> (Collector, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = Collector::default();
    let service = TraceServiceServer::new(c.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (c, format!("http://{addr}"))
}

// Multi-threaded: the collector must answer while the test waits on a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_one_trace_across_a_worker_restart() {
    drop(martix_tests::postgres_store().await);
    let url = martix_tests::postgres_url();
    let (collector, endpoint) = collector().await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let server = spawn_with(
        &["server", "--insecure", "--database-url", &url],
        "127.0.0.1:0",
        &otel,
    );
    let prefix = martix_tests::unique("trace").replace('-', "");
    let sku = format!("{prefix}-sku");
    let adapters = martix_activities::ReferenceAdapters::connect(&url)
        .await
        .unwrap();
    adapters.seed_stock(&sku, 10).await.unwrap();
    let queue = martix_tests::unique("orders");
    // The first worker is slow at payment and dies in the middle of it.
    let mut slow_env = otel.to_vec();
    slow_env.push(("MARTIX_FAULT_PAYMENT_LATENCY_MS", "30000"));
    let mut first = worker(&url, &server.grpc, &queue, &slow_env);
    let order_id = format!("{prefix}-order");
    let placed = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args([
            "order",
            "place",
            "--address",
            &server.grpc,
            "--id",
            &order_id,
        ])
        .args(["--customer", "cust-1", "--item", &format!("{sku}:1:1500")])
        .args(["--task-queue", &queue])
        .envs(otel.iter().copied())
        .output()
        .unwrap();
    assert!(
        placed.status.success(),
        "{}",
        String::from_utf8_lossy(&placed.stderr)
    );
    // Wait until the payment attempt runs on the first worker, then kill it.
    let client = martix_sdk::Client::connect(server.grpc.clone())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = client.handle(&order_id).describe().await.unwrap();
        if d.pending_activities.iter().any(|a| {
            a.activity_type == "charge_payment"
                && a.state == martix_sdk::client::PendingActivityState::Started
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "payment never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // its spans so far are exported
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = worker(&url, &server.grpc, &queue, &otel);
    let outcome: martix_order_contract::OrderOutcome =
        tokio::time::timeout(Duration::from_secs(60), client.handle(&order_id).result())
            .await
            .expect("the second worker finishes the order")
            .unwrap();
    assert_eq!(outcome.status, "completed");
    // Graceful stops flush what is left.
    let _ = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    second.wait().unwrap();
    let (code, body) = common::http_get(&server.http, &format!("/v1/orders/{order_id}"));
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(terminate(server).success());

    let spans = collector.0.lock().unwrap().clone();
    // The workers' spans of the order (the cli's call span names the workflow too).
    let of_order: Vec<&Received> = spans
        .iter()
        .filter(|r| text(&r.span.attributes, "workflow_id").as_deref() == Some(&order_id))
        .filter(|r| r.service != "martix-cli")
        .collect();
    let root = spans
        .iter()
        .find(|r| r.span.name == "order.place")
        .unwrap_or_else(|| {
            let names: HashSet<(&str, &str)> = spans
                .iter()
                .map(|r| (r.service.as_str(), r.span.name.as_str()))
                .collect();
            let start: Vec<_> = spans
                .iter()
                .filter(|r| r.span.name.contains("start_workflow"))
                .map(|r| (r.span.parent_span_id.clone(), r.span.trace_id.clone()))
                .collect();
            panic!("the client's span is missing; got {names:?} {start:?}")
        });
    assert!(
        root.span.parent_span_id.is_empty(),
        "the client span is the root"
    );
    let trace = &root.span.trace_id;
    // The SDK's client span of the call, then the engine's.
    let call = spans
        .iter()
        .find(|r| r.span.name == "start_workflow" && &r.span.trace_id == trace)
        .expect("the SDK's start_workflow span in the client's trace");
    assert_eq!(call.span.parent_span_id, root.span.span_id);
    assert_eq!(call.service, "martix-cli");
    let start = spans
        .iter()
        .find(|r| r.span.name == "martix.v1.start_workflow" && &r.span.trace_id == trace)
        .expect("the engine's StartWorkflow span in the client's trace");
    assert_eq!(start.span.parent_span_id, call.span.span_id);
    assert_eq!(start.service, "martix-engine");
    assert!(!of_order.is_empty());
    for r in &of_order {
        assert_eq!(&r.span.trace_id, trace, "{} left the trace", r.span.name);
        assert_eq!(
            r.span.parent_span_id, start.span.span_id,
            "{} is a child of the start",
            r.span.name
        );
        assert_eq!(r.service, "martix-worker");
        assert!(text(&r.span.attributes, "run_id").is_some());
    }
    let workers: HashSet<&str> = of_order.iter().map(|r| r.instance.as_str()).collect();
    assert_eq!(workers.len(), 2, "spans of both workers: {workers:?}");
    let activities: HashMap<(String, String), usize> = of_order
        .iter()
        .filter(|r| r.span.name == "activity")
        .fold(HashMap::new(), |mut m, r| {
            let key = (
                text(&r.span.attributes, "activity_type").unwrap(),
                text(&r.span.attributes, "attempt").unwrap(),
            );
            *m.entry(key).or_default() += 1;
            m
        });
    assert!(
        activities.contains_key(&("charge_payment".into(), "2".into())),
        "the retried payment attempt: {activities:?}"
    );
    for step in ["reserve_inventory", "create_shipment", "send_notification"] {
        assert!(
            activities.keys().any(|(t, _)| t == step),
            "{step} missing: {activities:?}"
        );
    }
    assert!(
        of_order.iter().any(|r| r.span.name == "workflow_task"),
        "workflow task spans"
    );
    // Engine spans of the workers' calls join the trace too.
    assert!(
        spans.iter().any(|r| &r.span.trace_id == trace
            && r.span.name == "martix.v1.respond_activity_task_completed"),
        "the engine's side of an activity result"
    );
    // The order's REST view names the same trace: the console links to it.
    let hex: String = trace.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(view["trace_id"], serde_json::json!(hex), "{view}");
}

#[tokio::test]
async fn json_logs_never_hold_a_token() {
    drop(martix_tests::postgres_store().await);
    let url = martix_tests::postgres_url();
    let secret = "telemetry-test-secret-0123456789abcdef";
    let log = std::env::temp_dir().join(format!("{}.log", martix_tests::unique("martix")));
    let mut child = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["server", "--database-url", &url, "--log-format", "json"])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("MARTIX_AUTH_SECRET", secret)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let grpc = loop {
        let line = lines.next().expect("address printed").unwrap();
        if let Some(a) = line.trim().strip_prefix("gRPC") {
            break a.trim().to_owned();
        }
    };
    let token = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_martix"))
            .args(["token", "issue", "--role", "operator", "--ttl", "5m"])
            .env("MARTIX_AUTH_SECRET", secret)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    for t in [token.as_str(), "not-a-valid-token-but-secret-looking"] {
        let _ = Command::new(env!("CARGO_BIN_EXE_martix"))
            .args(["workflow", "list", "--address", &grpc])
            .env("MARTIX_TOKEN", t)
            .output()
            .unwrap();
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    let logs = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let mut n = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        n += 1;
    }
    assert!(n >= 3, "the server logged at debug level: {logs}");
    for secret_text in [
        token.as_str(),
        token.split('.').nth(2).unwrap(),
        "not-a-valid-token-but-secret-looking",
        secret,
    ] {
        assert!(
            !logs.contains(secret_text),
            "a log line holds a secret: {secret_text}"
        );
    }
}
