//! `martix workflow ...`: operators' commands over gRPC. Exit codes: 0 success, 1 the
//! operation failed, 2 a usage error (clap's).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use martix_proto::v1 as pb;
use martix_sdk::connection::Transport;
use pb::workflow_service_client::WorkflowServiceClient;
use std::time::Duration;
use tracing::Instrument;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

#[derive(Args)]
pub(crate) struct Conn {
    /// The engine's gRPC address.
    #[arg(
        long,
        global = true,
        env = "MARTIX_ADDRESS",
        default_value = "http://127.0.0.1:7233"
    )]
    address: String,
    #[command(flatten)]
    pub(crate) auth: ClientAuth,
    /// The namespace.
    #[arg(
        long,
        global = true,
        env = "MARTIX_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    /// How to print the answer.
    #[arg(long, global = true, value_enum, default_value = "table")]
    output: Output,
}

/// A client's credentials and TLS trust.
#[derive(Args, Clone, Debug)]
pub(crate) struct ClientAuth {
    /// Bearer token for the engine (`martix token issue` makes one).
    #[arg(long, global = true, env = "MARTIX_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the CA that signed the engine's TLS certificate.
    #[arg(long, global = true, env = "MARTIX_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
}

impl ClientAuth {
    /// The SDK's connection options.
    pub(crate) fn options(&self) -> Result<martix_sdk::ConnectOptions> {
        let mut o = martix_sdk::ConnectOptions::default();
        if let Some(t) = self.token.as_deref().filter(|t| !t.is_empty()) {
            o = o.token(t);
        }
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA certificate {}", path.display()))?;
            o = o.ca_certificate_pem(pem);
        }
        Ok(o)
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Status {
    Running,
    Completed,
    Failed,
    Canceled,
    Terminated,
    ContinuedAsNew,
    TimedOut,
    Compensated,
}

impl From<Status> for pb::WorkflowStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Running => pb::WorkflowStatus::Running,
            Status::Completed => pb::WorkflowStatus::Completed,
            Status::Failed => pb::WorkflowStatus::Failed,
            Status::Canceled => pb::WorkflowStatus::Canceled,
            Status::Terminated => pb::WorkflowStatus::Terminated,
            Status::ContinuedAsNew => pb::WorkflowStatus::ContinuedAsNew,
            Status::TimedOut => pb::WorkflowStatus::TimedOut,
            Status::Compensated => pb::WorkflowStatus::Compensated,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum WorkflowCmd {
    /// Start a workflow (or find the running run of its id).
    Start {
        #[arg(long = "type")]
        workflow_type: String,
        #[arg(long)]
        id: String,
        /// JSON, or @file to read it from a file.
        #[arg(long, default_value = "null")]
        input: String,
        #[arg(long, default_value = "orders")]
        task_queue: String,
    },
    /// List runs, newest first.
    List {
        #[arg(long, value_enum)]
        status: Vec<Status>,
        #[arg(long = "type")]
        workflow_type: Option<String>,
        /// Workflow ids starting with this.
        #[arg(long)]
        query: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
    /// Status, pending activities and timers of a workflow's latest run.
    Describe { id: String },
    /// The history of a workflow's latest run (`--output json` is what the replayer reads).
    History {
        id: String,
        /// Keep printing new events until the run closes.
        #[arg(long)]
        follow: bool,
    },
    /// The result of a workflow.
    Result {
        id: String,
        /// Wait for the run to close.
        #[arg(long)]
        wait: bool,
    },
    /// Send a signal.
    Signal {
        id: String,
        name: String,
        #[arg(long, default_value = "null")]
        input: String,
        /// Signal at most once per request id (a retried command does not signal twice).
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Ask a workflow to cancel (it decides; a saga compensates).
    Cancel {
        #[arg(required_unless_present = "query")]
        id: Option<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        batch: Batch,
    },
    /// Stop a workflow now.
    Terminate {
        #[arg(required_unless_present = "query")]
        id: Option<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        batch: Batch,
    },
    /// Start a new run from a workflow-task boundary; the old run is terminated.
    Reset {
        #[arg(required_unless_present = "query")]
        id: Option<String>,
        /// `last-good`, `first`, or a WorkflowTaskCompleted event id.
        #[arg(long, default_value = "last-good")]
        to: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        batch: Batch,
    },
    /// Run now the activities that wait for their next attempt.
    Retry {
        #[arg(required_unless_present = "query")]
        id: Option<String>,
        /// Only this activity.
        #[arg(long)]
        activity: Option<String>,
        /// Start again from attempt 1.
        #[arg(long)]
        reset_attempts: bool,
        #[command(flatten)]
        batch: Batch,
    },
}

/// The batch form of an operation: every running workflow whose id starts with `--query`.
#[derive(Args, Clone, Debug)]
pub(crate) struct Batch {
    /// Every running workflow whose id starts with this, instead of one id.
    #[arg(long)]
    query: Option<String>,
    /// Confirm a batch operation (without it, the matching workflows are only counted).
    #[arg(long)]
    yes: bool,
    /// Workflows per second in a batch, so one operator cannot stampede the engine.
    #[arg(long, default_value_t = 20)]
    rate: u32,
}

/// One steering operation on one workflow.
#[derive(Clone, Debug)]
enum Op {
    Cancel(String),
    Terminate(String),
    Reset {
        to: i64,
        reason: String,
    },
    Retry {
        activity: String,
        reset_attempts: bool,
    },
}

async fn apply(
    c: &mut WorkflowServiceClient<Transport>,
    ns: &str,
    identity: &str,
    op: &Op,
    id: &str,
) -> Result<String> {
    let ns = ns.to_owned();
    let identity = identity.to_owned();
    Ok(match op {
        Op::Cancel(reason) => {
            c.cancel_workflow(pb::CancelWorkflowRequest {
                namespace: ns,
                execution: execution(id),
                reason: reason.clone(),
                identity,
            })
            .await?;
            format!("cancellation of {id} requested")
        }
        Op::Terminate(reason) => {
            c.terminate_workflow(pb::TerminateWorkflowRequest {
                namespace: ns,
                execution: execution(id),
                reason: reason.clone(),
                identity,
            })
            .await?;
            format!("{id} terminated")
        }
        Op::Reset { to, reason } => {
            let r = c
                .reset_workflow(pb::ResetWorkflowRequest {
                    namespace: ns,
                    execution: execution(id),
                    workflow_task_finish_event_id: *to,
                    reason: reason.clone(),
                    identity,
                })
                .await?
                .into_inner();
            format!("{id} reset: new run {}", r.run_id)
        }
        Op::Retry {
            activity,
            reset_attempts,
        } => {
            let r = c
                .retry_activity(pb::RetryActivityRequest {
                    namespace: ns,
                    execution: execution(id),
                    activity_id: activity.clone(),
                    reset_attempts: *reset_attempts,
                })
                .await?
                .into_inner();
            format!("{id}: retried now {}", r.activity_ids.join(", "))
        }
    })
}

/// Applies `op` to one workflow, or paced to every running workflow `batch.query` matches.
async fn steer(
    c: &mut WorkflowServiceClient<Transport>,
    ns: &str,
    identity: &str,
    op: Op,
    id: Option<String>,
    batch: Batch,
) -> Result<()> {
    let Some(prefix) = batch.query else {
        let id = id.context("give a workflow id or --query")?;
        println!("{}", apply(c, ns, identity, &op, &id).await?);
        return Ok(());
    };
    let mut ids = Vec::new();
    let mut token = Vec::new();
    loop {
        let page = c
            .list_workflows(pb::ListWorkflowsRequest {
                namespace: ns.to_owned(),
                page_size: 1000,
                next_page_token: token,
                statuses: vec![pb::WorkflowStatus::Running as i32],
                workflow_id_prefix: prefix.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        ids.extend(
            page.executions
                .into_iter()
                .filter_map(|e| e.execution.map(|x| x.workflow_id)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if !batch.yes {
        println!(
            "{} running workflows match '{prefix}'; add --yes to apply {op:?} to them",
            ids.len()
        );
        return Ok(());
    }
    let bar = indicatif::ProgressBar::new(ids.len() as u64);
    let mut pace =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(batch.rate.max(1))));
    let (mut done, mut failed) = (0, Vec::new());
    for id in &ids {
        pace.tick().await;
        match apply(c, ns, identity, &op, id).await {
            Ok(_) => done += 1,
            Err(e) => failed.push(format!("{id}: {e}")),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("{done} done, {} failed", failed.len());
    for f in &failed {
        println!("  {f}");
    }
    if !failed.is_empty() {
        bail!("{} of {} workflows failed", failed.len(), ids.len());
    }
    Ok(())
}

/// A client of the engine `conn` names.
async fn connect(conn: &Conn) -> Result<WorkflowServiceClient<Transport>> {
    Ok(WorkflowServiceClient::new(transport(conn).await?))
}

/// A channel to the engine `conn` names, with its credentials.
pub(crate) async fn transport(conn: &Conn) -> Result<Transport> {
    conn.auth
        .options()?
        .connect(&conn.address)
        .await
        .with_context(|| format!("cannot reach the engine at {}", conn.address))
}

impl Conn {
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn output(&self) -> Output {
        self.output
    }
}

fn execution(id: &str) -> Option<pb::WorkflowExecution> {
    Some(pb::WorkflowExecution {
        workflow_id: id.to_owned(),
        run_id: String::new(),
    })
}

fn json_payload(raw: &str) -> Result<pb::Payload> {
    let text = match raw.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => raw.to_owned(),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).context("--input is not valid JSON")?;
    Ok(pb::Payload {
        encoding: "json/plain".into(),
        data: serde_json::to_vec(&value)?,
    })
}

fn show_payload(p: Option<&pb::Payload>) -> String {
    match p {
        None => "-".into(),
        Some(p) => String::from_utf8_lossy(&p.data).into_owned(),
    }
}

fn status_name(s: i32) -> String {
    pb::WorkflowStatus::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("WORKFLOW_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| s.to_string())
}

pub(crate) fn time(ts: Option<&pbjson_types::Timestamp>) -> String {
    ts.map_or("-".into(), |t| {
        let secs = t.seconds;
        let (d, s) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, day) = civil(d);
        format!(
            "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}Z",
            s / 3600,
            (s / 60) % 60,
            s % 60
        )
    })
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn event_line(e: &pb::HistoryEvent) -> String {
    let json = serde_json::to_value(e).unwrap_or_default();
    let (kind, attrs) = json
        .as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, _)| *k != "eventId" && *k != "eventTime")
                .map(|(k, v)| (k.clone(), v.to_string()))
        })
        .unwrap_or_default();
    let attrs = if attrs.len() > 100 {
        format!(
            "{}...",
            &attrs[..attrs
                .char_indices()
                .nth(100)
                .map_or(attrs.len(), |(i, _)| i)]
        )
    } else {
        attrs
    };
    format!(
        "{:>5}  {}  {kind:<36} {attrs}",
        e.event_id,
        time(e.event_time.as_ref())
    )
}

/// Runs one `martix workflow` command.
pub(crate) async fn run(conn: Conn, cmd: WorkflowCmd) -> Result<()> {
    let mut c = connect(&conn).await?;
    let ns = conn.namespace.clone();
    let json = conn.output == Output::Json;
    let identity = format!(
        "martix-cli@{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    );
    match cmd {
        WorkflowCmd::Start {
            workflow_type,
            id,
            input,
            task_queue,
        } => {
            let r = c
                .start_workflow(pb::StartWorkflowRequest {
                    namespace: ns,
                    workflow_id: id.clone(),
                    workflow_type,
                    task_queue,
                    input: Some(json_payload(&input)?),
                    identity,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if json {
                print_json(&r)?;
            } else if r.started {
                println!("started {id} run {}", r.run_id);
            } else {
                println!("{id} is already running: run {}", r.run_id);
            }
        }
        WorkflowCmd::List {
            status,
            workflow_type,
            query,
            limit,
        } => {
            let r = c
                .list_workflows(pb::ListWorkflowsRequest {
                    namespace: ns,
                    page_size: limit,
                    statuses: status
                        .into_iter()
                        .map(|s| pb::WorkflowStatus::from(s) as i32)
                        .collect(),
                    workflow_type: workflow_type.unwrap_or_default(),
                    workflow_id_prefix: query.unwrap_or_default(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "{:<40} {:<14} {:<12} {:<21} {:>7}",
                    "WORKFLOW ID", "TYPE", "STATUS", "STARTED", "EVENTS"
                );
                for w in &r.executions {
                    let id = w.execution.as_ref().map_or("", |e| e.workflow_id.as_str());
                    println!(
                        "{id:<40} {:<14} {:<12} {:<21} {:>7}",
                        w.workflow_type,
                        status_name(w.status),
                        time(w.start_time.as_ref()),
                        w.history_length
                    );
                }
                if !r.next_page_token.is_empty() {
                    println!("(more: raise --limit)");
                }
            }
        }
        WorkflowCmd::Describe { id } => {
            let d = c
                .describe_workflow(pb::DescribeWorkflowRequest {
                    namespace: ns,
                    execution: execution(&id),
                })
                .await?
                .into_inner();
            if json {
                print_json(&d)?;
            } else {
                let info = d.info.clone().unwrap_or_default();
                let run = info.execution.as_ref().map_or("", |e| e.run_id.as_str());
                println!("workflow   {id}");
                println!("run        {run}");
                println!("type       {}", info.workflow_type);
                println!("queue      {}", info.task_queue);
                println!(
                    "status     {}{}",
                    status_name(info.status),
                    if d.cancel_requested {
                        " (cancel requested)"
                    } else {
                        ""
                    }
                );
                println!("started    {}", time(info.start_time.as_ref()));
                println!("closed     {}", time(info.close_time.as_ref()));
                println!("events     {}", info.history_length);
                if let Some(w) = &d.pending_workflow_task {
                    println!(
                        "workflow task: attempt {}{}{}",
                        w.attempt,
                        if w.started {
                            ", running"
                        } else {
                            ", waiting for a worker"
                        },
                        w.last_failure
                            .as_ref()
                            .map_or(String::new(), |f| format!(", last failure: {}", f.message))
                    );
                }
                if !d.pending_activities.is_empty() {
                    println!("pending activities:");
                    for a in &d.pending_activities {
                        let state = pb::PendingActivityState::try_from(a.state)
                            .map(|s| {
                                s.as_str_name()
                                    .trim_start_matches("PENDING_ACTIVITY_STATE_")
                                    .to_lowercase()
                            })
                            .unwrap_or_default();
                        println!(
                            "  {:<8} {:<20} {:<12} attempt {:<3} next {:<21} last failure: {}",
                            a.activity_id,
                            a.activity_type,
                            state,
                            a.attempt,
                            time(a.next_attempt_time.as_ref()),
                            a.last_failure
                                .as_ref()
                                .map_or("-".into(), |f| format!("{} ({})", f.message, f.r#type))
                        );
                    }
                }
                for t in &d.pending_timers {
                    println!("timer {} fires {}", t.timer_id, time(t.fire_time.as_ref()));
                }
                for b in &d.open_breakers {
                    println!(
                        "open breaker: {} on worker {} since {}",
                        b.adapter,
                        b.worker,
                        time(b.since.as_ref())
                    );
                }
            }
        }
        WorkflowCmd::History { id, follow } => {
            let mut next = 1i64;
            let mut all = Vec::new();
            loop {
                for e in full_history(&mut c, &ns, &id).await? {
                    if e.event_id >= next {
                        next = e.event_id + 1;
                        if json {
                            all.push(e);
                        } else {
                            println!("{}", event_line(&e));
                        }
                    }
                }
                if !follow {
                    break;
                }
                let d = c
                    .describe_workflow(pb::DescribeWorkflowRequest {
                        namespace: ns.clone(),
                        execution: execution(&id),
                    })
                    .await?
                    .into_inner();
                if d.info
                    .is_some_and(|i| i.status != pb::WorkflowStatus::Running as i32)
                    && next > 1
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if json {
                print_json(&pb::GetWorkflowHistoryResponse {
                    events: all,
                    next_page_token: Vec::new(),
                })?;
            }
        }
        WorkflowCmd::Result { id, wait } => {
            let r = c
                .get_workflow_result(pb::GetWorkflowResultRequest {
                    namespace: ns,
                    execution: execution(&id),
                    wait: wait.then_some(pbjson_types::Duration {
                        seconds: 3600,
                        nanos: 0,
                    }),
                })
                .await?
                .into_inner();
            if json {
                print_json(&r)?;
            } else if !r.closed {
                println!("{id} is still {}", status_name(r.status));
            } else {
                println!("status  {}", status_name(r.status));
                match &r.failure {
                    Some(f) => println!("failure {} ({})", f.message, f.r#type),
                    None => println!("result  {}", show_payload(r.result.as_ref())),
                }
            }
            let succeeded = r.status == pb::WorkflowStatus::Completed as i32
                || r.status == pb::WorkflowStatus::Compensated as i32;
            if r.closed && !succeeded && r.new_run_id.is_empty() {
                bail!("workflow {id} did not complete");
            }
        }
        WorkflowCmd::Signal {
            id,
            name,
            input,
            request_id,
        } => {
            c.signal_workflow(pb::SignalWorkflowRequest {
                namespace: ns,
                execution: execution(&id),
                signal_name: name.clone(),
                input: Some(json_payload(&input)?),
                identity,
                request_id,
            })
            .await?;
            println!("signal {name} sent to {id}");
        }
        WorkflowCmd::Cancel { id, reason, batch } => {
            steer(&mut c, &ns, &identity, Op::Cancel(reason), id, batch).await?;
        }
        WorkflowCmd::Terminate { id, reason, batch } => {
            steer(&mut c, &ns, &identity, Op::Terminate(reason), id, batch).await?;
        }
        WorkflowCmd::Reset {
            id,
            to,
            reason,
            batch,
        } => {
            let to = match to.as_str() {
                "last-good" => 0,
                "first" => -1,
                n => n
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .context("--to takes last-good, first or an event id")?,
            };
            steer(&mut c, &ns, &identity, Op::Reset { to, reason }, id, batch).await?;
        }
        WorkflowCmd::Retry {
            id,
            activity,
            reset_attempts,
            batch,
        } => {
            let op = Op::Retry {
                activity: activity.unwrap_or_default(),
                reset_attempts,
            };
            steer(&mut c, &ns, &identity, op, id, batch).await?;
        }
    }
    Ok(())
}

/// `martix stuck`: running workflows that are not progressing, each with why.
pub(crate) async fn stuck(conn: Conn, older_than: Duration, min_attempts: i32) -> Result<()> {
    let mut c = connect(&conn).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let before = now - older_than.as_secs() as i64;
    let mut token = Vec::new();
    let mut found = Vec::new();
    loop {
        let page = c
            .list_workflows(pb::ListWorkflowsRequest {
                namespace: conn.namespace.clone(),
                page_size: 500,
                next_page_token: token,
                statuses: vec![pb::WorkflowStatus::Running as i32],
                start_time_to: Some(pbjson_types::Timestamp {
                    seconds: before,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await?
            .into_inner();
        for w in &page.executions {
            let d = c
                .describe_workflow(pb::DescribeWorkflowRequest {
                    namespace: conn.namespace.clone(),
                    execution: w.execution.clone(),
                })
                .await?
                .into_inner();
            let id = w
                .execution
                .as_ref()
                .map_or(String::new(), |e| e.workflow_id.clone());
            let mut why = Vec::new();
            if let Some(t) = d.pending_workflow_task.as_ref().filter(|t| t.attempt >= 2) {
                why.push(format!(
                    "workflow task failing, attempt {}: {}",
                    t.attempt,
                    t.last_failure.as_ref().map_or("-", |f| f.message.as_str())
                ));
            }
            for a in d
                .pending_activities
                .iter()
                .filter(|a| a.attempt >= min_attempts)
            {
                why.push(format!(
                    "activity {} ({}) attempt {}, next {}, last error: {}",
                    a.activity_id,
                    a.activity_type,
                    a.attempt,
                    time(a.next_attempt_time.as_ref()),
                    a.last_failure
                        .as_ref()
                        .map_or("-".into(), |f| format!("{} ({})", f.message, f.r#type))
                ));
            }
            if !why.is_empty() {
                for b in &d.open_breakers {
                    why.push(format!(
                        "breaker open: {} on worker {}",
                        b.adapter, b.worker
                    ));
                }
                found.push(serde_json::json!({"workflow_id": id, "why": why}));
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if conn.output == Output::Json {
        print_json(&found)?;
    } else if found.is_empty() {
        println!(
            "no stuck workflows (running for over {}s with a failing task or {min_attempts}+ attempts)",
            older_than.as_secs()
        );
    } else {
        for f in &found {
            println!("{}", f["workflow_id"].as_str().unwrap_or_default());
            for w in f["why"].as_array().into_iter().flatten() {
                println!("  {}", w.as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub(crate) enum OrderCmd {
    /// Place an order (starts the `order` saga).
    Place {
        #[arg(long)]
        id: String,
        #[arg(long)]
        customer: String,
        /// `SKU:QTY:UNIT_PRICE_CENTS`, once per line.
        #[arg(long = "item", required = true)]
        items: Vec<String>,
        #[arg(long, default_value = "EUR")]
        currency: String,
        #[arg(long, default_value = "FR")]
        country: String,
        #[arg(long, default_value = "orders")]
        task_queue: String,
        /// Wait for the outcome.
        #[arg(long)]
        wait: bool,
    },
    /// Orders from the read model, newest first, one page (or --all).
    List {
        #[arg(long)]
        customer: Option<String>,
        /// placed, priced, reserved, charged, shipped, compensating, completed, compensated,
        /// canceled, failed, rejected.
        #[arg(long)]
        status: Option<String>,
        /// Created at or after (RFC 3339, e.g. 2026-11-25T10:00:00Z).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        created_after: Option<std::time::SystemTime>,
        /// Created before (RFC 3339).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        created_before: Option<std::time::SystemTime>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        /// The next_page_token a previous page printed.
        #[arg(long)]
        page_token: Option<String>,
        /// Every page.
        #[arg(long)]
        all: bool,
    },
    /// An order: the read model's row and events, the saga's steps and, with --database-url,
    /// its ledger lines.
    Show {
        order_id: String,
        /// The database of the reference adapters, for the ledger lines.
        #[arg(long, env = "MARTIX_DATABASE_URL")]
        database_url: Option<String>,
    },
}

fn parse_item(raw: &str) -> Result<martix_activities::Item> {
    let parts: Vec<&str> = raw.split(':').collect();
    match parts.as_slice() {
        [sku, qty, price] => Ok(martix_activities::Item {
            sku: (*sku).to_owned(),
            qty: qty
                .parse()
                .with_context(|| format!("--item {raw}: QTY is not a number"))?,
            unit_price_cents: price
                .parse()
                .with_context(|| format!("--item {raw}: UNIT_PRICE_CENTS is not a number"))?,
        }),
        _ => bail!("--item {raw}: expected SKU:QTY:UNIT_PRICE_CENTS"),
    }
}

#[derive(Subcommand)]
pub(crate) enum NamespaceCmd {
    /// Create a namespace (an admin token); an existing one is left as it is.
    Create { name: String },
    /// List the namespaces.
    List,
}

/// Runs one `martix namespace` command.
pub(crate) async fn namespace(conn: Conn, cmd: NamespaceCmd) -> Result<()> {
    let mut c = connect(&conn).await?;
    match cmd {
        NamespaceCmd::Create { name } => {
            let r = c
                .create_namespace(pb::CreateNamespaceRequest {
                    namespace: name.clone(),
                })
                .await?
                .into_inner();
            if r.created {
                println!("namespace '{name}' created");
            } else {
                println!("namespace '{name}' exists already");
            }
        }
        NamespaceCmd::List => {
            for n in c
                .list_namespaces(pb::ListNamespacesRequest {})
                .await?
                .into_inner()
                .namespaces
            {
                println!("{n}");
            }
        }
    }
    Ok(())
}

/// Runs one `martix order` command.
pub(crate) async fn order(conn: Conn, cmd: OrderCmd) -> Result<()> {
    let mut c = connect(&conn).await?;
    match cmd {
        OrderCmd::List {
            customer,
            status,
            created_after,
            created_before,
            page_size,
            page_token,
            all,
        } => {
            let ts = |t: std::time::SystemTime| {
                let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                pbjson_types::Timestamp {
                    seconds: d.as_secs() as i64,
                    nanos: d.subsec_nanos() as i32,
                }
            };
            let request = martix_orders::pb::ListOrdersRequest {
                namespace: conn.namespace.clone(),
                customer_id: customer.unwrap_or_default(),
                status: status.unwrap_or_default(),
                created_after: created_after.map(ts),
                created_before: created_before.map(ts),
                page_size,
                page_token: page_token.unwrap_or_default(),
            };
            crate::events_cli::list_orders(&conn, request, all).await?;
        }
        OrderCmd::Place {
            id,
            customer,
            items,
            currency,
            country,
            task_queue,
            wait,
        } => {
            let order = martix_activities::Order {
                order_id: id.clone(),
                customer_id: customer,
                currency,
                items: items.iter().map(|i| parse_item(i)).collect::<Result<_>>()?,
                shipping_address: martix_activities::Address {
                    country,
                    ..Default::default()
                },
                discount_code: None,
            };
            // The root of the order's trace when tracing is on.
            let span = tracing::info_span!("order.place", otel.kind = "client", order_id = %id);
            let r = c
                .start_workflow(pb::StartWorkflowRequest {
                    namespace: conn.namespace.clone(),
                    workflow_id: id.clone(),
                    workflow_type: "order".into(),
                    task_queue,
                    input: Some(pb::Payload {
                        encoding: "json/plain".into(),
                        data: serde_json::to_vec(&order)?,
                    }),
                    ..Default::default()
                })
                .instrument(span)
                .await?
                .into_inner();
            println!(
                "order {id} placed (run {}, subtotal {} cents)",
                r.run_id,
                order.total_cents()
            );
            if wait {
                let res = c
                    .get_workflow_result(pb::GetWorkflowResultRequest {
                        namespace: conn.namespace,
                        execution: execution(&id),
                        wait: Some(pbjson_types::Duration {
                            seconds: 3600,
                            nanos: 0,
                        }),
                    })
                    .await?
                    .into_inner();
                println!("outcome {}", show_payload(res.result.as_ref()));
            }
        }
        OrderCmd::Show {
            order_id,
            database_url,
        } => {
            let d = c
                .describe_workflow(pb::DescribeWorkflowRequest {
                    namespace: conn.namespace.clone(),
                    execution: execution(&order_id),
                })
                .await?
                .into_inner();
            let info = d.info.unwrap_or_default();
            println!("order {order_id}: {}", status_name(info.status));
            crate::events_cli::show_view(&conn, &order_id).await?;
            let history = crate::ops::full_history(&mut c, &conn.namespace, &order_id).await?;
            println!("steps:");
            let mut steps: Vec<(i64, String, String)> = Vec::new();
            for e in &history {
                use pb::history_event::Attributes as A;
                match &e.attributes {
                    Some(A::ActivityTaskScheduled(a)) => {
                        steps.push((e.event_id, a.activity_type.clone(), "pending".into()))
                    }
                    Some(A::ActivityTaskStarted(a)) => {
                        if let Some(s) = steps.iter_mut().find(|s| s.0 == a.scheduled_event_id) {
                            s.2 = format!("attempt {}", a.attempt);
                        }
                    }
                    Some(A::ActivityTaskCompleted(a)) => {
                        if let Some(s) = steps.iter_mut().find(|s| s.0 == a.scheduled_event_id) {
                            s.2 = format!(
                                "completed ({}) -> {}",
                                s.2,
                                show_payload(a.result.as_ref())
                            );
                        }
                    }
                    Some(A::ActivityTaskFailed(a)) => {
                        if let Some(s) = steps.iter_mut().find(|s| s.0 == a.scheduled_event_id) {
                            let f = a.failure.clone().unwrap_or_default();
                            s.2 = format!("failed ({}): {} ({})", s.2, f.message, f.r#type);
                        }
                    }
                    Some(A::ActivityTaskTimedOut(a)) => {
                        if let Some(s) = steps.iter_mut().find(|s| s.0 == a.scheduled_event_id) {
                            s.2 = format!("timed out ({})", s.2);
                        }
                    }
                    _ => {}
                }
            }
            for a in &d.pending_activities {
                if let Some(s) = steps.iter_mut().find(|s| s.0 == a.scheduled_event_id) {
                    s.2 = format!(
                        "waiting, attempt {}{}",
                        a.attempt,
                        a.last_failure
                            .as_ref()
                            .map_or(String::new(), |f| format!(", last error: {}", f.message))
                    );
                }
            }
            for (_, kind, state) in &steps {
                println!("  {kind:<20} {state}");
            }
            if let Some(url) = database_url {
                let adapters = martix_activities::ReferenceAdapters::connect(&url).await?;
                println!("ledger:");
                let lines = adapters.payments(&order_id).await?;
                if lines.is_empty() {
                    println!("  (no payments)");
                }
                for (kind, amount, currency, key) in lines {
                    println!(
                        "  {kind:<7} {:>10.2} {currency}  {key}",
                        amount as f64 / 100.0
                    );
                }
            }
        }
    }
    Ok(())
}

/// A workflow's whole history, all pages.
pub(crate) async fn full_history(
    c: &mut WorkflowServiceClient<Transport>,
    ns: &str,
    id: &str,
) -> Result<Vec<pb::HistoryEvent>> {
    let mut events = Vec::new();
    let mut token = Vec::new();
    loop {
        let page = c
            .get_workflow_history(pb::GetWorkflowHistoryRequest {
                namespace: ns.to_owned(),
                execution: execution(id),
                page_size: 0,
                next_page_token: token,
            })
            .await?
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return Ok(events);
        }
        token = page.next_page_token;
    }
}
