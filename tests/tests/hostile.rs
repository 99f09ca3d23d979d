//! Hostile input, generated: malformed protobuf on every gRPC method, garbage page tokens,
//! and random REST bodies. The engine must answer each with a proper error (never a panic,
//! never INTERNAL or a 5xx) and leave the store as it was.

use martix_engine::EngineConfig;
use martix_engine::edge::auth::{self, Role, SigningKey, TokenRequest};
use martix_engine::edge::{AuthConfig, EdgeConfig, LimitsConfig};
use martix_proto::v1 as pb;
use martix_tests::{Backend, TestEngine};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::time::Duration;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

const SECRET: &[u8] = b"hostile-test-secret-0123456789abcdef";

fn admin() -> String {
    auth::issue(
        &SigningKey::Secret(SECRET.to_vec()),
        &TokenRequest {
            subject: "fuzzer".into(),
            roles: vec![Role::Admin],
            namespaces: vec!["*".into()],
            ttl: Duration::from_secs(3600),
            issuer: auth::DEFAULT_ISSUER.into(),
            audience: auth::DEFAULT_AUDIENCE.into(),
        },
    )
    .unwrap()
}

/// Sends bytes as they are, and returns the answer's bytes.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

const METHODS: &[&str] = &[
    "WorkflowService/StartWorkflow",
    "WorkflowService/DescribeWorkflow",
    "WorkflowService/ListWorkflows",
    "WorkflowService/GetWorkflowHistory",
    "WorkflowService/GetWorkflowResult",
    "WorkflowService/SignalWorkflow",
    "WorkflowService/SignalWithStartWorkflow",
    "WorkflowService/CancelWorkflow",
    "WorkflowService/TerminateWorkflow",
    "WorkflowService/ResetWorkflow",
    "WorkflowService/RetryActivity",
    "WorkflowService/CreateNamespace",
    "WorkerService/PollWorkflowTask",
    "WorkerService/RespondWorkflowTaskCompleted",
    "WorkerService/RespondWorkflowTaskFailed",
    "WorkerService/PollActivityTask",
    "WorkerService/RespondActivityTaskCompleted",
    "WorkerService/RespondActivityTaskFailed",
    "WorkerService/RecordActivityHeartbeat",
    "WorkerService/ReportBreakers",
    "OrderService/GetOrder",
    "OrderService/ListOrders",
    "OrderService/RebuildOrders",
    "OrderService/GetOutboxStatus",
    "OrderService/ListOutboxEvents",
];

/// Codes that say "your request was wrong or not possible now", as opposed to "we broke".
fn proper(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::ResourceExhausted
            | Code::OutOfRange
    )
}

