//! The REST gateway over real HTTP: place, read and cancel orders, idempotency, the error
//! shape, authentication, and the OpenAPI document.

use martix_engine::EngineConfig;
use martix_engine::edge::auth::Role;
use martix_engine::edge::{AuthConfig, EdgeConfig, LimitsConfig};
use martix_tests::{Backend, TestEngine, on_both_backends, unique};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SECRET: &[u8] = b"rest-test-secret-0123456789abcdefgh";

fn token(roles: &[Role]) -> String {
    martix_tests::token(SECRET, "rest-test", roles, &["default"])
}

async fn engine(backend: Backend) -> TestEngine {
    TestEngine::start_authenticated(backend, SECRET).await
}

/// The order worker (no-op adapters) on the gateway's queue, until the token is cancelled.
fn worker(t: &TestEngine) -> CancellationToken {
    let stop = CancellationToken::new();
    let mut w = martix_sdk::Worker::connect_with(
        &t.endpoint,
        &martix_sdk::ConnectOptions::default().token(token(&[Role::Worker])),
        martix_sdk::WorkerOptions::new(&t.order_queue),
    )
    .unwrap();
    w.register_workflow(
        martix_order_contract::ORDER_WORKFLOW_TYPE,
        martix_workflows::order,
    );
    martix_activities::OrderActivities::new(
        martix_activities::Backend::noop(),
        Default::default(),
        Default::default(),
    )
    .register(&mut w);
    tokio::spawn(w.run(stop.clone()));
    stop
}

static RUN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| unique("run"));

fn order(id: Option<&str>) -> Value {
    let mut o = json!({
        // The fraud rules count orders per customer: one per order id and test process.
        "customer_id": format!("cust-{}-{}", *RUN, id.unwrap_or("anon")),
        "currency": "EUR",
        "items": [{"sku": "sku-1", "qty": 2, "unit_price_cents": 1250}],
        "shipping_address": {"country": "FR"}
    });
    if let Some(id) = id {
        o["order_id"] = json!(id);
    }
    o
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(t: &TestEngine, token: String) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: t.http.clone(),
            token,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.bearer_auth(&self.token).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
        (status, value)
    }

    async fn place(&self, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/orders", self.base))
            .json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        self.send(req).await
    }

    async fn get(&self, id: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}/v1/orders/{id}", self.base)))
            .await
    }
}

on_both_backends!(an_order_placed_over_rest_runs_to_completion_and_shows_its_steps);
async fn an_order_placed_over_rest_runs_to_completion_and_shows_its_steps(backend: Backend) {
    let t = engine(backend).await;
    let stop = worker(&t);
    let api = Api::new(&t, token(&[Role::Client]));
    let id = unique("rest");
    let (status, placed) = api.place(&order(Some(&id)), None).await;
    assert_eq!(status, 201, "{placed}");
    assert_eq!(placed["order_id"], json!(id));
    assert_eq!(placed["status"], json!("running"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let (status, view) = api.get(&id).await;
        assert_eq!(status, 200, "{view}");
        if view["status"] != json!("running") {
            break view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], json!("completed"), "{done}");
    // 2 x 12.50 EUR and 20% French VAT.
    assert_eq!(done["outcome"]["charged_cents"], json!(3000));
    let steps: Vec<&str> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["activity"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "price_order",
            "reserve_inventory",
            "charge_payment",
            "create_shipment",
            "send_notification"
        ]
    );
    assert!(
        done["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == json!("completed"))
    );
    // Placing it again with the same body returns the same order; a different body conflicts.
    let (status, again) = api.place(&order(Some(&id)), None).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["run_id"], done["run_id"]);
    let mut changed = order(Some(&id));
    changed["items"][0]["qty"] = json!(3);
    let (status, conflict) = api.place(&changed, None).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], json!("ALREADY_EXISTS"));
    stop.cancel();
}

/// The order a run was started with, as recorded.
async fn started_with(t: &TestEngine, id: &str) -> martix_order_contract::Order {
    use martix_proto::v1 as pb;
    let history = t
        .engine
        .workflow_history(pb::GetWorkflowHistoryRequest {
            namespace: "default".into(),
            execution: Some(pb::WorkflowExecution {
                workflow_id: id.into(),
                run_id: String::new(),
            }),
            page_size: 1,
            next_page_token: Vec::new(),
        })
        .await
        .unwrap();
    match history.events[0].attributes.as_ref() {
        Some(pb::history_event::Attributes::WorkflowExecutionStarted(s)) => {
            serde_json::from_slice(&s.input.as_ref().unwrap().data).unwrap()
        }
        other => panic!("a run starts with WorkflowExecutionStarted: {other:?}"),
    }
}

