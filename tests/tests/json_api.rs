//! The engine's `WorkflowService` as JSON over HTTP (`/api/martix.v1.WorkflowService/…`), the
//! console's API (`/api/console/whoami`) and page, and the order counts, over real HTTP: the
//! same edge as gRPC (tokens, roles), proto3 JSON in and out, one error shape.

use base64::Engine as _;
use martix_engine::edge::auth::Role;
use martix_tests::{Backend, TestEngine, on_both_backends, unique};
use serde_json::{Value, json};

const SECRET: &[u8] = b"json-api-test-secret-0123456789abcdef";

fn token(roles: &[Role]) -> String {
    martix_tests::token(SECRET, "json-test", roles, &["default"])
}

async fn engine(backend: Backend) -> TestEngine {
    TestEngine::start_authenticated(backend, SECRET).await
}

/// `POST /api/martix.v1.WorkflowService/{method}` with `body` as `token`: status and answer.
async fn call(t: &TestEngine, method: &str, body: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/martix.v1.WorkflowService/{method}", t.http))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `POST` a method with exactly these headers.
async fn send(t: &TestEngine, method: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/martix.v1.WorkflowService/{method}", t.http))
        .body(body.to_owned());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(t: &TestEngine, path: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", t.http))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

on_both_backends!(runs_are_started_read_and_found_stuck_in_json);
async fn runs_are_started_read_and_found_stuck_in_json(backend: Backend) {
    let t = engine(backend).await;
    let (client, operator) = (token(&[Role::Client]), token(&[Role::Operator]));
    let id = unique("json");
    let input = base64::engine::general_purpose::STANDARD.encode(br#"{"n":1}"#);
    // Nobody polls the queue: the run stays running, and stuck says why.
    let start = json!({"namespace": "default", "workflowId": id, "workflowType": "probe",
        "taskQueue": "nobody-polls", "input": {"encoding": "json/plain", "data": input}});
    let (status, started) = call(&t, "StartWorkflow", &start.to_string(), Some(&client)).await;
    assert_eq!(status, 200, "{started}");
    let run_id = started["runId"].as_str().unwrap().to_owned();
    let describe = json!({"namespace": "default", "execution": {"workflowId": id}}).to_string();
    let (status, d) = call(&t, "DescribeWorkflow", &describe, Some(&client)).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["info"]["status"], json!("WORKFLOW_STATUS_RUNNING"));
    assert_eq!(d["info"]["execution"]["runId"], json!(run_id));
    assert_eq!(d["info"]["historyLength"], json!("2"), "int64 as a string");
    let (status, h) = call(&t, "GetWorkflowHistory", &describe, Some(&operator)).await;
    assert_eq!(status, 200, "{h}");
    let first = &h["events"][0]["workflowExecutionStarted"];
    assert_eq!(first["input"]["data"], json!(input), "bytes in base64");
    let (status, stuck) = call(
        &t,
        "ListStuckWorkflows",
        r#"{"namespace": "default"}"#,
        Some(&operator),
    )
    .await;
    assert_eq!(status, 200, "{stuck}");
    let mine = stuck["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["info"]["execution"]["workflowId"] == json!(id))
        .unwrap_or_else(|| panic!("not listed: {stuck}"));
    assert!(
        mine["why"][0]
            .as_str()
            .unwrap()
            .contains("no worker has polled queue 'nobody-polls'"),
        "{mine}"
    );
    assert!(stuck["examined"].as_i64() >= Some(1), "{stuck}");
    // Its queue: a task due, nobody polling.
    let (status, queues) = call(&t, "ListTaskQueues", "{}", Some(&operator)).await;
    assert_eq!(status, 200, "{queues}");
    let nobody = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == json!("nobody-polls"))
        .unwrap_or_else(|| panic!("not listed: {queues}"));
    assert!(
        nobody["workflowBacklog"].as_str().is_some_and(|n| n != "0"),
        "{nobody}"
    );
    assert!(nobody.get("pollers").is_none(), "{nobody}");
    // Listing needs an operator; a client is refused and nothing changes.
    let (status, e) = call(&t, "ListStuckWorkflows", "{}", Some(&client)).await;
    assert_eq!(status, 403, "{e}");
    assert_eq!(e["error"]["code"], json!("PERMISSION_DENIED"));
    let writes = t.engine.store().write_transactions();
    let cancel = json!({"namespace": "default", "execution": {"workflowId": id}, "reason": "x"});
    let (status, e) = call(&t, "CancelWorkflow", &cancel.to_string(), Some(&client)).await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (403, json!("PERMISSION_DENIED"))
    );
    let (status, e) = call(&t, "CancelWorkflow", &cancel.to_string(), None).await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (401, json!("UNAUTHENTICATED"))
    );
    // Another namespace than the token's: refused.
    let elsewhere = json!({"namespace": "other", "execution": {"workflowId": id}, "reason": "x"});
    let (status, e) = call(
        &t,
        "CancelWorkflow",
        &elsewhere.to_string(),
        Some(&operator),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (403, json!("PERMISSION_DENIED"))
    );
    // A page of another site cannot drive the engine (a form post, or a script's request).
    let (status, e) = send(
        &t,
        "CancelWorkflow",
        &cancel.to_string(),
        &[
            ("origin", "http://evil.example"),
            ("content-type", "application/json"),
        ],
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (403, json!("PERMISSION_DENIED")),
        "{e}"
    );
    let (status, e) = send(
        &t,
        "CancelWorkflow",
        &cancel.to_string(),
        &[
            ("content-type", "text/plain"),
            ("authorization", &format!("Bearer {operator}")),
        ],
    )
    .await;
    assert_eq!(status, 415, "{e}");
    // Bad bodies: a precise 400, nothing written.
    let (status, e) = call(&t, "CancelWorkflow", "{not json", Some(&operator)).await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a martix.v1.CancelWorkflowRequest"),
        "{e}"
    );
    let (status, e) = call(
        &t,
        "CancelWorkflow",
        r#"{"workflowIdd": "x"}"#,
        Some(&operator),
    )
    .await;
    assert_eq!(status, 400, "an unknown field is refused: {e}");
    let (status, e) = call(&t, "StartWorkflow", r#"{"workflowId": ""}"#, Some(&client)).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["code"], json!("INVALID_ARGUMENT"));
    assert_eq!(t.engine.store().write_transactions(), writes);
    // An operator's cancel is recorded.
    let (status, e) = call(&t, "CancelWorkflow", &cancel.to_string(), Some(&operator)).await;
    assert_eq!(status, 200, "{e}");
    let (_, d) = call(&t, "DescribeWorkflow", &describe, Some(&client)).await;
    assert_eq!(d["cancelRequested"], json!(true), "{d}");
    // Order counts come with a page when asked for, every status named.
    let (status, page) = get(&t, "/v1/orders?page_size=1", &client).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.get("counts").is_none(), "only when asked: {page}");
    let (status, page) = get(&t, "/v1/orders?page_size=1&counts=true", &client).await;
    assert_eq!(status, 200, "{page}");
    let counts = page["counts"].as_object().unwrap();
    assert_eq!(counts.len(), 12, "{counts:?}");
    assert!(
        counts
            .values()
            .all(|n| n.as_i64().is_some_and(|n| (0..=10_001).contains(&n)))
    );
}

