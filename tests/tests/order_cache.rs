//! The Redis cache of order views (`--order-cache-url`): an ended order's view is served from
//! Redis while its run is the order's latest and the read model is not rebuilt; a running
//! order is never cached; another run of the order id makes the cached view unused at once;
//! Redis cut off costs reads nothing but the cache, which comes back with Redis.
//!
//! Needs the Redis at `MARTIX_TEST_REDIS_URL` (default the local one; scripts/test.sh starts
//! or installs it): without it these tests fail, saying so.

use martix_engine::EngineConfig;
use martix_proto::v1 as pb;
use martix_tests::{Backend, TcpProxy, TestEngine, on_both_backends, redis_url, unique};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The order worker (no-op adapters) on the gateway's queue, until the token is cancelled.
fn worker(t: &TestEngine) -> CancellationToken {
    let stop = CancellationToken::new();
    let mut w =
        martix_sdk::Worker::new(&t.endpoint, martix_sdk::WorkerOptions::new(&t.order_queue))
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

async fn cache_at(url: &str) -> martix_orders::OrderCache {
    martix_orders::OrderCache::connect(url, Duration::from_secs(600))
        .await
        .unwrap_or_else(|e| {
            panic!("{e}: start Redis (apt-get install redis-server) or set MARTIX_TEST_REDIS_URL")
        })
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis does not answer at {}: {e}", redis_url()))
}

async fn cached(key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut redis().await)
        .await
        .unwrap()
}

fn key(order_id: &str) -> String {
    format!("martix:order-view:v1:7:default:{order_id}")
}

/// An entry of the cache's format for `run_id` in the current generation.
async fn entry(run_id: &str, json: &Value) -> Vec<u8> {
    let generation: Option<i64> = redis::cmd("GET")
        .arg("martix:order-view:v1:generation")
        .query_async(&mut redis().await)
        .await
        .unwrap();
    let mut entry = format!("{} {run_id}\n", generation.unwrap_or(0)).into_bytes();
    entry.extend(serde_json::to_vec(json).unwrap());
    entry
}