#[tokio::test]
async fn the_authenticated_caller_is_who_placed_the_order_whatever_the_client_says() {
    let t = engine(Backend::Sqlite).await;
    let api = Api::new(&t, token(&[Role::Client]));
    // Over REST the field is not the client's to send.
    let mut claimed = order(Some(&unique("claimed")));
    claimed["placed_by"] = json!("mallory");
    let (status, refused) = api.place(&claimed, None).await;
    assert_eq!(status, 400, "{refused}");
    let id = unique("rest-by");
    let (status, placed) = api.place(&order(Some(&id)), None).await;
    assert_eq!(status, 201, "{placed}");
    assert_eq!(
        started_with(&t, &id).await.placed_by.as_deref(),
        Some("rest-test")
    );

    // Over gRPC what the client wrote there is replaced by the caller.
    let client = martix_sdk::Client::connect_with(
        &t.endpoint,
        &martix_sdk::ConnectOptions::default().token(token(&[Role::Client])),
    )
    .await
    .unwrap();
    let id = unique("grpc-by");
    let mut order: martix_order_contract::Order = serde_json::from_value(order(Some(&id))).unwrap();
    order.placed_by = Some("mallory".into());
    client
        .start_workflow(
            martix_sdk::StartOptions::new(
                martix_order_contract::ORDER_WORKFLOW_TYPE,
                &id,
                &t.order_queue,
            ),
            &order,
        )
        .await
        .unwrap();
    assert_eq!(
        started_with(&t, &id).await.placed_by.as_deref(),
        Some("rest-test")
    );
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retry_return_the_same_order() {
    let t = engine(Backend::Sqlite).await;
    let api = Api::new(&t, token(&[Role::Client]));
    let key = unique("key");
    let (s1, first) = api.place(&order(None), Some(&key)).await;
    let (s2, second) = api.place(&order(None), Some(&key)).await;
    assert_eq!((s1, s2), (201, 200), "{first} {second}");
    assert_eq!(first["order_id"], json!(key));
    assert_eq!(first["run_id"], second["run_id"]);
    let (s3, other) = api.place(&order(None), None).await;
    assert_eq!(s3, 201);
    assert_ne!(other["order_id"], first["order_id"]);
}

#[tokio::test]
async fn cancel_over_rest_compensates_a_running_order() {
    let t = engine(Backend::Sqlite).await;
    // No worker yet: the order waits, so the cancel reaches it before any step.
    let api = Api::new(&t, token(&[Role::Operator]));
    let id = unique("cancel");
    assert_eq!(api.place(&order(Some(&id)), None).await.0, 201);
    let (status, view) = api
        .send(api.http.post(format!("{}/v1/orders/{id}/cancel", api.base)))
        .await;
    assert_eq!(status, 202, "{view}");
    assert_eq!(view["cancel_requested"], json!(true));
    let stop = worker(&t);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = api.get(&id).await;
        if v["status"] != json!("running") {
            assert!(
                ["canceled", "compensated"].contains(&v["status"].as_str().unwrap()),
                "{v}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    // A client may not cancel.
    let client = Api::new(&t, token(&[Role::Client]));
    let (status, err) = client
        .send(
            client
                .http
                .post(format!("{}/v1/orders/{id}/cancel", client.base)),
        )
        .await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(err["error"]["code"], json!("PERMISSION_DENIED"));
}

#[tokio::test]
async fn errors_have_one_shape_and_change_nothing() {
    let t = engine(Backend::Sqlite).await;
    let api = Api::new(&t, token(&[Role::Client]));
    let writes = t.engine.store().write_transactions();
    let mut bad_qty = order(Some("bad-qty"));
    bad_qty["items"][0]["qty"] = json!(0);
    let (status, e) = api.place(&bad_qty, None).await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["code"], json!("INVALID_ARGUMENT"));
    assert_eq!(e["error"]["field"], json!("items[0].qty"));
    let mut unknown = order(Some("x"));
    unknown["discount"] = json!(100);
    let (status, e) = api.place(&unknown, None).await;
    assert_eq!(status, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("discount"));
    let (status, e) = api.get("no-such-order").await;
    assert_eq!(status, 404);
    assert_eq!(e["error"]["code"], json!("NOT_FOUND"));
    // No token, and a token of the wrong role.
    let anonymous = reqwest::Client::new()
        .get(format!("{}/v1/orders/x", t.http))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["code"], json!("UNAUTHENTICATED"));
    let worker = Api::new(&t, token(&[Role::Worker]));
    let (status, e) = worker.place(&order(Some("by-worker")), None).await;
    assert_eq!(status, 403, "{e}");
    assert_eq!(t.engine.store().write_transactions(), writes);
    // Health stays open.
    let health = reqwest::get(format!("{}/healthz", t.http)).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

/// REST requests run under the edge's request deadline, as gRPC requests do.
#[tokio::test]
async fn a_rest_request_over_the_deadline_is_answered_504() {
    let t = TestEngine::start_with(
        Backend::Sqlite,
        EngineConfig::default(),
        EdgeConfig {
            auth: Some(AuthConfig::hs256(SECRET)),
            limits: LimitsConfig {
                // Shorter than any commit.
                request_timeout: Duration::from_nanos(1),
                ..LimitsConfig::default()
            },
        },
        None,
    )
    .await;
    let api = Api::new(&t, token(&[Role::Client]));
    // A placement, which waits for a commit: a deadline is rounded up to the timer's
    // millisecond, which a read of a missing order can beat.
    let (status, e) = api.place(&order(Some("late")), None).await;
    assert_eq!(status, 504, "{e}");
    assert_eq!(e["error"]["code"], json!("DEADLINE_EXCEEDED"));
    assert!(
        e["error"]["message"].as_str().unwrap().contains("deadline"),
        "{e}"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes() {
    let t = engine(Backend::Sqlite).await;
    let api = Api::new(&t, token(&[Role::Client]));
    let (status, doc) = api
        .send(api.http.get(format!("{}/openapi.json", api.base)))
        .await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/v1/orders", "/v1/orders/{id}", "/v1/orders/{id}/cancel"] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["PlaceOrder"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        json!("bearer")
    );
}
