//! `martix`: the engine server, the embedded dev mode, and migrations.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use martix_engine::{Engine, EngineConfig, Server, ServerConfig};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "martix",
    version,
    about = "Martix: a durable workflow orchestrator for order sagas"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine on an embedded SQLite file: nothing to install.
    Dev(DevArgs),
    /// Run the engine on PostgreSQL.
    Server(ServerArgs),
    /// Apply the database migrations and exit.
    Migrate {
        /// postgres://... or sqlite://path
        #[arg(long, env = "MARTIX_DATABASE_URL")]
        database_url: String,
    },
}

#[derive(Args)]
struct Listen {
    /// Address of the gRPC port.
    #[arg(long, env = "MARTIX_GRPC_ADDR", default_value = "127.0.0.1:7233")]
    grpc_addr: SocketAddr,
    /// Address of the HTTP port (health).
    #[arg(long, env = "MARTIX_HTTP_ADDR", default_value = "127.0.0.1:8233")]
    http_addr: SocketAddr,
    /// How long a worker's poll waits for a task before answering empty.
    #[arg(long, env = "MARTIX_LONG_POLL_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    long_poll_timeout: Duration,
    /// Largest payload accepted, in bytes.
    #[arg(long, env = "MARTIX_MAX_PAYLOAD_BYTES", default_value_t = 2 * 1024 * 1024)]
    max_payload_bytes: usize,
    /// How long in-flight requests may finish after SIGINT/SIGTERM.
    #[arg(long, env = "MARTIX_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
}

#[derive(Args)]
struct DevArgs {
    /// The SQLite file to keep state in.
    #[arg(long, env = "MARTIX_DEV_DB", default_value = "./martix-dev.db")]
    db: String,
    /// Keep state in memory only; it is gone when the process ends.
    #[arg(long)]
    ephemeral: bool,
    #[command(flatten)]
    listen: Listen,
}

#[derive(Args)]
struct ServerArgs {
    /// postgres://user@host/db
    #[arg(long, env = "MARTIX_DATABASE_URL")]
    database_url: String,
    #[command(flatten)]
    listen: Listen,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Dev(args) => {
            let url = if args.ephemeral {
                "sqlite::memory:".to_owned()
            } else {
                format!("sqlite://{}", args.db)
            };
            let what = if args.ephemeral {
                "in memory (--ephemeral: state is lost on exit)".to_owned()
            } else {
                args.db.clone()
            };
            serve(&url, &what, args.listen).await
        }
        Command::Server(args) => {
            let shown = redact(&args.database_url);
            serve(&args.database_url, &shown, args.listen).await
        }
        Command::Migrate { database_url } => {
            let store = martix_engine::store::connect(&database_url)
                .await
                .with_context(|| format!("migrating {}", redact(&database_url)))?;
            println!("migrations applied ({})", store.backend());
            Ok(())
        }
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..s], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

async fn serve(url: &str, shown: &str, listen: Listen) -> Result<()> {
    let store = martix_engine::store::connect(url)
        .await
        .with_context(|| format!("opening the store at {shown}"))?;
    let mut config = EngineConfig::default();
    config.long_poll_timeout = listen.long_poll_timeout;
    config.max_payload_bytes = listen.max_payload_bytes;
    let engine = Engine::new(store, config);
    let server = Server::bind(
        engine,
        &ServerConfig {
            grpc_addr: listen.grpc_addr,
            http_addr: listen.http_addr,
            shutdown_grace: listen.shutdown_grace,
        },
    )
    .await?;
    println!("martix engine ({}) state: {shown}", server_backend(url));
    println!("  gRPC  http://{}", server.grpc_addr());
    println!("  HTTP  http://{}  (/healthz, /readyz)", server.http_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    server.serve(shutdown).await?;
    println!("martix engine stopped");
    Ok(())
}

fn server_backend(url: &str) -> &'static str {
    if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    }
}

async fn signal_shutdown(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://martix:s3cret@db:5432/martix"),
            "postgres://martix:***@db:5432/martix"
        );
        assert_eq!(redact("sqlite://./x.db"), "sqlite://./x.db");
    }
}
