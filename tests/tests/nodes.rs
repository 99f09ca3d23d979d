//! Several engine nodes on one PostgreSQL: a poller waiting on one node gets a task committed
//! on another at once (LISTEN/NOTIFY), not at its recheck interval.

use martix_engine::EngineConfig;
use martix_engine::matching::{QueueKey, TaskKind};
use martix_proto::v1 as pb;
use martix_tests::{Backend, TestEngine, json, unique};
use std::time::Duration;

fn slow_recheck() -> EngineConfig {
    let mut c = EngineConfig::default();
    // Far longer than the test's deadline: only a notification can wake the poller in time.
    c.recheck_interval = Duration::from_secs(120);
    c.long_poll_timeout = Duration::from_secs(60);
    c
}

async fn wait_registered(engine: &TestEngine, key: &QueueKey) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while engine.engine.matching().waiting(key) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the poller registers");
}

#[tokio::test]
async fn a_task_committed_on_one_node_wakes_a_poller_on_another() {
    let a = TestEngine::start(Backend::Postgres, slow_recheck()).await;
    let b = TestEngine::start(Backend::Postgres, slow_recheck()).await;
    let q = unique("q");

    // A workflow task started through node A reaches a poller waiting on node B.
    let poll = tokio::spawn({
        let mut w = b.workers().await;
        let q = q.clone();
        async move {
            w.poll_workflow_task(pb::PollWorkflowTaskRequest {
                namespace: "default".into(),
                task_queue: q,
                identity: "on-b".into(),
            })
            .await
            .unwrap()
            .into_inner()
        }
    });
    wait_registered(&b, &QueueKey::new("default", &q, TaskKind::Workflow)).await;
    let id = unique("order");
    a.workflows()
        .await
        .start_workflow(pb::StartWorkflowRequest {
            namespace: "default".into(),
            workflow_id: id.clone(),
            workflow_type: "order".into(),
            task_queue: q.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let task = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("woken by node A's commit, long before the 120 s recheck")
        .unwrap();
    assert_eq!(task.workflow_execution.unwrap().workflow_id, id);

    // An activity scheduled by a completion on node B reaches a poller waiting on node A.
    let act_poll = tokio::spawn({
        let mut w = a.workers().await;
        let q = q.clone();
        async move {
            w.poll_activity_task(pb::PollActivityTaskRequest {
                namespace: "default".into(),
                task_queue: q,
                identity: "on-a".into(),
            })
            .await
            .unwrap()
            .into_inner()
        }
    });
    wait_registered(&a, &QueueKey::new("default", &q, TaskKind::Activity)).await;
    b.workers()
        .await
        .respond_workflow_task_completed(pb::RespondWorkflowTaskCompletedRequest {
            task_token: task.task_token,
            commands: vec![pb::Command {
                attributes: Some(pb::command::Attributes::ScheduleActivity(
                    pb::ScheduleActivityTaskCommand {
                        activity_id: "1".into(),
                        activity_type: "reserve".into(),
                        input: json("1"),
                        ..Default::default()
                    },
                )),
            }],
            identity: "on-b".into(),
            sticky_queue: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    let act = tokio::time::timeout(Duration::from_secs(20), act_poll)
        .await
        .expect("woken by node B's commit")
        .unwrap();
    assert_eq!(act.activity_type, "reserve");
}

/// Nodes started together on a new database all start: one applies the migrations, the others
/// wait for it (a node blocked on the migration lock used to deadlock with the concurrent
/// index build of migration 0009, and PostgreSQL failed one node's start).
#[tokio::test]
async fn nodes_started_together_on_a_new_database_all_start() {
    let url = martix_tests::fresh_postgres_url().await;
    let starts = (0..6).map(|_| martix_engine::store::PostgresStore::connect(&url));
    let failures: Vec<String> = futures::future::join_all(starts)
        .await
        .into_iter()
        .filter_map(|s| s.err().map(|e| e.to_string()))
        .collect();
    martix_tests::drop_postgres_database(&url).await;
    assert!(failures.is_empty(), "{failures:?}");
}

/// A result waiter on the node that started a run begins from that node's copy of the run,
/// without a read; when another node closes the run, the waiter still learns it (at its next
/// recheck of the store) and answers with the close.
#[tokio::test]
async fn a_result_waiter_learns_of_a_close_on_another_node() {
    let mut config = EngineConfig::default();
    config.recheck_interval = Duration::from_millis(200);
    let a = TestEngine::start(Backend::Postgres, config.clone()).await;
    let b = TestEngine::start(Backend::Postgres, config).await;
    let id = unique("order");
    let started = a
        .workflows()
        .await
        .start_workflow(pb::StartWorkflowRequest {
            namespace: "default".into(),
            workflow_id: id.clone(),
            workflow_type: "order".into(),
            task_queue: unique("q"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let execution = pb::WorkflowExecution {
        workflow_id: id.clone(),
        run_id: started.run_id.clone(),
    };
    let waiter = tokio::spawn({
        let mut client = a.workflows().await;
        let execution = execution.clone();
        async move {
            client
                .get_workflow_result(pb::GetWorkflowResultRequest {
                    namespace: "default".into(),
                    execution: Some(execution),
                    wait: Some(pbjson_types::Duration {
                        seconds: 30,
                        nanos: 0,
                    }),
                })
                .await
                .unwrap()
                .into_inner()
        }
    });
    b.workflows()
        .await
        .terminate_workflow(pb::TerminateWorkflowRequest {
            namespace: "default".into(),
            execution: Some(execution),
            reason: "closed on node b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let result = waiter.await.unwrap();
    assert!(result.closed, "{result:?}");
    assert_eq!(result.status, pb::WorkflowStatus::Terminated as i32);
    let failure = result.failure.expect("a terminated run answers why");
    assert!(failure.message.contains("closed on node b"), "{failure:?}");
    // Asked without waiting, node A (whose copy still says open) reads before it answers.
    let now = a
        .workflows()
        .await
        .get_workflow_result(pb::GetWorkflowResultRequest {
            namespace: "default".into(),
            execution: Some(pb::WorkflowExecution {
                workflow_id: id,
                run_id: started.run_id,
            }),
            wait: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(now.closed, "{now:?}");
}