/// Waits until `check` holds of the cached bytes (the cache writes after answering).
async fn cached_until(id: &str, check: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(raw) = cached(&key(id)).await.filter(|r| check(r)) {
            return raw;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache never held what was expected for {id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads until the answer is `want` (a read after a cache error skips the cache a while).
async fn answered(http: &reqwest::Client, t: &TestEngine, id: &str, want: &Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, got) = get(http, t, id).await;
        if status == 200 && got == *want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never answered {want}; last {status} {got}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(http: &reqwest::Client, t: &TestEngine, id: &str) -> (u16, Value) {
    let r = http
        .get(format!("{}/v1/orders/{id}", t.http))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Reads the order until its run has ended and the read model holds that run's final event.
async fn settled(http: &reqwest::Client, t: &TestEngine, id: &str, run_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, view) = get(http, t, id).await;
        assert_eq!(status, 200, "{view}");
        if view["run_id"] == json!(run_id)
            && view["status"] != json!("running")
            && view["order"]["status"] == json!("completed")
            && view["events"]
                .as_array()
                .and_then(|e| e.last())
                .and_then(|e| e["id"].as_str())
                .is_some_and(|e| e.starts_with(&format!("{run_id}/")))
        {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn order(id: &str) -> Value {
    json!({
        "order_id": id,
        "customer_id": format!("cust-{id}"),
        "currency": "EUR",
        "items": [{"sku": "sku-1", "qty": 1, "unit_price_cents": 1000}],
        "shipping_address": {"country": "FR"}
    })
}

on_both_backends!(an_ended_orders_view_is_cached_until_another_run_is_the_latest);
async fn an_ended_orders_view_is_cached_until_another_run_is_the_latest(backend: Backend) {
    let t = TestEngine::start_with_order_cache(
        backend,
        EngineConfig::default(),
        cache_at(&redis_url()).await,
    )
    .await;
    let http = reqwest::Client::new();
    let id = unique("cached");

    // Placed with no worker: the order runs, and a running order's view is never cached.
    let placed = http
        .post(format!("{}/v1/orders", t.http))
        .json(&order(&id))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status().as_u16(), 201);
    let (status, running) = get(&http, &t, &id).await;
    assert_eq!((status, &running["status"]), (200, &json!("running")));
    assert_eq!(cached(&key(&id)).await, None, "a running order was cached");

    // Ended and folded: the view is cached under the run it was built from.
    let stop = worker(&t);
    let first_run = running["run_id"].as_str().unwrap().to_owned();
    let done = settled(&http, &t, &id, &first_run).await;
    let raw = cached_until(&id, |r| {
        r.split(|b| *b == b'\n')
            .next()
            .is_some_and(|head| head.ends_with(format!(" {first_run}").as_bytes()))
    })
    .await;
    let json = &raw[raw.iter().position(|b| *b == b'\n').unwrap() + 1..];
    assert_eq!(serde_json::from_slice::<Value>(json).unwrap(), done);

    // And served from there: an entry for the same run is what the next read answers.
    let marker = json!({"order_id": id, "run_id": first_run, "from": "the cache"});
    let put_marker = || async {
        let () = redis::cmd("SET")
            .arg(key(&id))
            .arg(entry(&first_run, &marker).await)
            .query_async(&mut redis().await)
            .await
            .unwrap();
    };
    put_marker().await;
    answered(&http, &t, &id, &marker).await;

    // A rebuild of the read model moves the cache's generation on: the entry is not served.
    martix_orders::pb::order_service_client::OrderServiceClient::connect(t.endpoint.clone())
        .await
        .unwrap()
        .rebuild_orders(martix_orders::pb::RebuildOrdersRequest {})
        .await
        .unwrap();
    answered(&http, &t, &id, &done).await;
    put_marker().await;
    answered(&http, &t, &id, &marker).await;

    // Another run of the same id (a start that allows duplicates, over gRPC), closed at once
    // and so the latest: the entry names the old run and is not served.
    stop.cancel();
    let mut wf = t.workflows().await;
    let again = wf
        .start_workflow(pb::StartWorkflowRequest {
            namespace: "default".into(),
            workflow_id: id.clone(),
            workflow_type: martix_order_contract::ORDER_WORKFLOW_TYPE.into(),
            task_queue: t.order_queue.clone(),
            input: martix_tests::json(&order(&id).to_string()),
            identity: "test".into(),
            id_reuse_policy: pb::IdReusePolicy::AllowDuplicate as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.started);
    wf.terminate_workflow(pb::TerminateWorkflowRequest {
        namespace: "default".into(),
        execution: Some(pb::WorkflowExecution {
            workflow_id: id.clone(),
            run_id: again.run_id.clone(),
        }),
        reason: "test".into(),
        identity: "test".into(),
    })
    .await
    .unwrap();
    let (status, after) = get(&http, &t, &id).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        (&after["run_id"], &after["status"]),
        (&json!(again.run_id), &json!("terminated")),
        "{after}"
    );
    assert_eq!(after.get("from"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_on_without_the_cache_while_redis_is_cut_off() {
    let target: std::net::SocketAddr = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .split('/')
        .next()
        .unwrap()
        .parse()
        .expect("MARTIX_TEST_REDIS_URL as redis://IP:PORT/");
    let proxy = TcpProxy::start(target).await;
    let cache = cache_at(&format!("redis://{}/", proxy.addr)).await;
    let t =
        TestEngine::start_with_order_cache(Backend::Sqlite, EngineConfig::default(), cache).await;
    let stop = worker(&t);
    let http = reqwest::Client::new();
    let id = unique("uncached");
    let placed: Value = http
        .post(format!("{}/v1/orders", t.http))
        .json(&order(&id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = placed["run_id"].as_str().unwrap().to_owned();
    proxy.cut();
    // Every read answers, built from the store.
    let view = settled(&http, &t, &id, &run_id).await;
    for _ in 0..20 {
        assert_eq!(get(&http, &t, &id).await, (200, view.clone()));
    }
    assert_eq!(cached(&key(&id)).await, None);
    // Redis back: the cache is used again.
    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while cached(&key(&id)).await.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache did not come back with Redis"
        );
        assert_eq!(get(&http, &t, &id).await, (200, view.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
}
