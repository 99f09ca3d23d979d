//! The operators' console in a real browser: headless Chromium driven over WebDriver
//! (chromedriver) against the `martix` binary. `scripts/test.sh` installs Debian's `chromium`
//! and `chromium-driver` when they are missing; without them these tests fail and say so.
//! `MARTIX_TEST_CHROMEDRIVER` and `MARTIX_TEST_CHROMIUM` name other binaries;
//! `MARTIX_UPDATE_SCREENSHOTS=1` writes the pages' screenshots into docs/console/.

mod common;

use common::{KillOnDrop, Running, free_addr, http_get, spawn_with, terminate};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "console-test-secret-0123456789abcdef";

/// A headless Chromium session, and the chromedriver it runs under.
struct Browser {
    client: Client,
    _driver: KillOnDrop,
}

async fn browser() -> Browser {
    let bin = std::env::var("MARTIX_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let addr = free_addr();
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let driver = Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "the console tests need chromedriver ('{bin}': {e}): run scripts/test.sh, which \
                 installs chromium and chromium-driver, or set MARTIX_TEST_CHROMEDRIVER"
            )
        });
    let driver = KillOnDrop(driver);
    let mut options = json!({"args": [
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--window-size=1280,1000"
    ]});
    if let Ok(chromium) = std::env::var("MARTIX_TEST_CHROMIUM") {
        options["binary"] = chromium.into();
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://{addr}"))
            .await
        {
            Ok(client) => {
                return Browser {
                    client,
                    _driver: driver,
                };
            }
            Err(e) if Instant::now() > deadline => panic!("no browser session: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits (30 s at most) until the first element `css` selects has a text `ok` accepts, and
/// returns that text.
async fn wait_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("(no such element)");
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(text) = e.text().await
        {
            if ok(&text) {
                return text;
            }
            last = text;
        }
        assert!(
            Instant::now() < deadline,
            "'{css}' never showed what was expected; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn click(c: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.find(Locator::Css(css)).await {
            Ok(e) => match e.click().await {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => panic!("cannot click '{css}': {e}"),
                Err(_) => {}
            },
            Err(e) if Instant::now() > deadline => panic!("no '{css}' to click: {e}"),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// A screenshot of the page: into docs/console/ with `MARTIX_UPDATE_SCREENSHOTS=1`, else
/// under the target directory (so that a test run leaves the checkout as it was).
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = if std::env::var("MARTIX_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console")
    } else {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console")
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// `POST path` on the HTTP port with a JSON body (and a bearer token): status and JSON answer.
fn http_post(addr: &str, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
    let (status, body) = common::http_post(addr, path, &body.to_string(), token);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn order(id: &str, customer: &str) -> Value {
    json!({"order_id": id, "customer_id": customer, "currency": "EUR",
        "items": [{"sku": "web-sku", "qty": 1, "unit_price_cents": 250}],
        "shipping_address": {"name": "A", "line1": "1 rue", "city": "Paris", "country": "FR"}})
}

/// The run status `GET /v1/orders/{id}` gives, once it is not `running` (30 s at most).
fn wait_closed(http: &str, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(http, &format!("/v1/orders/{id}"));
        let status = serde_json::from_str::<Value>(&body).unwrap_or_default()["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if code == 200 && !status.is_empty() && status != "running" {
            return status;
        }
        assert!(Instant::now() < deadline, "order {id} never closed: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn workflow_api(http: &str, method: &str, body: Value, token: Option<&str>) -> Value {
    let (code, answer) = http_post(
        http,
        &format!("/api/martix.v1.WorkflowService/{method}"),
        &body,
        token,
    );
    assert_eq!(code, 200, "{method}: {answer}");
    answer
}

fn dev_with_outage_switch(dir: &std::path::Path, switch: &std::path::Path) -> Running {
    spawn_with(
        &["dev", "--db", dir.join("dev.db").to_str().unwrap()],
        "127.0.0.1:0",
        &[("MARTIX_PAYMENT_OUTAGE_FILE", switch.to_str().unwrap())],
    )
}

/// The night an operator is paged: orders completed, one declined, one stuck on a payment
/// outage. The Stuck page says why; the operator retries it from its page after the gateway
/// came back and sees it complete; the page's timeline is the run's history.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_finds_explains_and_fixes_a_stuck_order() {
    let dir = std::env::temp_dir().join(format!("martix-console-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let switch = dir.join("outage");
    let dev = dev_with_outage_switch(&dir, &switch);
    let http = dev.http.clone();
    let adapters = martix_activities::ReferenceAdapters::connect(&format!(
        "sqlite://{}",
        dir.join("dev.db").display()
    ))
    .await
    .unwrap();
    adapters.seed_stock("web-sku", 10).await.unwrap();
    // Held closed, the payment breaker lets every attempt through: the charge keeps its
    // backoff (to 10 s between attempts) instead of being parked.
    let held = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(["breaker", "--address", &dev.grpc, "close", "payment"])
        .args(["--reason", "console test"])
        .output()
        .unwrap();
    assert!(
        held.status.success(),
        "{}",
        String::from_utf8_lossy(&held.stderr)
    );
    // A customer id with markup in it: the page shows it as text.
    let markup = "<b id=\"xss\">bold</b>";
    for (id, customer) in [
        ("ok-1", "cust-1"),
        ("declined-1", "declined-9"),
        ("xss-1", markup),
    ] {
        let (code, body) = http_post(&http, "/v1/orders", &order(id, customer), None);
        assert!(code == 200 || code == 201 || code == 202, "{code} {body}");
    }
    assert_eq!(wait_closed(&http, "ok-1"), "completed");
    assert_eq!(wait_closed(&http, "xss-1"), "completed");
    let declined = wait_closed(&http, "declined-1");
    assert_ne!(declined, "completed");
    std::fs::write(&switch, b"out").unwrap();
    let (code, body) = http_post(&http, "/v1/orders", &order("outage-1", "cust-2"), None);
    assert!(code < 300, "{code} {body}");

    let b = browser().await;
    let c = &b.client;
    c.goto(&format!("http://{http}/ui#/orders")).await.unwrap();
    wait_text(c, "#whoami", |t| t.contains("no authentication")).await;
    wait_text(
        c,
        "#orders-table tr[data-order-id=\"ok-1\"] td.status",
        |t| t == "completed",
    )
    .await;
    wait_text(
        c,
        "#orders-table tr[data-order-id=\"declined-1\"] td.status",
        |t| !t.is_empty() && t != "completed",
    )
    .await;
    wait_text(c, "#order-counts [data-status=\"completed\"]", |t| {
        t.split_whitespace().last() == Some("2")
    })
    .await;
    let row = wait_text(c, "#orders-table tr[data-order-id=\"xss-1\"]", |t| {
        t.contains(markup)
    })
    .await;
    assert!(
        c.find(Locator::Css("#xss")).await.is_err(),
        "markup from the server became an element: {row}"
    );
    screenshot(c, "orders.png").await;

    // Stuck: the outage's order, with why.
    c.goto(&format!("http://{http}/ui#/stuck")).await.unwrap();
    let why = wait_text(
        c,
        "#stuck-table tr[data-workflow-id=\"outage-1\"] .why",
        |t| t.contains("charge_payment"),
    )
    .await;
    assert!(why.contains("attempt"), "{why}");
    screenshot(c, "stuck.png").await;

    // Wait for a long backoff (the next attempt 3 s away or more), so that the operator's
    // retry, not the schedule, is what runs the charge once the gateway is back.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = workflow_api(
            &http,
            "DescribeWorkflow",
            json!({"namespace": "default", "execution": {"workflowId": "outage-1"}}),
            None,
        );
        let next = d["pendingActivities"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["activityType"] == "charge_payment")
            .and_then(|a| a["nextAttemptTime"].as_str())
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        if next.is_some_and(|n| {
            n.duration_since(std::time::SystemTime::now())
                .is_ok_and(|d| d >= Duration::from_secs(3))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no long backoff: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_file(&switch).unwrap();
    c.goto(&format!("http://{http}/ui#/orders/outage-1"))
        .await
        .unwrap();
    wait_text(c, "#run-status", |t| t.contains("running")).await;
    // The running saga itself (its `status` query, not the read model) says where it is.
    wait_text(c, ".saga-now .saga-step", |t| t == "payment").await;
    click(c, "#order-actions button[data-action=\"retry\"]").await;
    click(c, "#confirm-ok").await;
    let flash = wait_text(c, "#flash", |t| !t.is_empty()).await;
    assert!(flash.contains("retried activities 1"), "{flash}");
    wait_text(c, "#run-status", |t| t.contains("completed")).await;
    wait_text(c, "#order-status", |t| t.contains("completed")).await;
    wait_text(
        c,
        "#order-timeline li[data-activity=\"charge_payment\"]",
        |t| t.contains("completed"),
    )
    .await;
    screenshot(c, "order.png").await;

    // The timeline is the history's activities, in order.
    let timeline: Vec<String> = {
        let mut v = Vec::new();
        for li in c
            .find_all(Locator::Css("#order-timeline li[data-activity]"))
            .await
            .unwrap()
        {
            v.push(li.attr("data-activity").await.unwrap().unwrap_or_default());
        }
        v
    };
    let history = workflow_api(
        &http,
        "GetWorkflowHistory",
        json!({"namespace": "default", "execution": {"workflowId": "outage-1"}}),
        None,
    );
    let scheduled: Vec<String> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["activityTaskScheduled"]["activityType"].as_str())
        .map(str::to_owned)
        .collect();
    assert_eq!(timeline, scheduled);

    // A batch over what the Workflows page's filters match: previewed, counted, applied.
    for i in 1..=3 {
        workflow_api(
            &http,
            "StartWorkflow",
            json!({"namespace": "default", "workflowId": format!("batchx-{i}"),
                "workflowType": "probe", "taskQueue": "nobody-polls"}),
            None,
        );
    }
    // Their queue has work and no poller; the orders queue has its workers.
    c.goto(&format!("http://{http}/ui#/queues")).await.unwrap();
    wait_text(c, "#queues-table tr[data-queue=\"nobody-polls\"]", |t| {
        t.contains("no poller") && t.contains('3')
    })
    .await;
    wait_text(c, "#queues-table tr[data-queue=\"orders\"]", |t| {
        t.contains("(workflow)") && t.contains("(activity)")
    })
    .await;
    screenshot(c, "queues.png").await;
    c.goto(&format!("http://{http}/ui#/workflows"))
        .await
        .unwrap();
    let prefix = c
        .wait()
        .for_element(Locator::Css("#wf-prefix"))
        .await
        .unwrap();
    prefix.send_keys("batchx-").await.unwrap();
    wait_text(c, "#workflows-table", |t| {
        t.matches("batchx-").count() == 3 && !t.contains("outage-1")
    })
    .await;
    click(c, "#batch-action option[value=\"terminate\"]").await;
    let reason = c.find(Locator::Css("#batch-reason")).await.unwrap();
    reason.send_keys("probes left over").await.unwrap();
    click(c, "#batch-preview").await;
    wait_text(c, "#batch-count", |t| t.contains("3 runs match")).await;
    click(c, "#batch-apply").await;
    click(c, "#confirm-ok").await;
    wait_text(c, "#flash", |t| t.contains("3 done, 0 failed")).await;
    for i in 1..=3 {
        let d = workflow_api(
            &http,
            "DescribeWorkflow",
            json!({"namespace": "default", "execution": {"workflowId": format!("batchx-{i}")}}),
            None,
        );
        assert_eq!(
            d["info"]["status"],
            json!("WORKFLOW_STATUS_TERMINATED"),
            "{d}"
        );
    }

    c.goto(&format!("http://{http}/ui#/system")).await.unwrap();
    // Rates need two samples (one refresh apart).
    wait_text(c, "#system", |t| {
        t.contains("started") && !t.contains("collecting")
    })
    .await;
    screenshot(c, "system.png").await;
    // At a phone's width the same page still shows the order.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("http://{http}/ui#/orders/outage-1"))
        .await
        .unwrap();
    wait_text(c, "#order-status", |t| t.contains("completed")).await;
    screenshot(c, "order-phone.png").await;
    b.client.clone().close().await.unwrap();
    terminate(dev);
    let _ = std::fs::remove_dir_all(&dir);
}

fn issue_token(roles: &[&str]) -> String {
    common::issue_token(SECRET, roles, "default")
}

/// With authentication on, the page asks for a token; a client's token shows the order but no
/// action, and an action forged from the page is refused (403); an operator's shows them.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_offers_only_what_the_token_may_do() {
    drop(martix_tests::postgres_store().await);
    let url = martix_tests::postgres_url();
    let server = spawn_with(
        &["server", "--database-url", &url],
        "127.0.0.1:0",
        &[("MARTIX_AUTH_SECRET", SECRET)],
    );
    let http = server.http.clone();
    let (client_token, operator_token) = (issue_token(&["client"]), issue_token(&["operator"]));
    let (code, _) = http_get(&http, "/api/console/whoami");
    assert_eq!(code, 401, "the console's API needs a token");
    let (code, page) = http_get(&http, "/ui");
    assert_eq!(code, 200, "the page itself is open");
    assert!(page.contains("/ui/app.js"));
    // An order nobody works on (no worker polls the queue): it stays running.
    let id = martix_tests::unique("web");
    let (code, body) = http_post(
        &http,
        "/v1/orders",
        &order(&id, "cust-web"),
        Some(&client_token),
    );
    assert!(code < 300, "{code} {body}");

    let b = browser().await;
    let c = &b.client;
    c.goto(&format!("http://{http}/ui#/orders/{id}"))
        .await
        .unwrap();
    let input = c.wait().for_element(Locator::Css("#token")).await.unwrap();
    input.send_keys(&client_token).await.unwrap();
    click(c, "#token-submit").await;
    wait_text(c, "#whoami", |t| t.contains("client")).await;
    wait_text(c, "#run-status", |t| t.contains("running")).await;
    let buttons = c
        .find_all(Locator::Css("#order-actions button[data-action]"))
        .await
        .unwrap();
    assert!(buttons.is_empty(), "a client is offered no action");
    let forged = c
        .execute(
            "return fetch('/api/martix.v1.WorkflowService/CancelWorkflow', {method: 'POST', \
             headers: {'authorization': 'Bearer ' + sessionStorage.getItem('martix.token'), \
             'content-type': 'application/json'}, body: JSON.stringify({namespace: 'default', \
             execution: {workflowId: arguments[0]}, reason: 'forged'})}).then(r => r.status)",
            vec![json!(id)],
        )
        .await
        .unwrap();
    assert_eq!(forged, json!(403));
    let d = workflow_api(
        &http,
        "DescribeWorkflow",
        json!({"namespace": "default", "execution": {"workflowId": id}}),
        Some(&operator_token),
    );
    assert!(d["cancelRequested"].is_null(), "nothing changed: {d}");

    click(c, "#sign-out").await;
    let input = c.wait().for_element(Locator::Css("#token")).await.unwrap();
    input.send_keys(&operator_token).await.unwrap();
    click(c, "#token-submit").await;
    wait_text(c, "#whoami", |t| t.contains("operator")).await;
    c.goto(&format!("http://{http}/ui#/orders/{id}"))
        .await
        .unwrap();
    wait_text(c, "#order-actions button[data-action=\"cancel\"]", |_| true).await;
    b.client.clone().close().await.unwrap();
    terminate(server);
}
