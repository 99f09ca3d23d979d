//! The operators' commands over gRPC, one module per command group (`martix workflow`,
//! `stuck`, `namespace`, `order` and `orders`), and what they and `martix events` share: the
//! connection flags (`Conn`, `ClientAuth`), `--output`, the clients, a workflow's whole
//! history, and the API's timestamps and durations from std's. Printing is in `format`.
//! Exit codes: 0 success, 1 the operation failed, 2 a usage error (clap's).

mod batch;
pub(crate) mod format;
mod namespace;
mod order;
mod stuck;
mod workflow;

pub(crate) use namespace::{NamespaceCmd, namespace};
pub(crate) use order::{OrderCmd, OrdersCmd, order, orders};
pub(crate) use stuck::stuck;
pub(crate) use workflow::{WorkflowCmd, run};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use martix_orders::pb::order_service_client::OrderServiceClient;
use martix_proto::v1 as pb;
use martix_sdk::connection::Transport;
use pb::workflow_service_client::WorkflowServiceClient;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

impl Conn {
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    pub(crate) fn output(&self) -> Output {
        self.output
    }
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

/// A channel to the engine `conn` names, with its credentials.
async fn transport(conn: &Conn) -> Result<Transport> {
    conn.auth
        .options()?
        .connect(&conn.address)
        .await
        .with_context(|| format!("cannot reach the engine at {}", conn.address))
}

/// A `WorkflowService` client of the engine `conn` names.
async fn workflow_client(conn: &Conn) -> Result<WorkflowServiceClient<Transport>> {
    Ok(WorkflowServiceClient::new(transport(conn).await?))
}

/// An `OrderService` client (read model, outbox) of the engine `conn` names.
pub(crate) async fn order_client(conn: &Conn) -> Result<OrderServiceClient<Transport>> {
    Ok(OrderServiceClient::new(transport(conn).await?))
}

/// The latest run of workflow `id`.
fn execution(id: &str) -> Option<pb::WorkflowExecution> {
    Some(pb::WorkflowExecution {
        workflow_id: id.to_owned(),
        run_id: String::new(),
    })
}

/// A workflow's whole history, all pages.
async fn full_history(
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

/// How long `--wait` waits for a run to close.
const RESULT_WAIT: Duration = Duration::from_secs(3600);

/// `--wait`'s wait, as the API's duration.
fn result_wait() -> pbjson_types::Duration {
    RESULT_WAIT.into()
}

/// A time as the API's timestamp; times before 1970 count as 1970-01-01T00:00:00Z.
fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
