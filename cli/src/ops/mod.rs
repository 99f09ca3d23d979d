//! The operators' commands over gRPC, one module per command group (`martix workflow`,
//! `stuck`, `namespace`, `order` and `orders`), and what they and `martix events` share: the
//! connection flags (`Conn`, `ClientAuth`), `--output`, the SDK's `Client` for workflows and
//! namespaces, and the order domain's `OrderService` client on the same connection options.
//! Printing is in `format`; a failure is told in one line by `crate::report`. Exit codes: 0
//! success, 1 the operation failed, 2 a usage error (clap's).

mod batch;
mod breaker;
pub(crate) mod format;
mod namespace;
mod order;
pub(crate) mod replay;
mod schedule;
mod stuck;
mod workflow;

pub(crate) use breaker::{BreakerCmd, breaker};
pub(crate) use namespace::{NamespaceCmd, namespace};
pub(crate) use order::{OrderCmd, OrdersCmd, order, orders};
pub(crate) use schedule::{ScheduleCmd, schedule};
pub(crate) use stuck::stuck;
pub(crate) use workflow::{WorkflowCmd, run};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use martix_orders::pb::order_service_client::OrderServiceClient;
use martix_sdk::Client;
use martix_sdk::connection::Transport;
use std::time::Duration;

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

/// The SDK's client of the engine `conn` names, in its namespace, as the operator.
async fn client(conn: &Conn) -> Result<Client> {
    let identity = format!(
        "martix-cli@{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    );
    Ok(Client::connect_with(&conn.address, &conn.auth.options()?)
        .await?
        .with_namespace(&conn.namespace)
        .with_identity(identity))
}

/// An `OrderService` client (read model, outbox) of the engine `conn` names: the order
/// domain's service, on the SDK's connection.
pub(crate) async fn order_client(conn: &Conn) -> Result<OrderServiceClient<Transport>> {
    let transport = conn.auth.options()?.connect(&conn.address).await?;
    Ok(OrderServiceClient::new(transport))
}

/// How long `--wait` waits for a run to close.
const RESULT_WAIT: Duration = Duration::from_secs(3600);

/// The run's outcome, waiting up to `wait` for it to close: the engine answers each ask within
/// 5 minutes, so this asks again until the run closed or `wait` passed.
async fn wait_result(
    handle: &martix_sdk::WorkflowHandle,
    wait: Duration,
) -> Result<martix_sdk::RunOutcome, martix_sdk::ClientError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let r = handle.poll_result(left).await?;
        if r.closed || left.is_zero() {
            return Ok(r);
        }
    }
}