#[tokio::test]
async fn the_console_page_is_open_and_whoami_names_what_a_token_may_do() {
    let t = engine(Backend::Sqlite).await;
    let page = reqwest::get(format!("{}/ui", t.http)).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(page.text().await.unwrap().contains("/ui/app.js"));
    let script = reqwest::get(format!("{}/ui/app.js", t.http)).await.unwrap();
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let anonymous = reqwest::get(format!("{}/api/console/whoami", t.http))
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let (status, me) = get(&t, "/api/console/whoami", &token(&[Role::Client])).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (&me["subject"], &me["roles"], &me["auth"]),
        (&json!("json-test"), &json!(["client"]), &json!(true))
    );
    assert_eq!(me["can"]["cancel"], json!(false));
    assert_eq!(me["can"]["list"], json!(false));
    assert_eq!(me["can"]["signal"], json!(true));
    assert_eq!(
        me["trace_url"],
        json!("https://traces.example/trace/{trace_id}")
    );
    let (_, me) = get(&t, "/api/console/whoami", &token(&[Role::Operator])).await;
    for action in ["list", "cancel", "terminate", "reset", "pause", "retry"] {
        assert_eq!(me["can"][action], json!(true), "{action}: {me}");
    }
    // Metrics span namespaces: a token for one namespace does not read them.
    assert_eq!(me["can"]["metrics"], json!(false));
}