async fn fingerprint(t: &TestEngine) -> (u64, usize) {
    let list = t
        .engine
        .list_workflows(pb::ListWorkflowsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    (t.engine.store().write_transactions(), list.executions.len())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn engine() -> TestEngine {
    let mut config = EngineConfig::default();
    config.long_poll_timeout = Duration::from_millis(20);
    config.max_payload_bytes = 4096;
    TestEngine::start_with(
        Backend::Sqlite,
        config,
        EdgeConfig {
            auth: Some(AuthConfig::hs256(SECRET)),
            limits: LimitsConfig::unlimited(),
        },
        None,
    )
    .await
}

#[test]
fn malformed_protobuf_on_every_method_gets_a_proper_error_and_changes_nothing() {
    let rt = runtime();
    let t = rt.block_on(engine());
    let channel = rt.block_on(async {
        tonic::transport::Endpoint::from_shared(t.endpoint.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    });
    let token = format!("Bearer {}", admin());
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(
                0..METHODS.len(),
                proptest::collection::vec(any::<u8>(), 0..300),
            ),
            |(method, body)| {
                rt.block_on(async {
                    let before = fingerprint(&t).await;
                    let mut grpc = tonic::client::Grpc::new(channel.clone());
                    grpc.ready().await.unwrap();
                    let mut req = tonic::Request::new(body.clone());
                    req.metadata_mut()
                        .insert("authorization", token.parse().unwrap());
                    let path = format!("/martix.v1.{}", METHODS[method]);
                    let r = grpc.unary(req, path.parse().unwrap(), Raw).await;
                    match r {
                        // A well-formed request after all: it did what it asked.
                        Ok(_) => {}
                        Err(s) => {
                            prop_assert!(
                                proper(s.code()),
                                "{} with {:?}: {:?}",
                                METHODS[method],
                                body,
                                s
                            );
                            prop_assert_eq!(fingerprint(&t).await, before);
                        }
                    }
                    Ok(())
                })
            },
        )
        .unwrap();
    // The engine is still up and sane.
    rt.block_on(async {
        let mut c = t.workflows().await;
        let mut req = tonic::Request::new(pb::ListWorkflowsRequest::default());
        req.metadata_mut()
            .insert("authorization", token.parse().unwrap());
        c.list_workflows(req).await.expect("still serving");
    });
}

#[test]
fn garbage_page_tokens_are_invalid_arguments() {
    let rt = runtime();
    let t = rt.block_on(engine());
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(any::<u8>(), 1..100), |token| {
            rt.block_on(async {
                let list = t
                    .engine
                    .list_workflows(pb::ListWorkflowsRequest {
                        next_page_token: token.clone(),
                        ..Default::default()
                    })
                    .await;
                if let Err(e) = list {
                    prop_assert!(e.to_string().contains("next_page_token"), "{token:?}: {e}");
                    prop_assert_eq!(tonic::Status::from(e).code(), Code::InvalidArgument);
                }
                let history = t
                    .engine
                    .workflow_history(pb::GetWorkflowHistoryRequest {
                        execution: Some(pb::WorkflowExecution {
                            workflow_id: "missing".into(),
                            run_id: String::new(),
                        }),
                        next_page_token: token.clone(),
                        ..Default::default()
                    })
                    .await;
                let code = tonic::Status::from(history.unwrap_err()).code();
                prop_assert!(matches!(code, Code::InvalidArgument | Code::NotFound));
                let q =
                    martix_orders::service::order_query("default", "", "", None, None, 0).unwrap();
                let orders =
                    martix_orders::service::decode_page_token(&q, &String::from_utf8_lossy(&token));
                let e = orders.expect_err("no garbage is a page token of ours");
                prop_assert!(e.to_string().contains("page_token"), "{token:?}: {e}");
                prop_assert_eq!(tonic::Status::from(e).code(), Code::InvalidArgument);
                Ok(())
            })
        })
        .unwrap();
}

/// JSON that is almost an order: every field of any type and any size, and any key.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("order_id".to_owned()),
                    Just("customer_id".to_owned()),
                    Just("currency".to_owned()),
                    Just("items".to_owned()),
                    Just("sku".to_owned()),
                    Just("qty".to_owned()),
                    Just("unit_price_cents".to_owned()),
                    Just("shipping_address".to_owned()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A structurally valid order with hostile numbers and strings.
fn order_like() -> impl Strategy<Value = serde_json::Value> {
    (
        ".{0,300}",
        "[A-Za-z]{0,4}",
        proptest::collection::vec((".{0,30}", any::<i64>(), any::<i64>()), 0..4),
    )
        .prop_map(|(customer, currency, items)| {
            serde_json::json!({
                "customer_id": customer,
                "currency": currency,
                "items": items.into_iter().map(|(sku, qty, price)| serde_json::json!({
                    "sku": sku, "qty": qty, "unit_price_cents": price
                })).collect::<Vec<_>>(),
            })
        })
}

#[test]
fn random_rest_bodies_get_a_json_error_and_change_nothing() {
    let rt = runtime();
    let t = rt.block_on(engine());
    let http = reqwest::Client::new();
    let token = admin();
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let bodies = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        order_like().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ];
    runner
        .run(&bodies, |body| {
            rt.block_on(async {
                let before = fingerprint(&t).await;
                let r = http
                    .post(format!("{}/v1/orders", t.http))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("the engine answers");
                let status = r.status().as_u16();
                let answer: serde_json::Value = r.json().await.expect("a JSON answer");
                if status == 201 {
                    // A valid order after all (it passed validation): it was placed.
                    prop_assert!(answer["order_id"].is_string());
                } else {
                    prop_assert_eq!(status, 400, "{}", answer);
                    prop_assert_eq!(&answer["error"]["code"], "INVALID_ARGUMENT");
                    prop_assert!(answer["error"]["message"].is_string());
                    prop_assert_eq!(fingerprint(&t).await, before);
                }
                Ok(())
            })
        })
        .unwrap();
    // A body over the limit is refused before it is parsed.
    rt.block_on(async {
        let r = http
            .post(format!("{}/v1/orders", t.http))
            .bearer_auth(&token)
            .body(vec![b'{'; martix_orders::MAX_BODY_BYTES + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 413);
        let answer: serde_json::Value = r.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "RESOURCE_EXHAUSTED");
    });
}
