//! The engine through its raw gRPC API, on PostgreSQL and on SQLite: the workflow task
//! cycle, activities, timers, signals, idempotent start, and every kind of bad input.

use martix_engine::EngineConfig;
use martix_engine::matching::{QueueKey, TaskKind};
use martix_proto::v1 as pb;
use martix_tests::{Backend, TestEngine, json, on_both_backends, unique};
use pb::command::Attributes as C;
use pb::history_event::Attributes as A;
use std::time::Duration;
use tonic::Code;

type Workflows = pb::workflow_service_client::WorkflowServiceClient<tonic::transport::Channel>;
type Workers = pb::worker_service_client::WorkerServiceClient<tonic::transport::Channel>;

fn fast() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.long_poll_timeout = Duration::from_secs(10);
    c.recheck_interval = Duration::from_millis(200);
    c.timer_poll_interval = Duration::from_millis(200);
    c
}

fn exec(workflow_id: &str) -> Option<pb::WorkflowExecution> {
    Some(pb::WorkflowExecution {
        workflow_id: workflow_id.into(),
        run_id: String::new(),
    })
}

async fn start(wf: &mut Workflows, id: &str, queue: &str) -> pb::StartWorkflowResponse {
    wf.start_workflow(pb::StartWorkflowRequest {
        namespace: "default".into(),
        workflow_id: id.into(),
        workflow_type: "order".into(),
        task_queue: queue.into(),
        input: json(r#"{"order_id":"1"}"#),
        ..Default::default()
    })
    .await
    .expect("start")
    .into_inner()
}

async fn poll_wft(w: &mut Workers, queue: &str) -> pb::PollWorkflowTaskResponse {
    let t = w
        .poll_workflow_task(pb::PollWorkflowTaskRequest {
            namespace: "default".into(),
            task_queue: queue.into(),
            identity: "test-worker".into(),
        })
        .await
        .expect("poll workflow task")
        .into_inner();
    assert!(!t.task_token.is_empty(), "a workflow task was expected");
    t
}

async fn poll_act(w: &mut Workers, queue: &str) -> pb::PollActivityTaskResponse {
    let t = w
        .poll_activity_task(pb::PollActivityTaskRequest {
            namespace: "default".into(),
            task_queue: queue.into(),
            identity: "test-worker".into(),
        })
        .await
        .expect("poll activity task")
        .into_inner();
    assert!(!t.task_token.is_empty(), "an activity task was expected");
    t
}

async fn complete(
    w: &mut Workers,
    token: &[u8],
    commands: Vec<pb::Command>,
) -> Result<(), tonic::Status> {
    w.respond_workflow_task_completed(pb::RespondWorkflowTaskCompletedRequest {
        task_token: token.to_vec(),
        commands,
        identity: "test-worker".into(),
        sticky_queue: String::new(),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

fn cmd(a: C) -> pb::Command {
    pb::Command {
        attributes: Some(a),
    }
}

fn schedule(id: &str) -> pb::Command {
    cmd(C::ScheduleActivity(pb::ScheduleActivityTaskCommand {
        activity_id: id.into(),
        activity_type: "reserve_inventory".into(),
        input: json(r#"{"sku":"A","qty":1}"#),
        start_to_close_timeout: Some(pbjson_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        ..Default::default()
    }))
}

fn complete_wf(result: &str) -> pb::Command {
    cmd(C::CompleteWorkflow(pb::CompleteWorkflowExecutionCommand {
        compensated: false,
        result: json(result),
    }))
}

fn kind(e: &pb::HistoryEvent) -> &'static str {
    match e.attributes.as_ref().expect("attributes") {
        A::WorkflowExecutionStarted(_) => "started",
        A::WorkflowTaskScheduled(_) => "wft_scheduled",
        A::WorkflowTaskStarted(_) => "wft_started",
        A::WorkflowTaskCompleted(_) => "wft_completed",
        A::WorkflowTaskFailed(_) => "wft_failed",
        A::ActivityTaskScheduled(_) => "act_scheduled",
        A::ActivityTaskStarted(_) => "act_started",
        A::ActivityTaskCompleted(_) => "act_completed",
        A::ActivityTaskFailed(_) => "act_failed",
        A::TimerStarted(_) => "timer_started",
        A::TimerFired(_) => "timer_fired",
        A::WorkflowExecutionSignaled(_) => "signaled",
        A::WorkflowExecutionCancelRequested(_) => "cancel_requested",
        A::WorkflowExecutionCompleted(_) => "completed",
        A::WorkflowExecutionTerminated(_) => "terminated",
        A::WorkflowExecutionContinuedAsNew(_) => "continued_as_new",
        _ => "other",
    }
}

fn kinds(events: &[pb::HistoryEvent]) -> Vec<&'static str> {
    events.iter().map(kind).collect()
}

async fn describe(wf: &mut Workflows, id: &str) -> pb::DescribeWorkflowResponse {
    wf.describe_workflow(pb::DescribeWorkflowRequest {
        namespace: "default".into(),
        execution: exec(id),
    })
    .await
    .expect("describe")
    .into_inner()
}

async fn history(wf: &mut Workflows, id: &str) -> Vec<pb::HistoryEvent> {
    wf.get_workflow_history(pb::GetWorkflowHistoryRequest {
        namespace: "default".into(),
        execution: exec(id),
        ..Default::default()
    })
    .await
    .expect("history")
    .into_inner()
    .events
}

async fn one_workflow_through_the_raw_api(backend: Backend) {
    let engine = TestEngine::start(backend, fast()).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let (id, q) = (unique("order"), unique("orders"));
    let started = start(&mut wf, &id, &q).await;
    assert!(started.started);

    let task = poll_wft(&mut w, &q).await;
    assert_eq!(kinds(&task.history), ["started", "wft_scheduled"]);
    assert_eq!(task.workflow_type, "order");
    assert_eq!(
        task.workflow_execution.as_ref().unwrap().run_id,
        started.run_id
    );
    complete(&mut w, &task.task_token, vec![schedule("reserve")])
        .await
        .unwrap();

    let act = poll_act(&mut w, &q).await;
    assert_eq!(act.activity_type, "reserve_inventory");
    assert_eq!(act.attempt, 1);
    assert_eq!(act.input.as_ref().unwrap().data, br#"{"sku":"A","qty":1}"#);
    w.respond_activity_task_completed(pb::RespondActivityTaskCompletedRequest {
        task_token: act.task_token,
        result: json(r#"{"reservation":"r-1"}"#),
        identity: "test-worker".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let task = poll_wft(&mut w, &q).await;
    let last = task
        .history
        .iter()
        .rev()
        .find(|e| kind(e) == "act_completed")
        .unwrap();
    match last.attributes.as_ref().unwrap() {
        A::ActivityTaskCompleted(a) => {
            assert_eq!(a.result.as_ref().unwrap().data, br#"{"reservation":"r-1"}"#)
        }
        _ => unreachable!(),
    }
    complete(
        &mut w,
        &task.task_token,
        vec![complete_wf(r#"{"outcome":"completed"}"#)],
    )
    .await
    .unwrap();

    let result = wf
        .get_workflow_result(pb::GetWorkflowResultRequest {
            namespace: "default".into(),
            execution: exec(&id),
            wait: Some(pbjson_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(result.closed);
    assert_eq!(result.status, pb::WorkflowStatus::Completed as i32);
    assert_eq!(result.result.unwrap().data, br#"{"outcome":"completed"}"#);

    let events = history(&mut wf, &id).await;
    assert_eq!(
        kinds(&events),
        [
            "started",
            "wft_scheduled",
            "wft_started",
            "wft_completed",
            "act_scheduled",
            "act_started",
            "act_completed",
            "wft_scheduled",
            "wft_started",
            "wft_completed",
            "completed"
        ]
    );
    let ids: Vec<i64> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(
        ids,
        (1..=11).collect::<Vec<_>>(),
        "event ids are dense from 1"
    );

    let d = describe(&mut wf, &id).await;
    let info = d.info.unwrap();
    assert_eq!(info.status, pb::WorkflowStatus::Completed as i32);
    assert_eq!(info.history_length, 11);
    assert!(d.pending_activities.is_empty() && d.pending_workflow_task.is_none());
}

async fn start_is_idempotent_and_follows_the_reuse_policy(backend: Backend) {
    let engine = TestEngine::start(backend, fast()).await;
    let mut wf = engine.workflows().await;
    let (id, q) = (unique("order"), unique("q"));
    let first = start(&mut wf, &id, &q).await;
    let again = start(&mut wf, &id, &q).await;
    assert_eq!(
        again.run_id, first.run_id,
        "a running id returns the running run"
    );
    assert!(!again.started);

    wf.terminate_workflow(pb::TerminateWorkflowRequest {
        namespace: "default".into(),
        execution: exec(&id),
        reason: "test".into(),
        identity: "ops".into(),
    })
    .await
    .unwrap();
    let mut req = pb::StartWorkflowRequest {
        namespace: "default".into(),
        workflow_id: id.clone(),
        workflow_type: "order".into(),
        task_queue: q.clone(),
        id_reuse_policy: pb::IdReusePolicy::RejectDuplicate as i32,
        ..Default::default()
    };
    let err = wf.start_workflow(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    req.id_reuse_policy = pb::IdReusePolicy::AllowDuplicateFailedOnly as i32;
    let second = wf.start_workflow(req.clone()).await.unwrap().into_inner();
    assert!(second.started && second.run_id != first.run_id);

    // Concurrent starts of one new id make exactly one run.
    let id = unique("order");
    let mut starts = Vec::new();
    for _ in 0..8 {
        let mut c = wf.clone();
        let id = id.clone();
        let q = q.clone();
        starts.push(tokio::spawn(async move { start(&mut c, &id, &q).await }));
    }
    let mut runs = std::collections::HashSet::new();
    let mut started = 0;
    for s in starts {
        let r = s.await.unwrap();
        started += usize::from(r.started);
        runs.insert(r.run_id);
    }
    assert_eq!((runs.len(), started), (1, 1));
}

async fn bad_input_is_rejected_with_the_field_named_and_nothing_stored(backend: Backend) {
    let mut config = fast();
    config.max_payload_bytes = 1024;
    let engine = TestEngine::start(backend, config).await;
    let mut wf = engine.workflows().await;
    let q = unique("q");
    let base = pb::StartWorkflowRequest {
        namespace: "default".into(),
        workflow_id: unique("order"),
        workflow_type: "order".into(),
        task_queue: q.clone(),
        ..Default::default()
    };
    let cases: Vec<(pb::StartWorkflowRequest, Code, &str)> = vec![
        (
            pb::StartWorkflowRequest {
                workflow_id: String::new(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "workflow_id",
        ),
        (
            pb::StartWorkflowRequest {
                workflow_id: "x".repeat(256),
                ..base.clone()
            },
            Code::InvalidArgument,
            "workflow_id",
        ),
        (
            pb::StartWorkflowRequest {
                workflow_type: String::new(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "workflow_type",
        ),
        (
            pb::StartWorkflowRequest {
                task_queue: "y".repeat(300),
                ..base.clone()
            },
            Code::InvalidArgument,
            "task_queue",
        ),
        (
            pb::StartWorkflowRequest {
                namespace: "no-such-namespace".into(),
                ..base.clone()
            },
            Code::InvalidArgument,
            "namespace",
        ),
        (
            pb::StartWorkflowRequest {
                workflow_task_timeout: Some(pbjson_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                ..base.clone()
            },
            Code::InvalidArgument,
            "invalid workflow_task_timeout: is 3600000 ms; it must be between 1s and 10m",
        ),
        (
            pb::StartWorkflowRequest {
                input: json(&format!("\"{}\"", "z".repeat(2000))),
                ..base.clone()
            },
            Code::ResourceExhausted,
            "input",
        ),
        (
            pb::StartWorkflowRequest {
                workflow_run_timeout: Some(pbjson_types::Duration {
                    seconds: -5,
                    nanos: 0,
                }),
                ..base.clone()
            },
            Code::InvalidArgument,
            "workflow_run_timeout",
        ),
    ];
    for (req, code, field) in cases {
        let err = wf.start_workflow(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{field}: {err:?}");
        assert!(
            err.message().contains(field),
            "message must name {field}: {}",
            err.message()
        );
    }
    let listed = wf
        .list_workflows(pb::ListWorkflowsRequest {
            namespace: "default".into(),
            task_queue: q.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.executions.is_empty(), "no rejected start was stored");

    for token in [b"garbage".to_vec(), b"l1:notanumber:x".to_vec()] {
        let err = wf
            .list_workflows(pb::ListWorkflowsRequest {
                namespace: "default".into(),
                next_page_token: token,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("next_page_token"),
            "{}",
            err.message()
        );
    }
    let id = unique("order");
    start(&mut wf, &id, &q).await;
    let err = wf
        .get_workflow_history(pb::GetWorkflowHistoryRequest {
            namespace: "default".into(),
            execution: exec(&id),
            next_page_token: b"h1:-3".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("next_page_token"));
    let err = wf
        .signal_workflow(pb::SignalWorkflowRequest {
            namespace: "default".into(),
            execution: exec(&id),
            signal_name: "go".into(),
            input: json(&"s".repeat(4000)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        history(&mut wf, &id).await.len(),
        2,
        "the oversized signal changed nothing"
    );
    let err = wf
        .describe_workflow(pb::DescribeWorkflowRequest {
            namespace: "default".into(),
            execution: exec(&unique("never-started")),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

async fn forged_stale_and_duplicate_tokens_change_nothing(backend: Backend) {
    let engine = TestEngine::start(backend, fast()).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let (id, q) = (unique("order"), unique("q"));
    start(&mut wf, &id, &q).await;
    let task = poll_wft(&mut w, &q).await;

    let err = complete(&mut w, b"not a token", vec![]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("task_token"));
    // A well-formed token with another lease: forged.
    let mut forged = martix_engine::history::TaskToken::decode_from(&task.task_token)
        .unwrap()
        .0;
    forged.lease_id = "0123456789abcdef0123456789abcdef".into();
    let err = complete(
        &mut w,
        &prost::Message::encode_to_vec(&forged),
        vec![complete_wf("1")],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert_eq!(
        history(&mut wf, &id).await.len(),
        2,
        "forged completion changed nothing"
    );

    complete(&mut w, &task.task_token, vec![schedule("a")])
        .await
        .unwrap();
    let len = history(&mut wf, &id).await.len();
    let err = complete(&mut w, &task.task_token, vec![complete_wf("1")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "duplicate completion: {err}");
    assert_eq!(history(&mut wf, &id).await.len(), len);

    let act = poll_act(&mut w, &q).await;
    let done = pb::RespondActivityTaskCompletedRequest {
        task_token: act.task_token.clone(),
        result: json("1"),
        identity: "w".into(),
        ..Default::default()
    };
    // A workflow token where an activity token belongs.
    let err = w
        .respond_activity_task_completed(pb::RespondActivityTaskCompletedRequest {
            task_token: task.task_token.clone(),
            ..done.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    w.respond_activity_task_completed(done.clone())
        .await
        .unwrap();
    let len = history(&mut wf, &id).await.len();
    let err = w.respond_activity_task_completed(done).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "duplicate activity completion: {err}"
    );
    let err = w
        .respond_activity_task_failed(pb::RespondActivityTaskFailedRequest {
            task_token: act.task_token,
            failure: Some(pb::Failure {
                message: "late".into(),
                ..Default::default()
            }),
            identity: "w".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "stale failure: {err}");
    assert_eq!(history(&mut wf, &id).await.len(), len);
}

async fn commands_that_break_history_fail_the_task_and_keep_history(backend: Backend) {
    let engine = TestEngine::start(backend, fast()).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let (id, q) = (unique("order"), unique("q"));
    start(&mut wf, &id, &q).await;
    let task = poll_wft(&mut w, &q).await;
    let err = complete(&mut w, &task.task_token, vec![schedule("a"), schedule("a")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("activity_id 'a' is already used"),
        "{}",
        err.message()
    );
    let events = history(&mut wf, &id).await;
    assert_eq!(
        kinds(&events),
        ["started", "wft_scheduled", "wft_started", "wft_failed"]
    );
    let d = describe(&mut wf, &id).await;
    let pending = d.pending_workflow_task.unwrap();
    assert_eq!(pending.attempt, 2);
    assert!(
        pending
            .last_failure
            .unwrap()
            .message
            .contains("already used")
    );

    let task = poll_wft(&mut w, &q).await;
    assert_eq!(task.attempt, 2);
    let err = complete(
        &mut w,
        &task.task_token,
        vec![cmd(C::CancelTimer(pb::CancelTimerCommand {
            timer_id: "nope".into(),
        }))],
    )
    .await
    .unwrap_err();
    assert!(err.message().contains("never started"), "{}", err.message());
    assert_eq!(
        history(&mut wf, &id).await.len(),
        4,
        "a retried task's failure adds no events"
    );
}

async fn a_waiting_poller_is_woken_by_the_commit_not_a_timer(backend: Backend) {
    let mut config = fast();
    config.recheck_interval = Duration::from_secs(120);
    config.long_poll_timeout = Duration::from_secs(60);
    let engine = TestEngine::start(backend, config).await;
    let (mut wf, w) = (engine.workflows().await, engine.workers().await);
    let q = unique("q");
    let poll = tokio::spawn({
        let mut w = w.clone();
        let q = q.clone();
        async move { poll_wft(&mut w, &q).await }
    });
    let key = QueueKey::new("default", &q, TaskKind::Workflow);
    tokio::time::timeout(Duration::from_secs(10), async {
        while engine.engine.matching().waiting(&key) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the poller registers");
    let id = unique("order");
    start(&mut wf, &id, &q).await;
    let task = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("woken long before the 120 s recheck")
        .unwrap();
    assert_eq!(task.workflow_execution.unwrap().workflow_id, id);
}

async fn an_empty_poll_answers_after_the_deadline(backend: Backend) {
    let mut config = fast();
    config.long_poll_timeout = Duration::from_millis(300);
    let engine = TestEngine::start(backend, config).await;
    let mut w = engine.workers().await;
    let t = w
        .poll_activity_task(pb::PollActivityTaskRequest {
            namespace: "default".into(),
            task_queue: unique("empty"),
            identity: "w".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(t.task_token.is_empty());
}

async fn signals_during_a_task_are_delivered_after_it(backend: Backend) {
    let engine = TestEngine::start(backend, fast()).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let (id, q) = (unique("order"), unique("q"));
    start(&mut wf, &id, &q).await;
    let task = poll_wft(&mut w, &q).await;
    wf.signal_workflow(pb::SignalWorkflowRequest {
        namespace: "default".into(),
        execution: exec(&id),
        signal_name: "approve".into(),
        input: json("true"),
        identity: "ops".into(),
        request_id: String::new(),
    })
    .await
    .unwrap();
    // Closing now would lose the signal: refused, and a new task delivers it.
    let err = complete(&mut w, &task.task_token, vec![complete_wf("1")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("unhandled events"));
    let task = poll_wft(&mut w, &q).await;
    assert_eq!(
        kinds(&task.history),
        ["started", "wft_scheduled", "signaled"]
    );
    complete(&mut w, &task.task_token, vec![complete_wf("1")])
        .await
        .unwrap();
    let err = wf
        .signal_workflow(pb::SignalWorkflowRequest {
            namespace: "default".into(),
            execution: exec(&id),
            signal_name: "late".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "closed runs take no signals"
    );
}

async fn timers_fire_and_activities_retry(backend: Backend) {
    let engine = TestEngine::start(backend, fast()).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let (id, q) = (unique("order"), unique("q"));
    start(&mut wf, &id, &q).await;
    let task = poll_wft(&mut w, &q).await;
    let mut sched = schedule("charge");
    if let Some(C::ScheduleActivity(s)) = sched.attributes.as_mut() {
        s.retry_policy = Some(pb::RetryPolicy {
            initial_interval: Some(pbjson_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
            ..Default::default()
        });
    }
    let timer = cmd(C::StartTimer(pb::StartTimerCommand {
        timer_id: "nap".into(),
        start_to_fire_timeout: Some(pbjson_types::Duration {
            seconds: 0,
            nanos: 300_000_000,
        }),
    }));
    complete(&mut w, &task.task_token, vec![sched, timer])
        .await
        .unwrap();

    let act = poll_act(&mut w, &q).await;
    w.respond_activity_task_failed(pb::RespondActivityTaskFailedRequest {
        task_token: act.task_token,
        failure: Some(pb::Failure {
            message: "gateway timeout".into(),
            r#type: "Io".into(),
            ..Default::default()
        }),
        identity: "w".into(),
    })
    .await
    .unwrap();
    let act = poll_act(&mut w, &q).await;
    assert_eq!(act.attempt, 2, "retried after the backoff");

    // Meanwhile the timer fired and a workflow task reports it.
    let task = poll_wft(&mut w, &q).await;
    assert_eq!(kind(task.history.last().unwrap()), "wft_scheduled");
    assert!(task.history.iter().any(|e| kind(e) == "timer_fired"));
    assert!(
        !task.history.iter().any(|e| kind(e) == "act_failed"),
        "a retried attempt is not in history"
    );
    w.respond_activity_task_completed(pb::RespondActivityTaskCompletedRequest {
        task_token: act.task_token,
        result: json("\"ok\""),
        identity: "w".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    complete(&mut w, &task.task_token, vec![]).await.unwrap();
    let task = poll_wft(&mut w, &q).await;
    let started = task
        .history
        .iter()
        .find_map(|e| match e.attributes.as_ref() {
            Some(A::ActivityTaskStarted(s)) => Some(s.clone()),
            _ => None,
        })
        .expect("the final attempt is recorded");
    assert_eq!(started.attempt, 2);
    assert_eq!(started.last_failure.unwrap().message, "gateway timeout");
    complete(&mut w, &task.task_token, vec![complete_wf("1")])
        .await
        .unwrap();
}

async fn continue_as_new_starts_the_next_run(backend: Backend) {
    let engine = TestEngine::start(backend, fast()).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let (id, q) = (unique("loop"), unique("q"));
    let first = start(&mut wf, &id, &q).await;
    let task = poll_wft(&mut w, &q).await;
    complete(
        &mut w,
        &task.task_token,
        vec![cmd(C::ContinueAsNew(
            pb::ContinueAsNewWorkflowExecutionCommand {
                input: json("2"),
                ..Default::default()
            },
        ))],
    )
    .await
    .unwrap();
    let result = wf
        .get_workflow_result(pb::GetWorkflowResultRequest {
            namespace: "default".into(),
            execution: Some(pb::WorkflowExecution {
                workflow_id: id.clone(),
                run_id: first.run_id.clone(),
            }),
            wait: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(result.status, pb::WorkflowStatus::ContinuedAsNew as i32);
    let task = poll_wft(&mut w, &q).await;
    assert_eq!(
        task.workflow_execution.as_ref().unwrap().run_id,
        result.new_run_id
    );
    match task.history[0].attributes.as_ref().unwrap() {
        A::WorkflowExecutionStarted(s) => {
            assert_eq!(s.input.as_ref().unwrap().data, b"2");
            assert_eq!(s.continued_from_run_id, first.run_id);
        }
        _ => panic!("a run starts with WorkflowExecutionStarted"),
    }
}

async fn result_waits_for_the_close(backend: Backend) {
    // No periodic look: a waiter learns of a close on this node from the close itself.
    let mut config = fast();
    config.recheck_interval = Duration::from_secs(60);
    let engine = TestEngine::start(backend, config).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let (id, q) = (unique("order"), unique("q"));
    start(&mut wf, &id, &q).await;
    let not_yet = wf
        .get_workflow_result(pb::GetWorkflowResultRequest {
            namespace: "default".into(),
            execution: exec(&id),
            wait: Some(pbjson_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!not_yet.closed);
    let waiting = tokio::spawn({
        let mut wf = wf.clone();
        let id = id.clone();
        async move {
            wf.get_workflow_result(pb::GetWorkflowResultRequest {
                namespace: "default".into(),
                execution: exec(&id),
                wait: Some(pbjson_types::Duration {
                    seconds: 20,
                    nanos: 0,
                }),
            })
            .await
            .unwrap()
            .into_inner()
        }
    });
    let task = poll_wft(&mut w, &q).await;
    complete(
        &mut w,
        &task.task_token,
        vec![cmd(C::FailWorkflow(pb::FailWorkflowExecutionCommand {
            failure: Some(pb::Failure {
                message: "out of stock".into(),
                r#type: "OutOfStock".into(),
                ..Default::default()
            }),
        }))],
    )
    .await
    .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered by the close, long before the 60 s recheck")
        .unwrap();
    assert!(result.closed);
    assert_eq!(result.status, pb::WorkflowStatus::Failed as i32);
    assert_eq!(result.failure.unwrap().r#type, "OutOfStock");
    assert_eq!(
        engine.engine.result_waiters(),
        0,
        "a waiter that got its answer is gone"
    );

    // A close wakes its own run's waiters only; a waiter that goes away is forgotten.
    let other = unique("order");
    let started = start(&mut wf, &other, &q).await;
    let other_waiting = tokio::spawn({
        let mut wf = wf.clone();
        let other = other.clone();
        async move {
            wf.get_workflow_result(pb::GetWorkflowResultRequest {
                namespace: "default".into(),
                execution: Some(pb::WorkflowExecution {
                    workflow_id: other,
                    run_id: started.run_id,
                }),
                wait: Some(pbjson_types::Duration {
                    seconds: 20,
                    nanos: 0,
                }),
            })
            .await
        }
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while engine.engine.result_waiters() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the waiter registers");
    let third = unique("order");
    start(&mut wf, &third, &q).await;
    let (a, b) = (poll_wft(&mut w, &q).await, poll_wft(&mut w, &q).await);
    let task3 = if a.workflow_execution.as_ref().unwrap().workflow_id == third {
        a
    } else {
        b
    };
    assert_eq!(
        task3.workflow_execution.as_ref().unwrap().workflow_id,
        third
    );
    complete(&mut w, &task3.task_token, vec![complete_wf(r#""done""#)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !other_waiting.is_finished(),
        "another run's close is not its answer"
    );
    assert_eq!(engine.engine.result_waiters(), 1);
    other_waiting.abort();
    tokio::time::timeout(Duration::from_secs(10), async {
        while engine.engine.result_waiters() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a waiter whose caller went away is forgotten");
}

async fn sticky_tasks_carry_only_new_events_and_fall_back_to_the_queue(backend: Backend) {
    let mut config = fast();
    config.sticky_schedule_to_start_timeout = Duration::from_millis(300);
    let engine = TestEngine::start(backend, config).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let (id, q) = (unique("order"), unique("q"));
    let sticky = format!("{q}/sticky/w1");
    start(&mut wf, &id, &q).await;
    let task = poll_wft(&mut w, &q).await;
    assert_eq!(task.history.len(), 2);
    w.respond_workflow_task_completed(pb::RespondWorkflowTaskCompletedRequest {
        task_token: task.task_token,
        commands: vec![schedule("a")],
        identity: "w1".into(),
        sticky_queue: sticky.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let act = poll_act(&mut w, &q).await;
    w.respond_activity_task_completed(pb::RespondActivityTaskCompletedRequest {
        task_token: act.task_token,
        result: json("1"),
        identity: "w1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // The sticky worker gets only what it has not seen: its own task's events and after.
    let task = poll_wft(&mut w, &sticky).await;
    assert_eq!(task.history[0].event_id, 3);
    assert_eq!(
        kinds(&task.history),
        [
            "wft_started",
            "wft_completed",
            "act_scheduled",
            "act_started",
            "act_completed",
            "wft_scheduled"
        ]
    );
    w.respond_workflow_task_completed(pb::RespondWorkflowTaskCompletedRequest {
        task_token: task.task_token,
        commands: vec![cmd(C::StartTimer(pb::StartTimerCommand {
            timer_id: "t".into(),
            start_to_fire_timeout: Some(pbjson_types::Duration {
                seconds: 0,
                nanos: 1_000_000,
            }),
        }))],
        identity: "w1".into(),
        sticky_queue: sticky.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    // Nobody polls the sticky queue now: after the sticky timeout, the run's queue gets the
    // task with the full history.
    let task = poll_wft(&mut w, &q).await;
    assert_eq!(task.history[0].event_id, 1);
    assert_eq!(kind(task.history.last().unwrap()), "wft_scheduled");
    assert!(task.history.iter().any(|e| kind(e) == "timer_fired"));
}

fn millis(ms: i32) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::from(ms / 1000),
        nanos: (ms % 1000) * 1_000_000,
    }
}

async fn a_timed_out_attempt_is_retried_and_its_late_answer_refused(backend: Backend) {
    let engine = TestEngine::start(backend, fast()).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let (id, q) = (unique("order"), unique("q"));
    start(&mut wf, &id, &q).await;
    let task = poll_wft(&mut w, &q).await;
    let timed = |id: &str, s2c_ms: i32, hb_ms: Option<i32>, max: i32| {
        cmd(C::ScheduleActivity(pb::ScheduleActivityTaskCommand {
            activity_id: id.into(),
            activity_type: "charge".into(),
            start_to_close_timeout: Some(millis(s2c_ms)),
            heartbeat_timeout: hb_ms.map(millis),
            retry_policy: Some(pb::RetryPolicy {
                initial_interval: Some(pbjson_types::Duration {
                    seconds: 0,
                    nanos: 50_000_000,
                }),
                maximum_attempts: max,
                ..Default::default()
            }),
            ..Default::default()
        }))
    };
    complete(&mut w, &task.task_token, vec![timed("slow", 300, None, 0)])
        .await
        .unwrap();

    // The first attempt hangs past its start-to-close timeout (a stopped worker).
    let hung = poll_act(&mut w, &q).await;
    assert_eq!(hung.attempt, 1);
    let retried = poll_act(&mut w, &q).await;
    assert_eq!(
        retried.attempt, 2,
        "the engine retried the timed-out attempt"
    );
    let late = w
        .respond_activity_task_completed(pb::RespondActivityTaskCompletedRequest {
            task_token: hung.task_token,
            result: json("\"late\""),
            identity: "stopped-worker".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        late.code(),
        Code::NotFound,
        "the late answer is refused: {late}"
    );
    w.respond_activity_task_completed(pb::RespondActivityTaskCompletedRequest {
        task_token: retried.task_token,
        result: json("\"on time\""),
        identity: "w2".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let task = poll_wft(&mut w, &q).await;
    let started = task
        .history
        .iter()
        .find_map(|e| match &e.attributes {
            Some(A::ActivityTaskStarted(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(started.attempt, 2);
    assert_eq!(started.last_failure.unwrap().r#type, "StartToCloseTimeout");
    let result = task
        .history
        .iter()
        .find_map(|e| match &e.attributes {
            Some(A::ActivityTaskCompleted(c)) => c.result.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(result.data, b"\"on time\"", "the retry's result stands");

    // A missed heartbeat ends the attempt long before start-to-close; with one attempt
    // allowed, the timeout reaches the workflow.
    complete(
        &mut w,
        &task.task_token,
        vec![timed("beat", 30_000, Some(300), 1)],
    )
    .await
    .unwrap();
    let silent = poll_act(&mut w, &q).await;
    assert_eq!(silent.heartbeat_timeout.unwrap().nanos, 300_000_000);
    let task = poll_wft(&mut w, &q).await;
    let timed_out = task
        .history
        .iter()
        .find_map(|e| match &e.attributes {
            Some(A::ActivityTaskTimedOut(t)) => t.failure.clone(),
            _ => None,
        })
        .expect("the final timeout is in history");
    assert_eq!(timed_out.r#type, "HeartbeatTimeout");
}

async fn schedule_timeouts_and_the_run_timeout_are_durable_timers(backend: Backend) {
    let engine = TestEngine::start(backend, fast()).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let (id, q) = (unique("order"), unique("q"));
    start(&mut wf, &id, &q).await;
    let task = poll_wft(&mut w, &q).await;
    // Nobody polls the activities' queue: both time out while waiting.
    let waiting = |id: &str, s2s: Option<i32>, s2c: Option<i32>| {
        cmd(C::ScheduleActivity(pb::ScheduleActivityTaskCommand {
            activity_id: id.into(),
            activity_type: "ship".into(),
            task_queue: "nobody-polls-this".into(),
            schedule_to_start_timeout: s2s.map(millis),
            schedule_to_close_timeout: s2c.map(millis),
            ..Default::default()
        }))
    };
    complete(
        &mut w,
        &task.task_token,
        vec![waiting("a", Some(200), None), waiting("b", None, Some(400))],
    )
    .await
    .unwrap();
    let mut kinds_seen = Vec::new();
    for _ in 0..2 {
        let task = poll_wft(&mut w, &q).await;
        kinds_seen = task
            .history
            .iter()
            .filter_map(|e| match &e.attributes {
                Some(A::ActivityTaskTimedOut(t)) => t.failure.as_ref().map(|f| f.r#type.clone()),
                _ => None,
            })
            .collect();
        if kinds_seen.len() == 2 {
            break;
        }
        complete(&mut w, &task.task_token, vec![]).await.unwrap();
    }
    assert_eq!(
        kinds_seen,
        ["ScheduleToStartTimeout", "ScheduleToCloseTimeout"]
    );

    // A run with a run timeout ends TimedOut when nobody completes it.
    let id = unique("order");
    wf.start_workflow(pb::StartWorkflowRequest {
        namespace: "default".into(),
        workflow_id: id.clone(),
        workflow_type: "order".into(),
        task_queue: unique("idle"),
        workflow_run_timeout: Some(millis(300)),
        ..Default::default()
    })
    .await
    .unwrap();
    let result = wf
        .get_workflow_result(pb::GetWorkflowResultRequest {
            namespace: "default".into(),
            execution: exec(&id),
            wait: Some(millis(10_000)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(result.closed);
    assert_eq!(result.status, pb::WorkflowStatus::TimedOut as i32);
}

async fn an_operator_retries_a_backing_off_activity_now(backend: Backend) {
    let engine = TestEngine::start(backend, fast()).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let (id, q) = (unique("order"), unique("q"));
    start(&mut wf, &id, &q).await;
    let task = poll_wft(&mut w, &q).await;
    let mut sched = schedule("charge");
    if let Some(C::ScheduleActivity(s)) = sched.attributes.as_mut() {
        s.retry_policy = Some(pb::RetryPolicy {
            initial_interval: Some(millis(60_000)),
            ..Default::default()
        });
    }
    complete(&mut w, &task.task_token, vec![sched])
        .await
        .unwrap();
    let retry = |reset: bool, activity_id: &str| pb::RetryActivityRequest {
        namespace: "default".into(),
        execution: exec(&id),
        activity_id: activity_id.into(),
        reset_attempts: reset,
    };
    let err = wf.retry_activity(retry(false, "")).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "nothing waits yet: {err}"
    );
    let act = poll_act(&mut w, &q).await;
    w.respond_activity_task_failed(pb::RespondActivityTaskFailedRequest {
        task_token: act.task_token,
        failure: Some(pb::Failure {
            message: "gateway down".into(),
            ..Default::default()
        }),
        identity: "w".into(),
    })
    .await
    .unwrap();
    let d = describe(&mut wf, &id).await;
    let pending = &d.pending_activities[0];
    assert_eq!(pending.state, pb::PendingActivityState::BackingOff as i32);
    assert_eq!(pending.attempt, 2);
    assert!(pending.next_attempt_time.is_some());
    assert_eq!(
        pending.last_failure.as_ref().unwrap().message,
        "gateway down"
    );

    let err = wf.retry_activity(retry(false, "nope")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let resp = wf
        .retry_activity(retry(true, "charge"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.activity_ids, ["charge"]);
    // Available at once (not in 60 s), from attempt 1 again.
    let act = tokio::time::timeout(Duration::from_secs(5), poll_act(&mut w, &q))
        .await
        .expect("retried now");
    assert_eq!(act.attempt, 1);
}

async fn a_reset_starts_a_new_run_from_a_workflow_task_boundary(backend: Backend) {
    let engine = TestEngine::start(backend, fast()).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let (id, q) = (unique("order"), unique("q"));
    let first = start(&mut wf, &id, &q).await;
    // Task 1 schedules `a`; `a` completes; task 2 schedules `b`, which then waits.
    let task = poll_wft(&mut w, &q).await;
    complete(&mut w, &task.task_token, vec![schedule("a")])
        .await
        .unwrap();
    let act = poll_act(&mut w, &q).await;
    w.respond_activity_task_completed(pb::RespondActivityTaskCompletedRequest {
        task_token: act.task_token,
        result: json("\"A\""),
        identity: "w".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let task = poll_wft(&mut w, &q).await;
    complete(&mut w, &task.task_token, vec![schedule("b")])
        .await
        .unwrap();
    let old = history(&mut wf, &id).await;
    let second_completed = old
        .iter()
        .filter(|e| kind(e) == "wft_completed")
        .nth(1)
        .unwrap()
        .event_id;

    let bad = wf
        .reset_workflow(pb::ResetWorkflowRequest {
            namespace: "default".into(),
            execution: exec(&id),
            workflow_task_finish_event_id: 3,
            reason: "test".into(),
            identity: "ops".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        bad.code(),
        Code::InvalidArgument,
        "event 3 is no WorkflowTaskCompleted: {bad}"
    );

    // Reset to the second task: `a` and its result are kept; `b` is not, the task runs again.
    let reset = wf
        .reset_workflow(pb::ResetWorkflowRequest {
            namespace: "default".into(),
            execution: exec(&id),
            workflow_task_finish_event_id: second_completed,
            reason: "b was a mistake".into(),
            identity: "ops".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(reset.run_id, first.run_id);
    let old_result = wf
        .get_workflow_result(pb::GetWorkflowResultRequest {
            namespace: "default".into(),
            execution: Some(pb::WorkflowExecution {
                workflow_id: id.clone(),
                run_id: first.run_id.clone(),
            }),
            wait: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old_result.status, pb::WorkflowStatus::Terminated as i32);
    assert!(
        old_result.failure.unwrap().message.contains(&reset.run_id),
        "the old run names the new one"
    );

    let task = poll_wft(&mut w, &q).await;
    assert_eq!(
        task.workflow_execution.as_ref().unwrap().run_id,
        reset.run_id
    );
    let kinds_new = kinds(&task.history);
    assert_eq!(
        kinds_new,
        [
            "started",
            "wft_scheduled",
            "wft_started",
            "wft_completed",
            "act_scheduled",
            "act_started",
            "act_completed",
            "wft_scheduled",
            "wft_started",
            "wft_failed",
            "wft_scheduled"
        ]
    );
    let ids: Vec<i64> = task.history.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, (1..=11).collect::<Vec<_>>());
    let d = describe(&mut wf, &id).await;
    assert!(
        d.pending_activities.is_empty(),
        "b was after the reset point"
    );
    // The new run goes on normally.
    complete(&mut w, &task.task_token, vec![complete_wf("\"done\"")])
        .await
        .unwrap();
    let r = wf
        .get_workflow_result(pb::GetWorkflowResultRequest {
            namespace: "default".into(),
            execution: exec(&id),
            wait: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, pb::WorkflowStatus::Completed as i32);
}

/// A run at its first activity, as a caching worker sees it: the workflow task completed
/// with `return_history` on sticky queue `sticky` (the events come back), the activity polled.
async fn at_first_activity(
    engine: &TestEngine,
    sticky: &str,
) -> (String, pb::PollActivityTaskResponse, i64) {
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let (id, q) = (unique("order"), unique("orders"));
    start(&mut wf, &id, &q).await;
    let task = poll_wft(&mut w, &q).await;
    let done = w
        .respond_workflow_task_completed(pb::RespondWorkflowTaskCompletedRequest {
            task_token: task.task_token.clone(),
            commands: vec![schedule("reserve")],
            identity: "test-worker".into(),
            sticky_queue: sticky.into(),
            return_history: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        kinds(&done.history),
        ["wft_started", "wft_completed", "act_scheduled"],
        "the completion returns the events it appended"
    );
    assert_eq!(done.history[0].event_id, 3);
    let act = poll_act(&mut w, &q).await;
    assert_eq!(
        act.scheduled_event_id, 5,
        "the activity names its scheduled event"
    );
    (id, act, 5)
}

fn now_ts(offset_ms: i64) -> Option<pbjson_types::Timestamp> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + offset_ms;
    Some(pbjson_types::Timestamp {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

fn decision(history_len: i64, commands: Vec<pb::Command>, sticky: &str) -> pb::WorkflowDecision {
    pb::WorkflowDecision {
        history_len,
        decided_at: now_ts(0),
        commands,
        sticky_queue: sticky.into(),
        ..Default::default()
    }
}

async fn complete_with(
    w: &mut Workers,
    act: &pb::PollActivityTaskResponse,
    decision: pb::WorkflowDecision,
) -> Result<pb::RespondActivityTaskCompletedResponse, tonic::Status> {
    w.respond_activity_task_completed(pb::RespondActivityTaskCompletedRequest {
        task_token: act.task_token.clone(),
        result: json(r#"{"reservation":"r-1"}"#),
        identity: "test-worker".into(),
        decision: Some(decision),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

async fn a_decision_made_ahead_is_recorded_with_the_result_or_not_at_all(backend: Backend) {
    // A database of its own: the write transactions counted are this test's alone (an engine
    // on the shared one also fires other tests' timers and reaps their leases).
    let own = match backend {
        Backend::Postgres => Some(martix_tests::fresh_postgres_url().await),
        Backend::Sqlite => None,
    };
    let engine = match &own {
        Some(url) => TestEngine::start_on(url, fast(), Default::default()).await,
        None => TestEngine::start(backend, fast()).await,
    };
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let sticky = unique("sticky");
    let writes = || engine.engine.store().write_transactions();

    // The run has nothing new: the result and the decision are one transaction.
    let (id, act, len) = at_first_activity(&engine, &sticky).await;
    let d = decision(
        len,
        vec![complete_wf(r#"{"outcome":"completed"}"#)],
        &sticky,
    );
    let at = d.decided_at;
    let before = writes();
    let r = complete_with(&mut w, &act, d).await.unwrap();
    assert_eq!(writes() - before, 1, "one write transaction for both");
    assert!(r.decision_recorded);
    assert!(r.workflow_task.is_none());
    let expected = [
        "act_started",
        "act_completed",
        "wft_scheduled",
        "wft_started",
        "wft_completed",
        "completed",
    ];
    assert_eq!(kinds(&r.history), expected);
    let events = history(&mut wf, &id).await;
    assert_eq!(
        events[5..],
        r.history[..],
        "the answer holds what history holds"
    );
    assert_eq!(
        events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        (1..=11).collect::<Vec<_>>()
    );
    assert!(
        events[5..8].iter().all(|e| e.event_time == at),
        "the result's events carry the decision's time"
    );
    assert_eq!(
        describe(&mut wf, &id).await.info.unwrap().status,
        pb::WorkflowStatus::Completed as i32
    );

    // Refused, the result alone is recorded and a workflow task delivers it as usual.
    let sticky_poll = |w: &mut Workers| {
        let mut w = w.clone();
        let sticky = sticky.clone();
        async move { poll_wft(&mut w, &sticky).await }
    };
    type MakeDecision<'a> = Box<dyn Fn(i64) -> pb::WorkflowDecision + 'a>;
    let other_sticky = unique("sticky");
    let big = "x".repeat(3 << 20);
    let cases: [(&str, MakeDecision); 6] = [
        (
            "a copy one event behind",
            Box::new(|len| decision(len - 1, vec![complete_wf("{}")], &sticky)),
        ),
        (
            "a time thirty seconds before the engine's",
            Box::new(|len| pb::WorkflowDecision {
                decided_at: now_ts(-30_000),
                ..decision(len, vec![complete_wf("{}")], &sticky)
            }),
        ),
        (
            "a time after the engine's",
            Box::new(|len| pb::WorkflowDecision {
                decided_at: now_ts(500),
                ..decision(len, vec![complete_wf("{}")], &sticky)
            }),
        ),
        (
            "a worker that does not keep the run",
            Box::new(|len| decision(len, vec![complete_wf("{}")], &other_sticky)),
        ),
        (
            "commands over the payload limit",
            Box::new(|len| {
                decision(
                    len,
                    vec![complete_wf(&format!("{{\"pad\":\"{big}\"}}"))],
                    &sticky,
                )
            }),
        ),
        (
            "a command the engine refuses",
            Box::new(|len| {
                decision(
                    len,
                    vec![cmd(C::ScheduleActivity(pb::ScheduleActivityTaskCommand {
                        activity_id: String::new(),
                        ..Default::default()
                    }))],
                    &sticky,
                )
            }),
        ),
    ];
    for (why, make) in cases {
        let (id, act, len) = at_first_activity(&engine, &sticky).await;
        let r = complete_with(&mut w, &act, make(len)).await.unwrap();
        assert!(!r.decision_recorded, "{why}: refused");
        assert!(r.history.is_empty() && r.activity_tasks.is_empty(), "{why}");
        let task = sticky_poll(&mut w).await;
        assert_eq!(
            kinds(&task.history),
            ["act_started", "act_completed", "wft_scheduled"],
            "{why}: the result waits for a workflow task"
        );
        complete(&mut w, &task.task_token, vec![complete_wf("{}")])
            .await
            .unwrap();
        let events = history(&mut wf, &id).await;
        assert_eq!(events.len(), 11, "{why}: nothing of the decision recorded");
    }

    // A signal came first: the copy did not see it.
    let (id, act, len) = at_first_activity(&engine, &sticky).await;
    wf.signal_workflow(pb::SignalWorkflowRequest {
        namespace: "default".into(),
        execution: exec(&id),
        signal_name: "approve".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = complete_with(
        &mut w,
        &act,
        decision(len, vec![complete_wf("{}")], &sticky),
    )
    .await
    .unwrap();
    assert!(!r.decision_recorded, "a signal came first");
    let task = sticky_poll(&mut w).await;
    assert_eq!(
        kinds(&task.history),
        ["signaled", "wft_scheduled", "act_started", "act_completed"]
    );

    // Bad input is refused with the field named, and nothing is stored.
    let (id, act, len) = at_first_activity(&engine, &sticky).await;
    let before = history(&mut wf, &id).await;
    for (d, field) in [
        (decision(len, vec![], ""), "decision.sticky_queue"),
        (decision(0, vec![], &sticky), "decision.history_len"),
        (
            pb::WorkflowDecision {
                decided_at: None,
                ..decision(len, vec![], &sticky)
            },
            "decision.decided_at",
        ),
    ] {
        let e = complete_with(&mut w, &act, d).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    assert_eq!(history(&mut wf, &id).await, before);
    let r = complete_with(
        &mut w,
        &act,
        decision(len, vec![complete_wf("{}")], &sticky),
    )
    .await
    .unwrap();
    assert!(r.decision_recorded, "the activity was still pending");
    drop(engine);
    if let Some(url) = own {
        martix_tests::drop_postgres_database(&url).await;
    }
}

/// A worker that goes away with many runs on its sticky queue: once they are stale, the run's
/// queue takes them one after the other, not one per recheck interval.
async fn many_runs_left_on_a_sticky_queue_go_back_together(backend: Backend) {
    let mut config = fast();
    config.sticky_schedule_to_start_timeout = Duration::from_millis(300);
    config.recheck_interval = Duration::from_secs(2);
    let engine = TestEngine::start(backend, config).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let q = unique("q");
    let sticky = format!("{q}/sticky/gone");
    let ids: Vec<String> = (0..6).map(|i| unique(&format!("order{i}"))).collect();
    for id in &ids {
        start(&mut wf, id, &q).await;
        let task = poll_wft(&mut w, &q).await;
        w.respond_workflow_task_completed(pb::RespondWorkflowTaskCompletedRequest {
            task_token: task.task_token,
            commands: vec![cmd(C::StartTimer(pb::StartTimerCommand {
                timer_id: "t".into(),
                start_to_fire_timeout: Some(millis(1)),
            }))],
            identity: "w1".into(),
            sticky_queue: sticky.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // Nobody polls the sticky queue: every timer's task waits there, then goes stale.
    let began = std::time::Instant::now();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < ids.len() {
        let task = poll_wft(&mut w, &q).await;
        assert_eq!(task.history[0].event_id, 1, "the whole history");
        seen.insert(task.workflow_execution.unwrap().workflow_id);
    }
    // One per recheck interval would take 6 x 2 s.
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "6 stale sticky tasks took {:?}",
        began.elapsed()
    );
}

/// A task committed while a poll is on its way is held for it: written leased to this node
/// (no other poller can claim it) and handed over from memory. A held task that no poll of
/// this node comes for is given back to the store, claimable by any poller of any node.
async fn a_task_held_for_a_poll_on_its_way_is_handed_over_or_given_back(backend: Backend) {
    let mut config = fast();
    // Long enough that nothing below can be a poll's periodic look in the store.
    config.recheck_interval = Duration::from_millis(1500);
    let engine = TestEngine::start(backend, config).await;
    let (mut wf, mut w) = (engine.workflows().await, engine.workers().await);
    let store = engine.engine.store().clone();
    let q = unique("q");
    let key = QueueKey::new("default", &q, TaskKind::Workflow);
    let matching = engine.engine.matching();

    // Handed over: the poll on its way takes the held task without the store.
    let seeking = matching.seek(&key);
    let id = unique("order");
    start(&mut wf, &id, &q).await;
    drop(seeking);
    let now = engine.engine.now();
    assert!(
        store
            .claim_workflow_task("default", &q, "probe", now)
            .await
            .unwrap()
            .is_none(),
        "a held task is leased to this node"
    );
    let task = poll_wft(&mut w, &q).await;
    assert_eq!(task.workflow_execution.unwrap().workflow_id, id);

    // Given back: nobody polls; within a few recheck intervals any poller could claim it.
    let seeking = matching.seek(&key);
    let id = unique("order");
    start(&mut wf, &id, &q).await;
    drop(seeking);
    let claimed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            let now = engine.engine.now();
            if let Some(run) = store
                .claim_workflow_task("default", &q, "other-node", now)
                .await
                .unwrap()
            {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the held task is given back long before its 10 s lease runs out");
    assert_eq!(claimed.workflow_id, id);
    assert!(
        matching.take_ready(&key, engine.engine.now()).is_none(),
        "given back, it is no longer handed out from memory"
    );
}

/// Describe names the workers seen polling the run's queue in the last minute, and none for a
/// queue nobody polls (what `martix stuck` reports).
async fn describe_names_the_pollers_of_the_runs_queue(backend: Backend) {
    let t = TestEngine::start(backend, fast()).await;
    let (mut wf, mut wk) = (t.workflows().await, t.workers().await);
    let (id, q) = (unique("p"), unique("q"));
    start(&mut wf, &id, &q).await;
    assert!(describe(&mut wf, &id).await.pollers.is_empty());
    poll_wft(&mut wk, &q).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = describe(&mut wf, &id).await;
        if let Some(p) = d.pollers.first() {
            assert_eq!(p.kind, "workflow");
            assert!(!p.identity.is_empty());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poll was never noted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker reports its breakers over the API; an open one shows in every describe until it
/// closes, and a report the engine refuses changes nothing.
async fn workers_report_breakers_and_operators_see_the_open_ones(backend: Backend) {
    let t = TestEngine::start(backend, fast()).await;
    let (mut wf, mut wk) = (t.workflows().await, t.workers().await);
    let id = unique("b");
    start(&mut wf, &id, &unique("q")).await;
    let worker = unique("w");
    let report = |state: pb::BreakerState| pb::ReportBreakersRequest {
        namespace: "default".into(),
        identity: worker.clone(),
        breakers: vec![pb::BreakerReport {
            adapter: "payment".into(),
            state: state as i32,
        }],
    };
    let open_here = |d: &pb::DescribeWorkflowResponse| {
        d.open_breakers
            .iter()
            .filter(|b| b.worker == worker)
            .map(|b| b.adapter.clone())
            .collect::<Vec<_>>()
    };
    wk.report_breakers(report(pb::BreakerState::Open))
        .await
        .unwrap();
    assert_eq!(open_here(&describe(&mut wf, &id).await), ["payment"]);
    // Refused, and the open breaker stays as it was.
    for bad in [
        report(pb::BreakerState::Unspecified),
        pb::ReportBreakersRequest {
            identity: String::new(),
            ..report(pb::BreakerState::Closed)
        },
        pb::ReportBreakersRequest {
            breakers: vec![
                pb::BreakerReport {
                    adapter: "x".repeat(256),
                    state: pb::BreakerState::Closed as i32,
                };
                1
            ],
            ..report(pb::BreakerState::Closed)
        },
        pb::ReportBreakersRequest {
            breakers: (0..65)
                .map(|i| pb::BreakerReport {
                    adapter: format!("a{i}"),
                    state: pb::BreakerState::Closed as i32,
                })
                .collect(),
            ..report(pb::BreakerState::Closed)
        },
    ] {
        let e = wk.report_breakers(bad).await.expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    assert_eq!(open_here(&describe(&mut wf, &id).await), ["payment"]);
    // A breaker reported in another namespace is that namespace's: not shown here.
    let elsewhere = unique("ns");
    wf.create_namespace(pb::CreateNamespaceRequest {
        namespace: elsewhere.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    wk.report_breakers(pb::ReportBreakersRequest {
        namespace: elsewhere,
        breakers: vec![pb::BreakerReport {
            adapter: "stock".into(),
            state: pb::BreakerState::Open as i32,
        }],
        ..report(pb::BreakerState::Open)
    })
    .await
    .unwrap();
    assert_eq!(open_here(&describe(&mut wf, &id).await), ["payment"]);
    wk.report_breakers(report(pb::BreakerState::Closed))
        .await
        .unwrap();
    assert!(open_here(&describe(&mut wf, &id).await).is_empty());
}

/// An operator holds a breaker open or closed and lifts the hold; workers learn the holds in
/// the answers to their reports; `ListBreakers` shows reports and holds; bad requests change
/// nothing.
async fn operators_hold_breakers_and_workers_learn_the_holds(backend: Backend) {
    let t = TestEngine::start(backend, fast()).await;
    let (mut wf, mut wk) = (t.workflows().await, t.workers().await);
    let ns = unique("ns");
    wf.create_namespace(pb::CreateNamespaceRequest {
        namespace: ns.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let report = |state: pb::BreakerState| pb::ReportBreakersRequest {
        namespace: ns.clone(),
        identity: "w-1".into(),
        breakers: vec![pb::BreakerReport {
            adapter: "payment".into(),
            state: state as i32,
        }],
    };
    let holds = wk
        .report_breakers(report(pb::BreakerState::Closed))
        .await
        .unwrap()
        .into_inner()
        .holds;
    assert!(holds.is_empty());
    let hold = |h: pb::BreakerHold, reason: &str| pb::SetBreakerRequest {
        namespace: ns.clone(),
        breaker: "payment".into(),
        hold: h as i32,
        reason: reason.into(),
        identity: "ops@host".into(),
    };
    for (bad, why) in [
        (hold(pb::BreakerHold::Open, " "), "reason"),
        (
            pb::SetBreakerRequest {
                breaker: String::new(),
                ..hold(pb::BreakerHold::Open, "x")
            },
            "breaker",
        ),
        (
            pb::SetBreakerRequest {
                hold: 9,
                ..hold(pb::BreakerHold::Open, "x")
            },
            "hold",
        ),
    ] {
        let e = wf.set_breaker(bad).await.expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(why), "{e:?}");
    }
    let list = |wf: &mut Workflows| {
        let ns = ns.clone();
        let mut wf = wf.clone();
        async move {
            wf.list_breakers(pb::ListBreakersRequest { namespace: ns })
                .await
                .unwrap()
                .into_inner()
                .breakers
        }
    };
    let listed = list(&mut wf).await;
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].open && listed[0].hold == pb::BreakerHold::None as i32);
    assert_eq!(listed[0].workers[0].state, "closed");

    wf.set_breaker(hold(pb::BreakerHold::Open, "gateway maintenance"))
        .await
        .unwrap();
    let listed = list(&mut wf).await;
    assert!(listed[0].open);
    assert_eq!(
        (listed[0].hold_reason.as_str(), listed[0].hold_by.as_str()),
        ("gateway maintenance", "ops@host")
    );
    let holds = wk
        .report_breakers(report(pb::BreakerState::Closed))
        .await
        .unwrap()
        .into_inner()
        .holds;
    assert_eq!(
        holds,
        [pb::BreakerHoldInfo {
            breaker: "payment".into(),
            hold: pb::BreakerHold::Open as i32
        }]
    );
    wk.report_breakers(report(pb::BreakerState::Open))
        .await
        .unwrap();
    wf.set_breaker(hold(pb::BreakerHold::Closed, "gateway is back"))
        .await
        .unwrap();
    assert!(
        !list(&mut wf).await[0].open,
        "held closed whatever the workers report"
    );
    wf.set_breaker(hold(pb::BreakerHold::None, ""))
        .await
        .unwrap();
    let listed = list(&mut wf).await;
    assert!(listed[0].open && listed[0].hold == pb::BreakerHold::None as i32);
    assert!(
        wk.report_breakers(report(pb::BreakerState::Open))
            .await
            .unwrap()
            .into_inner()
            .holds
            .is_empty()
    );
}

on_both_backends!(
    operators_hold_breakers_and_workers_learn_the_holds,
    describe_names_the_pollers_of_the_runs_queue,
    workers_report_breakers_and_operators_see_the_open_ones,
    a_task_held_for_a_poll_on_its_way_is_handed_over_or_given_back,
    many_runs_left_on_a_sticky_queue_go_back_together,
    a_decision_made_ahead_is_recorded_with_the_result_or_not_at_all,
    a_reset_starts_a_new_run_from_a_workflow_task_boundary,
    an_operator_retries_a_backing_off_activity_now,
    schedule_timeouts_and_the_run_timeout_are_durable_timers,
    a_timed_out_attempt_is_retried_and_its_late_answer_refused,
    sticky_tasks_carry_only_new_events_and_fall_back_to_the_queue,
    one_workflow_through_the_raw_api,
    start_is_idempotent_and_follows_the_reuse_policy,
    bad_input_is_rejected_with_the_field_named_and_nothing_stored,
    forged_stale_and_duplicate_tokens_change_nothing,
    commands_that_break_history_fail_the_task_and_keep_history,
    a_waiting_poller_is_woken_by_the_commit_not_a_timer,
    an_empty_poll_answers_after_the_deadline,
    signals_during_a_task_are_delivered_after_it,
    timers_fire_and_activities_retry,
    continue_as_new_starts_the_next_run,
    result_waits_for_the_close,
);

#[tokio::test]
async fn health_and_readiness_answer() {
    let engine = TestEngine::start(Backend::Sqlite, fast()).await;
    let channel = tonic::transport::Endpoint::from_shared(engine.endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "martix.v1.WorkflowService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let addr = engine.http.trim_start_matches("http://").to_owned();
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    assert!(body.ends_with("\r\n\r\nready\n"), "{body}");
}

on_both_backends!(history_limits_hold_on_every_append);
/// The history's byte limit holds for every change that appends, not only for a workflow
/// task's commands: a signal past it is refused with the reason (the run goes on, and a fresh
/// worker gets its whole history), an activity result past it terminates the run.
async fn history_limits_hold_on_every_append(backend: Backend) {
    const MIB: usize = 1024 * 1024;
    let mut config = fast();
    config.max_payload_bytes = MIB + 1024;
    config.max_history_bytes = 4 * MIB as i64;
    let engine = TestEngine::start(backend, config).await;
    let mut wf = engine.workflows().await;
    let mut w = engine.workers().await;
    let blob = json(&format!("\"{}\"", "s".repeat(MIB - 16)));
    let signal = |id: &str| pb::SignalWorkflowRequest {
        namespace: "default".into(),
        execution: exec(id),
        signal_name: "blob".into(),
        input: blob.clone(),
        ..Default::default()
    };

    let q = unique("q");
    let id = unique("signalled");
    start(&mut wf, &id, &q).await;
    let mut accepted = 0;
    for _ in 0..10 {
        match wf.signal_workflow(signal(&id)).await {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                assert!(
                    e.message().contains("over the limit of 4194304")
                        && e.message().contains("the run continues"),
                    "{}",
                    e.message()
                );
            }
        }
    }
    assert_eq!(accepted, 3, "1 MiB signals under a 4 MiB history");
    // A fresh worker gets the whole history and completes the run.
    let task = poll_wft(&mut w, &q).await;
    let signals = task
        .history
        .iter()
        .filter(|e| matches!(e.attributes, Some(A::WorkflowExecutionSignaled(_))))
        .count();
    assert_eq!(signals, 3);
    complete(&mut w, &task.task_token, vec![complete_wf("\"done\"")])
        .await
        .unwrap();
    let info = describe(&mut wf, &id).await.info.unwrap();
    assert_eq!(info.status, pb::WorkflowStatus::Completed as i32);

    // Past the limit by an activity's result: the run cannot go on without it, it ends.
    let q = unique("q");
    let id = unique("resulted");
    start(&mut wf, &id, &q).await;
    for _ in 0..3 {
        wf.signal_workflow(signal(&id)).await.unwrap();
    }
    let task = poll_wft(&mut w, &q).await;
    complete(&mut w, &task.task_token, vec![schedule("big")])
        .await
        .unwrap();
    let act = poll_act(&mut w, &q).await;
    w.respond_activity_task_completed(pb::RespondActivityTaskCompletedRequest {
        task_token: act.task_token,
        result: blob.clone(),
        identity: "test-worker".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let info = describe(&mut wf, &id).await.info.unwrap();
    assert_eq!(info.status, pb::WorkflowStatus::Terminated as i32);
    let last = history(&mut wf, &id).await.pop().unwrap();
    match last.attributes {
        Some(A::WorkflowExecutionTerminated(t)) => {
            assert!(
                t.reason.contains("over the limit of 4194304"),
                "{}",
                t.reason
            )
        }
        other => panic!("ends terminated, not {other:?}"),
    }
}

on_both_backends!(what_waits_for_a_workflow_task_is_bounded);
/// Signals that arrive while a workflow task is in flight wait in the checkpoint, which every
/// change rewrites: past `max_buffered_events` one is refused (UNAVAILABLE, try again), and
/// those taken are delivered after the task.
async fn what_waits_for_a_workflow_task_is_bounded(backend: Backend) {
    let mut config = fast();
    config.max_buffered_events = 2;
    let engine = TestEngine::start(backend, config).await;
    let mut wf = engine.workflows().await;
    let mut w = engine.workers().await;
    let q = unique("q");
    let id = unique("busy");
    start(&mut wf, &id, &q).await;
    let task = poll_wft(&mut w, &q).await;
    let mut outcomes = Vec::new();
    for i in 0..3 {
        outcomes.push(
            wf.signal_workflow(pb::SignalWorkflowRequest {
                namespace: "default".into(),
                execution: exec(&id),
                signal_name: format!("s{i}"),
                ..Default::default()
            })
            .await,
        );
    }
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    let refused = outcomes[2].as_ref().unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("2 events waiting for its workflow task"),
        "{}",
        refused.message()
    );
    complete(&mut w, &task.task_token, vec![]).await.unwrap();
    let next = poll_wft(&mut w, &q).await;
    let names: Vec<_> = next
        .history
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(A::WorkflowExecutionSignaled(s)) => Some(s.signal_name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["s0", "s1"]);
}

on_both_backends!(closed_runs_are_deleted_after_their_namespaces_retention);
/// A namespace's retention deletes its closed runs, with their histories, once they have been
/// closed that long; open runs, and another namespace's closed runs, are kept.
async fn closed_runs_are_deleted_after_their_namespaces_retention(backend: Backend) {
    let mut config = fast();
    config.retention_interval = Duration::from_millis(100);
    let engine = TestEngine::start(backend, config).await;
    let mut wf = engine.workflows().await;
    let short = unique("short");
    for (ns, secs) in [(short.as_str(), 1), ("default", 0)] {
        if secs > 0 {
            let created = wf
                .create_namespace(pb::CreateNamespaceRequest {
                    namespace: ns.into(),
                    retention: Some(pbjson_types::Duration {
                        seconds: secs,
                        nanos: 0,
                    }),
                })
                .await
                .unwrap()
                .into_inner();
            assert!(created.created);
        }
    }
    let listed = wf
        .list_namespaces(pb::ListNamespacesRequest {})
        .await
        .unwrap()
        .into_inner();
    let info = listed.infos.iter().find(|i| i.namespace == short).unwrap();
    assert_eq!(info.retention.unwrap().seconds, 1);

    let start_in = |ns: &str, id: &str| pb::StartWorkflowRequest {
        namespace: ns.into(),
        workflow_id: id.into(),
        workflow_type: "thing".into(),
        task_queue: unique("idle"),
        ..Default::default()
    };
    let terminate_in = |ns: &str, id: &str| pb::TerminateWorkflowRequest {
        namespace: ns.into(),
        execution: exec(id),
        reason: "done".into(),
        ..Default::default()
    };
    let describe_in = |ns: &str, id: &str| pb::DescribeWorkflowRequest {
        namespace: ns.into(),
        execution: exec(id),
    };
    let (closed, open, other) = (unique("closed"), unique("open"), unique("other"));
    wf.start_workflow(start_in(&short, &closed)).await.unwrap();
    wf.start_workflow(start_in(&short, &open)).await.unwrap();
    wf.start_workflow(start_in("default", &other))
        .await
        .unwrap();
    wf.terminate_workflow(terminate_in(&short, &closed))
        .await
        .unwrap();
    wf.terminate_workflow(terminate_in("default", &other))
        .await
        .unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match wf.describe_workflow(describe_in(&short, &closed)).await {
            Err(e) if e.code() == Code::NotFound => break,
            Ok(_) => assert!(
                std::time::Instant::now() < deadline,
                "a run closed 10 s ago in a namespace keeping 1 s is still there"
            ),
            Err(e) => panic!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = wf
        .get_workflow_history(pb::GetWorkflowHistoryRequest {
            namespace: short.clone(),
            execution: exec(&closed),
            ..Default::default()
        })
        .await;
    assert_eq!(history.unwrap_err().code(), Code::NotFound);
    let open_run = wf
        .describe_workflow(describe_in(&short, &open))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        open_run.info.unwrap().status,
        pb::WorkflowStatus::Running as i32
    );
    let other_run = wf
        .describe_workflow(describe_in("default", &other))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        other_run.info.unwrap().status,
        pb::WorkflowStatus::Terminated as i32,
        "the default namespace keeps closed runs 7 days"
    );
    // The id is free again once its runs are gone.
    wf.start_workflow(pb::StartWorkflowRequest {
        id_reuse_policy: pb::IdReusePolicy::RejectDuplicate as i32,
        ..start_in(&short, &closed)
    })
    .await
    .unwrap();

    // A retention is changed in place, within its bounds.
    let updated = wf
        .update_namespace(pb::UpdateNamespaceRequest {
            namespace: short.clone(),
            retention: Some(pbjson_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.info.unwrap().retention.unwrap().seconds, 3600);
    let too_short = wf
        .update_namespace(pb::UpdateNamespaceRequest {
            namespace: short.clone(),
            retention: Some(pbjson_types::Duration {
                seconds: 0,
                nanos: 5_000_000,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(too_short.code(), Code::InvalidArgument);
    assert!(too_short.message().contains("between 1s and 10 years"));
}

/// Queue names nobody polls again (random or misspelled, on starts and on polls that were
/// cancelled) leave no entry behind in the node's matching once they are idle.
#[tokio::test]
async fn random_queue_names_are_forgotten_once_idle() {
    let engine = TestEngine::start(Backend::Sqlite, fast()).await;
    let e = &engine.engine;
    let before = e.matching_queues();
    for i in 0..500 {
        e.start_workflow(pb::StartWorkflowRequest {
            namespace: "default".into(),
            workflow_id: unique("w"),
            workflow_type: "thing".into(),
            task_queue: unique(&format!("start-{i}")),
            ..Default::default()
        })
        .await
        .unwrap();
        let poll = e.poll_activity_task(pb::PollActivityTaskRequest {
            namespace: "default".into(),
            task_queue: unique(&format!("poll-{i}")),
            identity: "cancelled".into(),
        });
        // The client goes away while the poll waits.
        assert!(
            tokio::time::timeout(Duration::from_millis(2), poll)
                .await
                .is_err()
        );
    }
    assert!(
        e.matching_queues() >= before + 1000,
        "{}",
        e.matching_queues()
    );
    // One sweep marks, the next forgets what stayed idle in between.
    e.sweep_idle_queues();
    e.sweep_idle_queues();
    assert!(
        e.matching_queues() <= before,
        "{} queues kept, {before} before",
        e.matching_queues()
    );
}

on_both_backends!(signal_request_ids_are_per_workflow_and_refuse_another_signal);
/// A request id deduplicates the retries of one signal to one workflow: the same id on a
/// signal to another workflow is delivered there, and the same id with another signal to the
/// same workflow is refused (ALREADY_EXISTS), never answered OK and dropped.
async fn signal_request_ids_are_per_workflow_and_refuse_another_signal(backend: Backend) {
    let engine = TestEngine::start(backend, fast()).await;
    let mut wf = engine.workflows().await;
    let q = unique("idle");
    let (a, b) = (unique("a"), unique("b"));
    start(&mut wf, &a, &q).await;
    start(&mut wf, &b, &q).await;
    let signal = |id: &str, input: &str| pb::SignalWorkflowRequest {
        namespace: "default".into(),
        execution: exec(id),
        signal_name: "pay".into(),
        input: json(input),
        request_id: "msg-1".into(),
        ..Default::default()
    };
    wf.signal_workflow(signal(&a, "100")).await.unwrap();
    wf.signal_workflow(signal(&b, "100")).await.unwrap();
    // A retry: answered OK, recorded once.
    wf.signal_workflow(signal(&a, "100")).await.unwrap();
    let err = wf.signal_workflow(signal(&a, "999")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(
        err.message()
            .contains("'msg-1' was used for another signal"),
        "{}",
        err.message()
    );
    let signals = |events: Vec<pb::HistoryEvent>| {
        events
            .into_iter()
            .filter(|e| matches!(e.attributes, Some(A::WorkflowExecutionSignaled(_))))
            .count()
    };
    assert_eq!(signals(history(&mut wf, &a).await), 1);
    assert_eq!(signals(history(&mut wf, &b).await), 1, "delivered to b too");

    // Signal-with-start: the same rules.
    let c = unique("c");
    let sws = |input: &str| pb::SignalWithStartWorkflowRequest {
        start: Some(pb::StartWorkflowRequest {
            namespace: "default".into(),
            workflow_id: c.clone(),
            workflow_type: "thing".into(),
            task_queue: q.clone(),
            ..Default::default()
        }),
        signal_name: "pay".into(),
        signal_input: json(input),
        request_id: "msg-1".into(),
    };
    let first = wf
        .signal_with_start_workflow(sws("5"))
        .await
        .unwrap()
        .into_inner();
    assert!(first.started);
    let again = wf
        .signal_with_start_workflow(sws("5"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.started, again.run_id), (false, first.run_id));
    let err = wf.signal_with_start_workflow(sws("6")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert_eq!(signals(history(&mut wf, &c).await), 1);
}
