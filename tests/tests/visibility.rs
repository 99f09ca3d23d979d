//! Visibility you can query, on PostgreSQL and SQLite: workflows set search attributes
//! (keywords, integers, times), `ListWorkflows`' query finds runs by them and by their fields
//! (AND, OR, parentheses, pages), the attributes carry over continue-as-new, and a query that
//! does not parse is refused naming the position.

use futures::StreamExt;
use martix_engine::EngineConfig;
use martix_sdk::{
    Client, ClientError, ListOptions, SearchAttribute, StartOptions, Worker, WorkerOptions,
    WorkflowContext, WorkflowError,
};
use martix_tests::{Backend, TestEngine, on_both_backends, unique};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

#[derive(Clone, Serialize, Deserialize)]
struct Tags {
    customer: String,
    total: i64,
    /// Continue as new once before setting anything else.
    again: bool,
}

/// Sets its search attributes, continues as new if asked, then waits for `done`.
async fn tagged(ctx: WorkflowContext, tags: Tags) -> Result<(), WorkflowError> {
    if tags.again {
        ctx.upsert_search_attributes([("customer", SearchAttribute::keyword(&tags.customer))]);
        return Err(ctx.continue_as_new(&Tags {
            again: false,
            ..tags
        }));
    }
    ctx.upsert_search_attributes([
        ("customer", SearchAttribute::keyword(&tags.customer)),
        ("total", tags.total.into()),
        (
            "paid_at",
            SearchAttribute::Time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_083_200)),
        ),
    ]);
    ctx.signal_by_name::<()>("done").next().await;
    Ok(())
}

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.long_poll_timeout = Duration::from_secs(5);
    c.recheck_interval = Duration::from_millis(200);
    c
}

async fn the_query_finds_runs_by_attributes_and_fields(backend: Backend) {
    let engine = TestEngine::start(backend, config()).await;
    let q = unique("tags");
    let client = Client::connect(engine.endpoint.clone()).await.unwrap();
    let mut w = Worker::new(&engine.endpoint, WorkerOptions::new(&q)).unwrap();
    w.register_workflow("tagged", tagged);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(w.run(stop.clone()));
    let _stop = stop.drop_guard();

    // A prefix of our own: other tests' runs share the namespace.
    let prefix = unique("vis");
    let c42 = unique("c42");
    let c7 = unique("c7");
    let plan = [
        ("a", &c42, 50, false),
        ("b", &c42, 500, false),
        ("c", &c7, 900, false),
        ("d", &c7, 10, true),
    ];
    for (id, customer, total, again) in plan {
        client
            .start_workflow(
                StartOptions::new("tagged", format!("{prefix}-{id}"), &q),
                &Tags {
                    customer: customer.clone(),
                    total,
                    again,
                },
            )
            .await
            .unwrap();
    }
    let ids = |query: String| {
        let client = client.clone();
        let prefix = prefix.clone();
        async move {
            let mut ids: Vec<String> = client
                .list_all_workflows(&ListOptions::new().workflow_id_prefix(&prefix).query(query))
                .await
                .unwrap()
                .into_iter()
                .map(|w| {
                    w.workflow_id
                        .trim_start_matches(&format!("{prefix}-"))
                        .to_owned()
                })
                .collect();
            ids.sort();
            ids.dedup();
            ids
        }
    };
    // Every run (d's second run too) has set its attributes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ids(r#"total >= 0 AND status = "running""#.into())
        .await
        .len()
        < 4
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the attributes never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(ids(format!(r#"customer = "{c42}""#)).await, ["a", "b"]);
    assert_eq!(
        ids(format!(r#"customer = "{c42}" AND total > 100"#)).await,
        ["b"]
    );
    assert_eq!(
        ids(format!(
            r#"status = "running" AND (customer = "{c7}" OR total >= 500)"#
        ))
        .await,
        ["b", "c", "d"]
    );
    assert_eq!(
        ids(r#"paid_at > "2026-11-30" and paid_at < "2026-12-02""#.into())
            .await
            .len(),
        4
    );
    assert!(ids(r#"paid_at > "2026-12-02""#.into()).await.is_empty());
    assert_eq!(
        ids(r#"started > "2020-01-01" AND workflow_type = "tagged""#.into())
            .await
            .len(),
        4
    );
    assert_eq!(
        ids(r#"status = "continued_as_new""#.into()).await,
        ["d"],
        "d's first run continued as new"
    );

    // The second run of d carries the customer its first run set, and sets the rest.
    let d = client
        .handle(format!("{prefix}-d"))
        .describe()
        .await
        .unwrap();
    assert_eq!(
        d.summary.search_attributes.get("customer"),
        Some(&SearchAttribute::keyword(&c7))
    );
    assert_eq!(
        d.summary.search_attributes.get("total"),
        Some(&SearchAttribute::Int(10))
    );

    // Pages of a query.
    let first = client
        .list_workflows(
            &ListOptions::new()
                .workflow_id_prefix(&prefix)
                .query(r#"total > 20"#)
                .page_size(2),
        )
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    let rest = client
        .list_workflows(
            &ListOptions::new()
                .workflow_id_prefix(&prefix)
                .query(r#"total > 20"#)
                .page_size(2)
                .page_token(first.next_page_token.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1, "a, b and c: 50, 500, 900");

    let bad = client
        .list_workflows(&ListOptions::new().query(r#"customer = "c42" AND"#))
        .await
        .unwrap_err();
    match &bad {
        ClientError::Status(s) => assert_eq!(s.code(), tonic::Code::InvalidArgument),
        other => panic!("{other:?}"),
    }
    assert!(
        bad.to_string()
            .contains("at position 21: expected a field or '(', the query ended"),
        "{bad}"
    );
}

on_both_backends!(the_query_finds_runs_by_attributes_and_fields);
