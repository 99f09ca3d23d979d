//! The public edge over real gRPC: every role against every operation, bad tokens, rate
//! limits, TLS, and malformed input. A refused request must leave the store untouched.

use martix_engine::EngineConfig;
use martix_engine::edge::auth::{self, Op, Role, SigningKey, TokenRequest};
use martix_engine::edge::tls::TlsFiles;
use martix_engine::edge::{AuthConfig, EdgeConfig, LimitsConfig, Rate};
use martix_proto::v1 as pb;
use martix_tests::{Backend, TestEngine, unique};
use std::time::Duration;
use tonic::Code;

const SECRET: &[u8] = b"security-test-secret-0123456789abcdef";

fn token_for(subject: &str, roles: &[Role], namespaces: &[&str]) -> String {
    auth::issue(
        &SigningKey::Secret(SECRET.to_vec()),
        &TokenRequest {
            subject: subject.into(),
            roles: roles.to_vec(),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            ttl: Duration::from_secs(600),
            issuer: auth::DEFAULT_ISSUER.into(),
            audience: auth::DEFAULT_AUDIENCE.into(),
        },
    )
    .unwrap()
}

fn with<T>(token: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

async fn secured(limits: LimitsConfig) -> TestEngine {
    let mut config = EngineConfig::default();
    config.long_poll_timeout = Duration::from_millis(200);
    TestEngine::start_with(
        Backend::Sqlite,
        config,
        EdgeConfig {
            auth: Some(AuthConfig::hs256(SECRET)),
            limits,
        },
        None,
    )
    .await
}

/// What the store holds, as far as a refused request could have changed it.
async fn fingerprint(t: &TestEngine) -> (u64, Vec<(String, i32, i64)>) {
    let list = t
        .engine
        .list_workflows(pb::ListWorkflowsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut runs: Vec<_> = list
        .executions
        .into_iter()
        .map(|w| {
            let e = w.execution.unwrap();
            (e.run_id, w.status, w.history_length)
        })
        .collect();
    runs.sort();
    (t.engine.store().write_transactions(), runs)
}

fn execution(id: &str) -> Option<pb::WorkflowExecution> {
    Some(pb::WorkflowExecution {
        workflow_id: id.into(),
        run_id: String::new(),
    })
}

/// Performs `op` once with `token` against workflow `id`, using `task_token` for answers.
async fn call(
    t: &TestEngine,
    op: Op,
    token: Option<&str>,
    id: &str,
    task_token: &[u8],
) -> Result<(), tonic::Status> {
    let mut wf = t.workflows().await;
    let mut wk = t.workers().await;
    let tt = || task_token.to_vec();
    match op {
        Op::StartWorkflow => wf
            .start_workflow(with(
                token,
                pb::StartWorkflowRequest {
                    workflow_id: unique("started"),
                    workflow_type: "t".into(),
                    task_queue: "q".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::DescribeWorkflow => wf
            .describe_workflow(with(
                token,
                pb::DescribeWorkflowRequest {
                    execution: execution(id),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::GetWorkflowResult => wf
            .get_workflow_result(with(
                token,
                pb::GetWorkflowResultRequest {
                    execution: execution(id),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::SignalWorkflow => wf
            .signal_workflow(with(
                token,
                pb::SignalWorkflowRequest {
                    execution: execution(id),
                    signal_name: "poke".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        // The fresh run completed no workflow task: answered without waiting for a worker.
        Op::QueryWorkflow => wf
            .query_workflow(with(
                token,
                pb::QueryWorkflowRequest {
                    execution: execution(id),
                    query_type: "status".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        // The same: refused at once, no worker asked.
        Op::UpdateWorkflow => wf
            .update_workflow(with(
                token,
                pb::UpdateWorkflowRequest {
                    execution: execution(id),
                    update_id: "u-1".into(),
                    update_name: "change".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::ListWorkflows => wf
            .list_workflows(with(token, pb::ListWorkflowsRequest::default()))
            .await
            .map(drop),
        Op::GetWorkflowHistory => wf
            .get_workflow_history(with(
                token,
                pb::GetWorkflowHistoryRequest {
                    execution: execution(id),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::CancelWorkflow => wf
            .cancel_workflow(with(
                token,
                pb::CancelWorkflowRequest {
                    execution: execution(id),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::TerminateWorkflow => wf
            .terminate_workflow(with(
                token,
                pb::TerminateWorkflowRequest {
                    execution: execution(id),
                    reason: "test".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::ResetWorkflow => wf
            .reset_workflow(with(
                token,
                pb::ResetWorkflowRequest {
                    execution: execution(id),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::PauseWorkflow => wf
            .pause_workflow(with(
                token,
                pb::PauseWorkflowRequest {
                    execution: execution(id),
                    reason: "test".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::ManageBreakers => wf
            .set_breaker(with(
                token,
                pb::SetBreakerRequest {
                    breaker: "payment".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        // No such schedule: NOT_FOUND once admitted.
        Op::ManageSchedules => wf
            .delete_schedule(with(
                token,
                pb::DeleteScheduleRequest {
                    schedule_id: "nobody".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::ListBreakers => wf
            .list_breakers(with(token, pb::ListBreakersRequest::default()))
            .await
            .map(drop),
        Op::RetryActivity => wf
            .retry_activity(with(
                token,
                pb::RetryActivityRequest {
                    execution: execution(id),
                    activity_id: "1".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::ManageNamespaces => wf
            .create_namespace(with(
                token,
                pb::CreateNamespaceRequest {
                    namespace: unique("ns"),
                    retention: None,
                },
            ))
            .await
            .map(drop),
        Op::PollWorkflowTask => wk
            .poll_workflow_task(with(
                token,
                pb::PollWorkflowTaskRequest {
                    task_queue: "empty-queue".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::PollActivityTask => wk
            .poll_activity_task(with(
                token,
                pb::PollActivityTaskRequest {
                    task_queue: "empty-queue".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::RespondWorkflowTask => wk
            .respond_workflow_task_failed(with(
                token,
                pb::RespondWorkflowTaskFailedRequest {
                    task_token: tt(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::RespondActivityTask => wk
            .respond_activity_task_completed(with(
                token,
                pb::RespondActivityTaskCompletedRequest {
                    task_token: tt(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::RecordActivityHeartbeat => wk
            .record_activity_heartbeat(with(
                token,
                pb::RecordActivityHeartbeatRequest {
                    task_token: tt(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Op::ReportBreakers => wk
            .report_breakers(with(
                token,
                pb::ReportBreakersRequest {
                    namespace: String::new(),
                    identity: "w-1".into(),
                    breakers: vec![pb::BreakerReport {
                        adapter: "payment".into(),
                        state: pb::BreakerState::Closed as i32,
                    }],
                },
            ))
            .await
            .map(drop),
        // Served on the HTTP port; covered there.
        Op::ReadMetrics => Ok(()),
        Op::QueryReadModel => {
            martix_orders::pb::order_service_client::OrderServiceClient::connect(t.endpoint.clone())
                .await
                .unwrap()
                .list_orders(with(token, martix_orders::pb::ListOrdersRequest::default()))
                .await
                .map(drop)
        }
        Op::ReadEvents => {
            martix_orders::pb::order_service_client::OrderServiceClient::connect(t.endpoint.clone())
                .await
                .unwrap()
                .get_outbox_status(with(token, martix_orders::pb::GetOutboxStatusRequest {}))
                .await
                .map(drop)
        }
        Op::RebuildReadModel => {
            martix_orders::pb::order_service_client::OrderServiceClient::connect(t.endpoint.clone())
                .await
                .unwrap()
                .rebuild_orders(with(token, martix_orders::pb::RebuildOrdersRequest {}))
                .await
                .map(drop)
        }
    }
}

/// Starts a fresh run and leases its first workflow task; returns the task token.
async fn fresh_run(t: &TestEngine, admin: &str) -> (String, Vec<u8>) {
    let id = unique("sec");
    let queue = unique("q");
    t.workflows()
        .await
        .start_workflow(with(
            Some(admin),
            pb::StartWorkflowRequest {
                workflow_id: id.clone(),
                workflow_type: "t".into(),
                task_queue: queue.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let task = t
        .workers()
        .await
        .poll_workflow_task(with(
            Some(admin),
            pb::PollWorkflowTaskRequest {
                task_queue: queue,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!task.task_token.is_empty());
    (id, task.task_token)
}

#[tokio::test]
async fn each_role_may_do_exactly_its_operations() {
    let t = secured(LimitsConfig::unlimited()).await;
    let admin = token_for("admin", &[Role::Admin], &["*"]);
    for role in Role::ALL {
        let token = token_for(role.as_str(), &[role], &["*"]);
        for op in Op::ALL {
            if op == Op::ReadMetrics {
                continue;
            }
            let (id, task_token) = fresh_run(&t, &admin).await;
            let before = fingerprint(&t).await;
            let r = call(&t, op, Some(&token), &id, &task_token).await;
            if op.allowed_for(role) {
                if let Err(s) = &r {
                    assert!(
                        !matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated),
                        "{role:?} may {op:?}, yet: {s:?}"
                    );
                }
            } else {
                let s = r.expect_err(&format!("{role:?} must not {op:?}"));
                assert_eq!(s.code(), Code::PermissionDenied, "{role:?} {op:?}: {s:?}");
                assert_eq!(
                    fingerprint(&t).await,
                    before,
                    "{role:?} {op:?} changed the store"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_token_for_another_namespace_is_denied_everything_here() {
    let t = secured(LimitsConfig::unlimited()).await;
    let admin = token_for("admin", &[Role::Admin], &["*"]);
    let elsewhere = token_for("other", &[Role::Admin], &["shop-eu"]);
    for op in Op::ALL {
        if op == Op::ReadMetrics {
            continue;
        }
        let (id, task_token) = fresh_run(&t, &admin).await;
        let before = fingerprint(&t).await;
        let s = call(&t, op, Some(&elsewhere), &id, &task_token)
            .await
            .expect_err("denied");
        // Creating namespace X is allowed for an admin of namespace X only; ours is random.
        assert_eq!(s.code(), Code::PermissionDenied, "{op:?}: {s:?}");
        assert!(s.message().contains("namespace"), "{s:?}");
        assert_eq!(fingerprint(&t).await, before, "{op:?} changed the store");
    }
}

#[tokio::test]
async fn missing_expired_forged_and_misaddressed_tokens_are_refused() {
    let t = secured(LimitsConfig::unlimited()).await;
    let admin = token_for("admin", &[Role::Admin], &["*"]);
    let now = jsonwebtoken::get_current_timestamp();
    let sign = |claims: &auth::Claims, key: &[u8]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(key),
        )
        .unwrap()
    };
    let claims = auth::Claims {
        sub: "mallory".into(),
        roles: vec![Role::Admin],
        namespaces: vec!["*".into()],
        iss: auth::DEFAULT_ISSUER.into(),
        aud: auth::DEFAULT_AUDIENCE.into(),
        iat: now,
        exp: now + 600,
    };
    let expired = sign(
        &auth::Claims {
            iat: now - 7200,
            exp: now - 3600,
            ..claims.clone()
        },
        SECRET,
    );
    let forged = sign(&claims, b"not-the-secret-not-the-secret-xx");
    let wrong_audience = sign(
        &auth::Claims {
            aud: "billing".into(),
            ..claims.clone()
        },
        SECRET,
    );
    let too_long = sign(
        &auth::Claims {
            exp: now + 2 * 24 * 3600,
            ..claims.clone()
        },
        SECRET,
    );
    let cases: [(Option<&str>, &str); 6] = [
        (None, "missing credentials"),
        (Some(expired.as_str()), "expired"),
        (Some(too_long.as_str()), "--auth-max-token-lifetime"),
        (Some(forged.as_str()), "bad signature"),
        (Some(wrong_audience.as_str()), "wrong audience"),
        (Some("not-a-jwt"), "not a JWT"),
    ];
    for (token, why) in cases {
        for op in [
            Op::StartWorkflow,
            Op::TerminateWorkflow,
            Op::SignalWorkflow,
            Op::RespondWorkflowTask,
        ] {
            let (id, task_token) = fresh_run(&t, &admin).await;
            let before = fingerprint(&t).await;
            let s = call(&t, op, token, &id, &task_token)
                .await
                .expect_err("refused");
            assert_eq!(s.code(), Code::Unauthenticated, "{why} {op:?}: {s:?}");
            assert!(s.message().contains(why), "{why}: {s:?}");
            if let Some(tok) = token {
                assert!(!s.message().contains(tok), "the token must not be echoed");
            }
            assert_eq!(
                fingerprint(&t).await,
                before,
                "{why} {op:?} changed the store"
            );
        }
    }
}

#[tokio::test]
async fn a_client_over_its_budget_is_slowed_and_another_is_not() {
    let t = secured(LimitsConfig {
        requests_per_identity: Rate {
            per_sec: 5,
            burst: 5,
        },
        ..LimitsConfig::unlimited()
    })
    .await;
    let greedy = token_for("greedy", &[Role::Client], &["default"]);
    let polite = token_for("polite", &[Role::Client], &["default"]);
    let describe = |token: String| {
        let endpoint = t.endpoint.clone();
        async move {
            let mut c = pb::workflow_service_client::WorkflowServiceClient::connect(endpoint)
                .await
                .unwrap();
            c.describe_workflow(with(
                Some(&token),
                pb::DescribeWorkflowRequest {
                    execution: execution("no-such-workflow"),
                    ..Default::default()
                },
            ))
            .await
        }
    };
    // The greedy client bursts 30 calls while the polite one makes 4, at the same time.
    let greedy_calls = futures::future::join_all((0..30).map(|_| describe(greedy.clone())));
    let polite_calls = async {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(describe(polite.clone()).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        out
    };
    let (greedy_results, polite_results) = tokio::join!(greedy_calls, polite_calls);
    let limited: Vec<_> = greedy_results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|s| s.code() == Code::ResourceExhausted)
        .collect();
    assert!(
        limited.len() >= 20,
        "at most the burst of 5 (plus refill) passes; {} were limited",
        limited.len()
    );
    let hint: u64 = limited[0]
        .metadata()
        .get("retry-after-ms")
        .expect("a retry hint")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1000).contains(&hint), "retry after {hint} ms");
    assert!(limited[0].message().contains("retry after"));
    for r in polite_results {
        // Not found (the workflow does not exist) is the engine's answer: the call went through.
        assert_eq!(r.unwrap_err().code(), Code::NotFound);
    }
}

#[tokio::test]
async fn long_polls_are_capped_per_identity_and_not_rate_limited() {
    let t = secured(LimitsConfig {
        requests_per_identity: Rate {
            per_sec: 1,
            burst: 1,
        },
        max_polls_per_identity: 2,
        ..LimitsConfig::unlimited()
    })
    .await;
    let worker = token_for("worker-1", &[Role::Worker], &["default"]);
    let poll = || {
        let endpoint = t.endpoint.clone();
        let worker = worker.clone();
        async move {
            let mut c = pb::worker_service_client::WorkerServiceClient::connect(endpoint)
                .await
                .unwrap();
            c.poll_workflow_task(with(
                Some(&worker),
                pb::PollWorkflowTaskRequest {
                    task_queue: "idle".into(),
                    ..Default::default()
                },
            ))
            .await
        }
    };
    // Sequential polls: far over 1 request/s, yet never rate limited.
    for _ in 0..4 {
        poll().await.expect("a poll is not a counted request");
    }
    // Three at once: the third is over the cap.
    let results = futures::future::join_all((0..3).map(|_| poll())).await;
    let capped = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    assert_eq!(capped, 1, "{results:?}");
}

fn test_ca() -> (tempdir::Dir, TlsFiles, Vec<u8>) {
    let dir = tempdir::Dir::new();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "martix test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let files = TlsFiles {
        cert: dir.path.join("server.pem"),
        key: dir.path.join("server.key"),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    (dir, files, ca_cert.pem().into_bytes())
}

mod tempdir {
    /// A directory removed on drop.
    pub(crate) struct Dir {
        pub(crate) path: std::path::PathBuf,
    }
    impl Dir {
        pub(crate) fn new() -> Self {
            let path = std::env::temp_dir().join(martix_tests::unique("martix-tls"));
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[tokio::test]
async fn tls_with_a_test_ca_works_and_plaintext_is_refused() {
    let (_dir, files, ca) = test_ca();
    let t = TestEngine::start_with(
        Backend::Sqlite,
        EngineConfig::default(),
        EdgeConfig {
            auth: Some(AuthConfig::hs256(SECRET)),
            limits: LimitsConfig::default(),
        },
        Some(files),
    )
    .await;
    assert!(t.endpoint.starts_with("https://"));
    let admin = token_for("admin", &[Role::Admin], &["*"]);
    let options = martix_sdk::ConnectOptions::default()
        .token(&admin)
        .ca_certificate_pem(ca.clone())
        .tls_domain("localhost");
    let client = martix_sdk::Client::connect_with(&t.endpoint, &options)
        .await
        .expect("TLS handshake with the test CA");
    let run = client
        .start_workflow(
            martix_sdk::StartOptions::new("t", unique("tls"), "q"),
            &serde_json::json!({}),
        )
        .await
        .expect("a call over TLS");
    assert!(!run.run_id.is_empty());

    // Plaintext gRPC to the TLS port fails; so does TLS without trusting the CA.
    let plain = t.endpoint.replace("https://", "http://");
    let refused = martix_sdk::Client::connect_with(
        &plain,
        &martix_sdk::ConnectOptions::default().token(&admin),
    )
    .await;
    match refused {
        Err(_) => {}
        Ok(c) => {
            let r = c
                .start_workflow(
                    martix_sdk::StartOptions::new("t", unique("plain"), "q"),
                    &serde_json::json!({}),
                )
                .await;
            assert!(r.is_err(), "plaintext must be refused");
        }
    }
    let untrusted = martix_sdk::Client::connect_with(
        &t.endpoint,
        &martix_sdk::ConnectOptions::default().token(&admin),
    )
    .await;
    assert!(untrusted.is_err(), "an unknown CA must fail the handshake");

    // The HTTP port speaks TLS with the same certificate: a raw handshake succeeds against
    // the CA, and plaintext HTTP gets no answer.
    let http_addr = t.http.trim_start_matches("https://").to_owned();
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in
        <tokio_rustls::rustls::pki_types::CertificateDer as tokio_rustls::rustls::pki_types::pem::PemObject>::pem_slice_iter(&ca)
    {
        roots.add(c.unwrap()).unwrap();
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&http_addr).await.unwrap();
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("HTTPS handshake");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tls.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let mut tcp = tokio::net::TcpStream::connect(&http_addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "plaintext HTTP must not be served"
    );
}

#[tokio::test]
async fn a_run_that_outgrows_the_history_limit_is_terminated_with_advice() {
    let mut config = EngineConfig::default();
    config.max_history_events = 20;
    let t = TestEngine::start(Backend::Sqlite, config).await;
    let mut wf = t.workflows().await;
    let mut wk = t.workers().await;
    let id = unique("long");
    let queue = unique("q");
    wf.start_workflow(pb::StartWorkflowRequest {
        workflow_id: id.clone(),
        workflow_type: "t".into(),
        task_queue: queue.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let task = wk
        .poll_workflow_task(pb::PollWorkflowTaskRequest {
            task_queue: queue,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let timers = (0..30)
        .map(|i| pb::Command {
            attributes: Some(pb::command::Attributes::StartTimer(pb::StartTimerCommand {
                timer_id: format!("t{i}"),
                start_to_fire_timeout: Some(pbjson_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
            })),
        })
        .collect();
    let s = wk
        .respond_workflow_task_completed(pb::RespondWorkflowTaskCompletedRequest {
            task_token: task.task_token,
            commands: timers,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(s.message().contains("continue as new"), "{s:?}");
    let d = wf
        .describe_workflow(pb::DescribeWorkflowRequest {
            execution: execution(&id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        d.info.unwrap().status,
        pb::WorkflowStatus::Terminated as i32
    );
    assert!(d.pending_timers.is_empty(), "no timer of the refused task");
}

#[tokio::test]
async fn es256_keys_from_a_pem_file_or_a_jwks_file_verify_tokens() {
    use base64::Engine as _;
    let dir = tempdir::Dir::new();
    let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
    let public_pem = dir.path.join("public.pem");
    std::fs::write(&public_pem, key.public_key_pem()).unwrap();
    let raw = key.public_key_raw(); // 0x04 || x || y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = dir.path.join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }]})
        .to_string(),
    )
    .unwrap();
    let sign = |kid: Option<&str>| {
        auth::issue(
            &SigningKey::PrivateKeyPem {
                pem: key.serialize_pem().into_bytes(),
                kid: kid.map(str::to_owned),
            },
            &TokenRequest {
                subject: "svc".into(),
                roles: vec![Role::Operator],
                namespaces: vec!["default".into()],
                ttl: Duration::from_secs(60),
                issuer: auth::DEFAULT_ISSUER.into(),
                audience: auth::DEFAULT_AUDIENCE.into(),
            },
        )
        .unwrap()
    };
    for (keys, token) in [
        (
            auth::KeySource::PublicKeyPem(public_pem.clone()),
            sign(None),
        ),
        (auth::KeySource::Jwks(jwks.clone()), sign(Some("k1"))),
    ] {
        let t = TestEngine::start_with(
            Backend::Sqlite,
            EngineConfig::default(),
            EdgeConfig {
                auth: Some(AuthConfig::new(keys)),
                limits: LimitsConfig::default(),
            },
            None,
        )
        .await;
        call(&t, Op::ListWorkflows, Some(&token), "x", &[])
            .await
            .expect("an ES256 token verifies");
        // An HS256 token signed with the public key's text (the classic confusion) fails.
        let confused = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &auth::Claims {
                sub: "m".into(),
                roles: vec![Role::Admin],
                namespaces: vec!["*".into()],
                iss: auth::DEFAULT_ISSUER.into(),
                aud: auth::DEFAULT_AUDIENCE.into(),
                iat: 0,
                exp: jsonwebtoken::get_current_timestamp() + 60,
            },
            &jsonwebtoken::EncodingKey::from_secret(key.public_key_pem().as_bytes()),
        )
        .unwrap();
        let s = call(&t, Op::ListWorkflows, Some(&confused), "x", &[])
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    }
}

/// A P-256 key pair: the private key (PEM) and the public key as a JWK named `kid`.
fn es256_jwk(kid: &str) -> (rcgen::KeyPair, serde_json::Value) {
    use base64::Engine as _;
    let key = rcgen::KeyPair::generate().unwrap();
    let raw = key.public_key_raw(); // 0x04 || x || y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
    });
    (key, jwk)
}

#[tokio::test]
async fn an_identity_providers_tokens_verify_from_its_jwks_url_across_a_key_rotation() {
    use std::sync::{Arc, Mutex};
    let (k1, jwk1) = es256_jwk("k1");
    let (k2, jwk2) = es256_jwk("k2");
    // The identity provider's `jwks_uri`, serving k1 only for now.
    let published = Arc::new(Mutex::new(serde_json::json!({"keys": [jwk1.clone()]})));
    let served = published.clone();
    let app = axum::Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let doc = served.lock().unwrap().clone();
            async move { axum::Json(doc) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let refetch = Duration::from_secs(1);
    let t = TestEngine::start_with(
        Backend::Sqlite,
        EngineConfig::default(),
        EdgeConfig {
            auth: Some(AuthConfig {
                claims: auth::ClaimMapping {
                    roles: "realm_access.roles".into(),
                    namespaces: "namespaces".into(),
                    namespace_roles: Some("martix_namespaces".into()),
                },
                ..AuthConfig::new(auth::KeySource::JwksUrl(auth::RemoteJwks {
                    min_refetch_interval: refetch,
                    ..auth::RemoteJwks::new(url)
                }))
            }),
            limits: LimitsConfig::unlimited(),
        },
        None,
    )
    .await;
    // Tokens shaped as Keycloak issues them: `aud` an array, roles nested among the IdP's
    // own, and here roles per namespace.
    let sign = |key: &rcgen::KeyPair, kid: &str, grants: serde_json::Value| {
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = serde_json::json!({
            "sub": "alice", "iss": auth::DEFAULT_ISSUER, "aud": ["account", auth::DEFAULT_AUDIENCE],
            "iat": now, "exp": now + 300, "azp": "martix-cli",
        });
        for (k, v) in grants.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let admin = sign(
        &k1,
        "k1",
        serde_json::json!({"realm_access": {"roles": ["offline_access", "admin"]}, "namespaces": ["*"]}),
    );
    let (eu, us) = (unique("orders-eu"), unique("orders-us"));
    let mut wf = t.workflows().await;
    let mut runs = Vec::new();
    for ns in [&eu, &us] {
        wf.create_namespace(with(
            Some(&admin),
            pb::CreateNamespaceRequest {
                namespace: ns.clone(),
                retention: None,
            },
        ))
        .await
        .expect("an admin through the JWKS URL");
        let id = unique("run");
        wf.start_workflow(with(
            Some(&admin),
            pb::StartWorkflowRequest {
                namespace: ns.clone(),
                workflow_id: id.clone(),
                workflow_type: "t".into(),
                task_queue: "q".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
        runs.push((ns.clone(), id));
    }
    let operator_eu_client_us = serde_json::json!({
        "realm_access": {"roles": ["offline_access", "uma_authorization"]},
        "martix_namespaces": {eu.clone(): ["operator"], us.clone(): ["client"]},
    });
    let cancel = |token: String, ns: String, id: String| {
        let mut wf = wf.clone();
        async move {
            wf.cancel_workflow(with(
                Some(&token),
                pb::CancelWorkflowRequest {
                    namespace: ns,
                    execution: execution(&id),
                    ..Default::default()
                },
            ))
            .await
        }
    };
    let user = sign(&k1, "k1", operator_eu_client_us.clone());
    cancel(user.clone(), runs[0].0.clone(), runs[0].1.clone())
        .await
        .expect("an operator in orders-eu cancels there");
    let s = cancel(user.clone(), runs[1].0.clone(), runs[1].1.clone())
        .await
        .expect_err("a client in orders-us may not cancel");
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("client"), "{s:?}");

    // The IdP rotates to k2: a token signed with it is refused until k2 is published and
    // the engine has refetched (no sooner than the refetch interval).
    let rotated = sign(&k2, "k2", operator_eu_client_us);
    let s = cancel(rotated.clone(), runs[0].0.clone(), runs[0].1.clone())
        .await
        .expect_err("k2 is not published yet");
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("unknown key"), "{s:?}");
    *published.lock().unwrap() = serde_json::json!({"keys": [jwk1, jwk2]});
    tokio::time::sleep(refetch + Duration::from_millis(200)).await;
    // The next k2 token starts a refetch in the background (and is told to retry); a retry
    // a moment later verifies.
    let describe = || {
        let mut wf = wf.clone();
        let (ns, id, token) = (runs[1].0.clone(), runs[1].1.clone(), rotated.clone());
        async move {
            wf.describe_workflow(with(
                Some(&token),
                pb::DescribeWorkflowRequest {
                    namespace: ns,
                    execution: execution(&id),
                },
            ))
            .await
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let d = loop {
        match describe().await {
            Err(s) if s.code() == Code::Unauthenticated && std::time::Instant::now() < deadline => {
                assert!(s.message().contains("unknown key"), "{s:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => break r.expect("k2 verifies once published and refetched"),
        }
    };
    assert!(d.into_inner().info.is_some());
}

#[tokio::test]
async fn a_task_token_edited_to_name_another_namespace_finds_nothing() {
    use prost::Message as _;
    let t = secured(LimitsConfig::unlimited()).await;
    let admin = token_for("admin", &[Role::Admin], &["*"]);
    let (_id, task_token) = fresh_run(&t, &admin).await;
    let mut edited = martix_engine::history::TaskToken::decode(&task_token[..]).unwrap();
    edited.namespace = "shop-eu".into();
    let edited = edited.encode_to_vec();
    // A worker of shop-eu only: the edge lets the call through, the engine must not.
    let worker = token_for("w", &[Role::Worker], &["shop-eu"]);
    for op in [
        Op::RespondWorkflowTask,
        Op::RespondActivityTask,
        Op::RecordActivityHeartbeat,
    ] {
        let before = fingerprint(&t).await;
        let s = call(&t, op, Some(&worker), "x", &edited)
            .await
            .expect_err("refused");
        assert!(
            matches!(s.code(), Code::NotFound | Code::InvalidArgument),
            "{op:?}: {s:?}"
        );
        assert_eq!(fingerprint(&t).await, before);
    }
}

/// Result waits hold long-poll slots of their identity (over the cap: RESOURCE_EXHAUSTED), and
/// the waiters of one run on a node share one read of it per recheck interval.
#[tokio::test]
async fn result_waits_are_capped_and_share_their_rechecks() {
    let t = secured(LimitsConfig {
        max_polls_per_identity: 40,
        ..LimitsConfig::unlimited()
    })
    .await;
    let client = token_for("waiter", &[Role::Client, Role::Operator], &["default"]);
    let mut wf = pb::workflow_service_client::WorkflowServiceClient::connect(t.endpoint.clone())
        .await
        .unwrap();
    let id = unique("waited");
    wf.start_workflow(with(
        Some(&client),
        pb::StartWorkflowRequest {
            workflow_id: id.clone(),
            workflow_type: "thing".into(),
            // Nobody polls it: the run stays open while the waits wait.
            task_queue: unique("idle"),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let wait = |secs: i64| {
        let (endpoint, client, id) = (t.endpoint.clone(), client.clone(), id.clone());
        async move {
            let mut wf = pb::workflow_service_client::WorkflowServiceClient::connect(endpoint)
                .await
                .unwrap();
            wf.get_workflow_result(with(
                Some(&client),
                pb::GetWorkflowResultRequest {
                    execution: Some(pb::WorkflowExecution {
                        workflow_id: id,
                        run_id: String::new(),
                    }),
                    wait: Some(pbjson_types::Duration {
                        seconds: secs,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
            ))
            .await
        }
    };
    let waits: Vec<_> = (0..40).map(|_| tokio::spawn(wait(30))).collect();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while t.engine.result_waiters() < 40 {
        assert!(
            std::time::Instant::now() < until,
            "the 40 waits did not register"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let over = wait(30).await.unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");

    // 40 waiters, one run: about one read of it per recheck interval (1 s), not 40.
    let before = t.engine.store().run_reads();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reads = t.engine.store().run_reads() - before;
    assert!(reads <= 6, "{reads} reads of the run in 3 s for 40 waiters");

    wf.terminate_workflow(with(
        Some(&client),
        pb::TerminateWorkflowRequest {
            execution: Some(pb::WorkflowExecution {
                workflow_id: id.clone(),
                run_id: String::new(),
            }),
            reason: "test over".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    for w in waits {
        let r = w.await.unwrap().unwrap().into_inner();
        assert!(r.closed);
        assert_eq!(r.status, pb::WorkflowStatus::Terminated as i32);
    }
}

#[tokio::test]
async fn callers_are_authenticated_before_their_message_is_decoded() {
    let t = secured(LimitsConfig::unlimited()).await;
    let mut wf = t.workflows().await;
    // Past the engine's decoding limit (twice the payload limit and 1 MiB): decoding it
    // before authenticating would answer OUT_OF_RANGE to anyone.
    let big = pb::StartWorkflowRequest {
        workflow_id: unique("big"),
        workflow_type: "t".into(),
        task_queue: "q".into(),
        input: Some(pb::Payload {
            encoding: "binary/plain".into(),
            data: vec![7; 8 << 20],
        }),
        ..Default::default()
    };
    let s = wf
        .start_workflow(with(None, big.clone()))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    let s = wf
        .start_workflow(with(Some("not-a-jwt"), big.clone()))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    // An authenticated caller reaches the decoder, which refuses the size.
    let admin = token_for("admin", &[Role::Admin], &["*"]);
    let s = wf
        .start_workflow(with(Some(&admin), big))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    assert_eq!(fingerprint(&t).await.1, Vec::new(), "nothing was started");
}

#[tokio::test]
async fn a_peer_guessing_tokens_is_refused_then_let_back() {
    let t = secured(LimitsConfig {
        failed_auth_per_peer: Rate {
            per_sec: 2,
            burst: 3,
        },
        ..LimitsConfig::unlimited()
    })
    .await;
    let admin = token_for("admin", &[Role::Admin], &["*"]);
    let (id, task_token) = fresh_run(&t, &admin).await;
    for guess in 0..3 {
        let s = call(&t, Op::DescribeWorkflow, Some("guess"), &id, &task_token)
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "guess {guess}: {s:?}");
    }
    let s = call(&t, Op::DescribeWorkflow, Some("guess"), &id, &task_token)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains("failed authentications"), "{s:?}");
    let wait: u64 = s
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after-ms");
    assert!(wait > 0 && wait <= 500, "{wait}");
    // While blocked even a good token from that address is not looked at ...
    let s = call(&t, Op::DescribeWorkflow, Some(&admin), &id, &task_token)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    // ... and once the wait is over it is let back.
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    call(&t, Op::DescribeWorkflow, Some(&admin), &id, &task_token)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_port_holds_at_most_its_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestEngine::start_with(
        Backend::Sqlite,
        EngineConfig::default(),
        EdgeConfig {
            auth: None,
            limits: LimitsConfig {
                max_connections: 2,
                ..LimitsConfig::unlimited()
            },
        },
        None,
    )
    .await;
    let addr = t.http.trim_start_matches("http://").to_owned();
    let get = |mut c: tokio::net::TcpStream| async move {
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut buf = vec![0; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        (n > 0).then(|| (String::from_utf8_lossy(&buf[..n]).into_owned(), c))
    };
    let (answer, a) = get(tokio::net::TcpStream::connect(&addr).await.unwrap())
        .await
        .expect("first connection served");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, _b) = get(tokio::net::TcpStream::connect(&addr).await.unwrap())
        .await
        .expect("second connection served");
    // The third is accepted by the kernel and closed by the node.
    assert!(
        get(tokio::net::TcpStream::connect(&addr).await.unwrap())
            .await
            .is_none(),
        "a third connection must be closed"
    );
    // Once one closes, a new one is served.
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if get(c).await.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed connection's place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The gRPC port counts its own connections: a fresh channel still works there.
    let mut wf = t.workflows().await;
    wf.list_namespaces(pb::ListNamespacesRequest::default())
        .await
        .unwrap();
}

/// The group-commit queue is bounded: with the database's one write connection held (SQLite),
/// changes queue up to the cap, the next are refused as RESOURCE_EXHAUSTED with a wait and
/// write nothing, and the queued ones commit once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_queue_is_bounded_and_pushes_back() {
    let t = TestEngine::start(Backend::Sqlite, EngineConfig::default()).await;
    let martix_engine::events::Pools::Sqlite { write, .. } = t.engine.store().pools() else {
        panic!("a SQLite store");
    };
    let held = write.acquire().await.unwrap();
    let queue = unique("q");
    let starts: Vec<_> = (0..9_000)
        .map(|i| {
            let (engine, queue) = (t.engine.clone(), queue.clone());
            tokio::spawn(async move {
                engine
                    .start_workflow(pb::StartWorkflowRequest {
                        workflow_id: format!("{queue}-{i}"),
                        workflow_type: "t".into(),
                        task_queue: queue,
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    // Every start has either queued or been refused before the database comes back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(held);
    let (mut accepted, mut refused) = (0, 0);
    for s in starts {
        match s.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(e) => {
                let status = tonic::Status::from(e);
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.metadata().get("retry-after-ms").is_some());
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "9,000 changes must not all fit the queue");
    assert!(
        (8_192..=8_192 + 64).contains(&accepted),
        "the queue and one batch are accepted: {accepted}"
    );
    // What was accepted is stored, what was refused is not.
    let mut stored = 0;
    let mut token = Vec::new();
    loop {
        let page = t
            .engine
            .list_workflows(pb::ListWorkflowsRequest {
                page_size: 1000,
                task_queue: queue.clone(),
                next_page_token: token,
                ..Default::default()
            })
            .await
            .unwrap();
        stored += page.executions.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(stored, accepted);
}
