//! `martix`: the engine server, the embedded dev mode, the order worker, and migrations.

mod bench;
mod bench_cli;
mod catalog;
mod demo;
mod events_cli;
mod ops;
mod orders;
mod probe;
mod reads;
mod report;
mod scale;
mod security;
mod soak;
mod stock;
mod telemetry;

use anyhow::{Context, Result};

/// mimalloc instead of glibc's malloc: under load the engine's threads contended on malloc's
/// arena locks and spent about a fifth of the process's CPU in malloc and free (profile in
/// docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
    /// Log lines as human text or JSON (one object per line), on stderr.
    #[arg(
        long,
        global = true,
        env = "MARTIX_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: telemetry::LogFormat,
    /// On failure, print the error's causes one per line (and its backtrace when
    /// RUST_BACKTRACE=1) after the one-line message.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine on an embedded SQLite file: nothing to install.
    Dev(DevArgs),
    /// Run the engine on PostgreSQL.
    Server(ServerArgs),
    /// Run the order worker (the order saga and its activities) against an engine.
    Worker(WorkerArgs),
    /// Inspect and steer workflows (over gRPC).
    Workflow {
        #[command(flatten)]
        conn: ops::Conn,
        #[command(subcommand)]
        command: ops::WorkflowCmd,
    },
    /// Place and inspect orders.
    Order {
        #[command(flatten)]
        conn: ops::Conn,
        #[command(subcommand)]
        command: ops::OrderCmd,
    },
    /// The stock of the reference adapters: set a SKU's units, list them.
    Stock {
        #[command(subcommand)]
        command: stock::StockCmd,
    },
    /// The catalogue of the reference adapters: the prices orders must carry.
    Catalog {
        #[command(subcommand)]
        command: catalog::CatalogCmd,
    },
    /// The orders read model (admin).
    Orders {
        #[command(flatten)]
        conn: ops::Conn,
        #[command(subcommand)]
        command: ops::OrdersCmd,
    },
    /// The business events' outbox: its backlog, its events.
    Events {
        #[command(flatten)]
        conn: ops::Conn,
        #[command(subcommand)]
        command: events_cli::EventsCmd,
    },
    /// Create and list namespaces (admin).
    Namespace {
        #[command(flatten)]
        conn: ops::Conn,
        #[command(subcommand)]
        command: ops::NamespaceCmd,
    },
    /// Schedules: a workflow started at each time of a cron expression or an interval
    /// (operators).
    Schedule {
        #[command(flatten)]
        conn: ops::Conn,
        #[command(subcommand)]
        command: ops::ScheduleCmd,
    },
    /// Circuit breakers: list them, hold one open or closed by hand (operators).
    Breaker {
        #[command(flatten)]
        conn: ops::Conn,
        #[command(subcommand)]
        command: ops::BreakerCmd,
    },
    /// Replay stored histories against this build's workflow code: a change that would break
    /// runs in flight fails here (exit 1), naming each run's first step that differs.
    Replay {
        #[command(flatten)]
        conn: ops::Conn,
        /// Histories exported with `martix workflow export` (`*.json`), instead of the engine
        /// at --address.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        #[command(flatten)]
        runs: ops::replay::Runs,
    },
    /// Running workflows that are not progressing, each with why.
    Stuck {
        #[command(flatten)]
        conn: ops::Conn,
        /// Only workflows started longer ago than this.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// Activities at this attempt or later count as stuck.
        #[arg(long, default_value_t = 3)]
        min_attempts: i32,
    },
    /// Measure the reference workload (shared/BENCHMARK.md) on an in-process engine.
    Bench(bench_cli::BenchArgs),
    /// Bearer tokens for the engine's API.
    Token {
        #[command(subcommand)]
        command: security::TokenCmd,
    },
    /// Ask a running engine's HTTP port whether it is ready (`/readyz`): exit 0 if it is, 1
    /// if not. For container health checks in images without a shell or curl.
    Probe {
        /// The engine's HTTP port.
        #[arg(long, env = "MARTIX_HTTP_ADDR", default_value = "127.0.0.1:8233")]
        http_addr: SocketAddr,
        /// The path to ask: `/readyz` (the store answers) or `/healthz` (the process is up).
        #[arg(long, default_value = "/readyz")]
        path: String,
    },
    /// Apply the database migrations and exit.
    Migrate {
        /// postgres://... or sqlite://path
        #[arg(long, env = "MARTIX_DATABASE_URL", hide_env_values = true)]
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
    /// Also serve `GET /metrics` on this address WITHOUT authentication or TLS, for a
    /// Prometheus on the private network (else metrics need an operator token on the HTTP port).
    #[arg(long, env = "MARTIX_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Serve without authentication (`martix dev`, `--insecure`) on an address other
    /// machines can reach: anyone there may then do anything.
    #[arg(long, env = "MARTIX_ALLOW_UNAUTHENTICATED_REMOTE")]
    allow_unauthenticated_remote: bool,
    /// How long a worker's poll waits for a task before answering empty.
    #[arg(long, env = "MARTIX_LONG_POLL_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    long_poll_timeout: Duration,
    /// Largest payload accepted, in bytes.
    #[arg(long, env = "MARTIX_MAX_PAYLOAD_BYTES", default_value_t = 2 * 1024 * 1024)]
    max_payload_bytes: usize,
    /// How long in-flight requests may finish after SIGINT/SIGTERM.
    #[arg(long, env = "MARTIX_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    /// A run whose history would grow past this many events is terminated.
    #[arg(long, env = "MARTIX_MAX_HISTORY_EVENTS", default_value_t = 50_000)]
    max_history_events: i64,
    /// A run whose history would grow past this many bytes is terminated (a signal that would
    /// take it there is refused); at most 50331648 (48 MiB).
    #[arg(long, env = "MARTIX_MAX_HISTORY_BYTES", default_value_t = martix_engine::MAX_HISTORY_BYTES,
          value_parser = clap::value_parser!(i64).range(1024..=martix_engine::MAX_HISTORY_BYTES))]
    max_history_bytes: i64,
    /// A RabbitMQ queue whose messages become signals (see `martix_engine::events::inbound`
    /// for the message shapes); needs MARTIX_AMQP_URL.
    #[arg(long, env = "MARTIX_CONSUME_QUEUE")]
    consume_queue: Option<String>,
    /// Namespaces the inbound consumer may signal and start in (`*`: all).
    #[arg(
        long,
        env = "MARTIX_CONSUME_NAMESPACES",
        value_delimiter = ',',
        default_value = "default"
    )]
    consume_namespaces: Vec<String>,
    /// Signal names the inbound consumer may send (`*`: any).
    #[arg(
        long,
        env = "MARTIX_CONSUME_SIGNALS",
        value_delimiter = ',',
        default_value = "*"
    )]
    consume_signals: Vec<String>,
    /// Workflow types an inbound signal-with-start may start (none unless listed; `*`: any).
    #[arg(long, env = "MARTIX_CONSUME_WORKFLOW_TYPES", value_delimiter = ',')]
    consume_workflow_types: Vec<String>,
    /// Outbox rows sent to RabbitMQ and folded into the read model are purged once they
    /// occurred longer ago than this (signal request ids likewise).
    #[arg(long, env = "MARTIX_EVENT_RETENTION", default_value = "7days", value_parser = humantime::parse_duration)]
    event_retention: Duration,
    /// Cache the views `GET /v1/orders/{id}` answers for ended orders in this Redis
    /// (`redis://[:password@]host:6379[/db]`); each read still checks, in one store read, that
    /// the cached view is of the order's latest run. Unset: no cache.
    #[arg(long, env = "MARTIX_ORDER_CACHE_URL", hide_env_values = true)]
    order_cache_url: Option<String>,
    /// How long a cached order view is kept in Redis.
    #[arg(long, env = "MARTIX_ORDER_CACHE_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    order_cache_ttl: Duration,
    /// Your tracing UI's page of one trace, with `{trace_id}` where the id goes
    /// (`https://jaeger.example/trace/{trace_id}`): the console links each order to its trace.
    #[arg(long, env = "MARTIX_TRACE_URL", value_parser = parse_trace_url)]
    trace_url: Option<String>,
    #[command(flatten)]
    edge: security::EdgeArgs,
}

#[derive(Args)]
struct DevArgs {
    /// The SQLite file to keep state in.
    #[arg(long, env = "MARTIX_DEV_DB", default_value = "./martix-dev.db")]
    db: String,
    /// Keep state in a temporary file that is deleted on exit.
    #[arg(long)]
    ephemeral: bool,
    /// Place N random orders, print the outcomes and the ledger check, and exit (non-zero if
    /// money or stock do not add up).
    #[arg(long, value_name = "N")]
    demo: Option<usize>,
    /// Do not run the order worker in this process.
    #[arg(long)]
    no_worker: bool,
    /// Do not seed a new database with the starter catalogue and its stock (four SKUs,
    /// 100 units each, so that an order placed by hand succeeds).
    #[arg(long)]
    empty: bool,
    #[command(flatten)]
    orders: OrderArgs,
    #[command(flatten)]
    listen: Listen,
}

#[derive(Args)]
struct OrderArgs {
    /// The task queue of the order saga.
    #[arg(long, env = "MARTIX_TASK_QUEUE", default_value = "orders")]
    task_queue: String,
    /// Publish order confirmations on RabbitMQ (else they go to the notifications table).
    #[arg(long, env = "MARTIX_AMQP_URL", hide_env_values = true)]
    amqp_url: Option<String>,
    /// Which adapters the activities use.
    #[arg(long, value_enum, default_value = "reference")]
    adapters: orders::Adapters,
}

#[derive(Args)]
struct WorkerArgs {
    /// The engine's gRPC address.
    #[arg(long, env = "MARTIX_ADDRESS", default_value = "http://127.0.0.1:7233")]
    address: String,
    /// The database of the reference adapters (the engine's).
    #[arg(long, env = "MARTIX_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    #[command(flatten)]
    auth: ops::ClientAuth,
    #[command(flatten)]
    signing: security::WorkerSigning,
    #[command(flatten)]
    orders: OrderArgs,
}

#[derive(Args)]
struct ServerArgs {
    /// postgres://user@host/db
    #[arg(long, env = "MARTIX_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The task queue of the order saga (for orders placed over REST).
    #[arg(long, env = "MARTIX_TASK_QUEUE", default_value = "orders")]
    task_queue: String,
    /// RabbitMQ the event relay publishes to (exchange `martix.events`); without it events
    /// stay in the outbox (`martix events tail`).
    #[arg(long, env = "MARTIX_AMQP_URL", hide_env_values = true)]
    amqp_url: Option<String>,
    // Boxed: the token flags would make `server` the one large command.
    #[command(flatten)]
    auth: Box<security::AuthArgs>,
    #[command(flatten)]
    listen: Listen,
}

/// Runs the command; a failure is told on stderr in one line (see `report`) and exits 1. A
/// usage error is clap's and exits 2.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let debug = cli.debug;
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            report::failure(&e, debug);
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let service = match &cli.command {
        Command::Worker(_) => "martix-worker",
        Command::Server(_) | Command::Dev(_) => "martix-engine",
        _ => "martix-cli",
    };
    let _telemetry = telemetry::init(cli.log_format, service)?;
    match cli.command {
        Command::Dev(args) => {
            let path = if args.ephemeral {
                std::env::temp_dir()
                    .join(format!("martix-ephemeral-{}.db", std::process::id()))
                    .display()
                    .to_string()
            } else {
                args.db.clone()
            };
            let url = format!("sqlite://{path}");
            let what = if args.ephemeral {
                format!("{path} (--ephemeral: deleted on exit)")
            } else {
                path.clone()
            };
            let result = dev(&url, &what, args).await;
            if what.ends_with("deleted on exit)") {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
            result
        }
        Command::Server(args) => {
            let shown = redact(&args.database_url);
            let shutdown = CancellationToken::new();
            tokio::spawn(signal_shutdown(shutdown.clone()));
            let auth = args.auth.config()?;
            let server = bind(
                &args.database_url,
                &shown,
                &args.listen,
                auth,
                &args.task_queue,
                args.amqp_url.as_deref(),
            )
            .await?;
            server.serve(shutdown).await?;
            println!("martix engine stopped");
            Ok(())
        }
        Command::Worker(args) => {
            let (activities, _) = orders::activities(
                args.orders.adapters,
                args.database_url.as_deref(),
                args.orders.amqp_url.as_deref(),
            )
            .await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(signal_shutdown(shutdown.clone()));
            println!(
                "martix order worker on task queue '{}' of {}",
                args.orders.task_queue, args.address
            );
            orders::run_worker(
                &args.address,
                &args.signing.apply(
                    args.auth.options()?,
                    &martix_sdk::WorkerOptions::new(&args.orders.task_queue).namespace,
                )?,
                &args.orders.task_queue,
                activities,
                shutdown,
            )
            .await?;
            println!("martix order worker stopped");
            Ok(())
        }
        Command::Bench(args) => bench_cli::bench(args).await,
        Command::Token { command } => security::token(command),
        Command::Workflow { conn, command } => ops::run(conn, command).await,
        Command::Order { conn, command } => ops::order(conn, command).await,
        Command::Namespace { conn, command } => ops::namespace(conn, command).await,
        Command::Breaker { conn, command } => ops::breaker(conn, command).await,
        Command::Schedule { conn, command } => ops::schedule(conn, command).await,
        Command::Catalog { command } => catalog::catalog(command).await,
        Command::Stock { command } => stock::stock(command).await,
        Command::Orders { conn, command } => ops::orders(conn, command).await,
        Command::Events { conn, command } => events_cli::events(conn, command).await,
        Command::Stuck {
            conn,
            older_than,
            min_attempts,
        } => ops::stuck(conn, older_than, min_attempts).await,
        Command::Replay { conn, dir, runs } => {
            let source = match dir {
                Some(dir) => ops::replay::Source::Dir(dir),
                None => ops::replay::Source::Engine(conn, runs),
            };
            ops::replay::replay(source).await
        }
        Command::Probe { http_addr, path } => probe::probe(http_addr, &path).await,
        Command::Migrate { database_url } => {
            let context = || format!("migrating {}", redact(&database_url));
            let store = martix_engine::store::connect(&database_url)
                .await
                .with_context(context)?;
            martix_engine::events::projection::migrate(&store.pools(), &martix_orders::MIGRATIONS)
                .await
                .with_context(context)?;
            martix_activities::ReferenceAdapters::connect(&database_url)
                .await
                .with_context(context)?;
            println!(
                "migrations applied ({}): engine, orders read model, reference adapters",
                store.backend()
            );
            Ok(())
        }
    }
}

/// The URL without its secrets, for messages: the password of its user part and the value of
/// any query parameter that names a password, secret or token (`?password=`, `sslpassword=`).
fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match (head.find("://"), head.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &head[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***@{}", &head[..s], &head[at + 1..]),
                None => head.to_owned(),
            }
        }
        _ => head.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _))
                    if ["password", "secret", "token"]
                        .iter()
                        .any(|s| k.to_ascii_lowercase().contains(s)) =>
                {
                    format!("{k}=***")
                }
                _ => kv.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// Opens the store and binds the engine's ports, printing where it listens.
/// `auth: None` serves without authentication.
async fn bind(
    url: &str,
    shown: &str,
    listen: &Listen,
    auth: Option<martix_engine::edge::AuthConfig>,
    order_queue: &str,
    amqp_url: Option<&str>,
) -> Result<Server> {
    if auth.is_none() && !listen.allow_unauthenticated_remote {
        for (flag, addr) in [
            ("--grpc-addr", listen.grpc_addr),
            ("--http-addr", listen.http_addr),
        ] {
            if !addr.ip().is_loopback() {
                anyhow::bail!(
                    "{flag} {addr} is reachable from other machines and authentication is off: \
                     listen on 127.0.0.1, give a token key (martix server), or pass \
                     --allow-unauthenticated-remote"
                );
            }
        }
    }
    if listen.consume_queue.is_some() && amqp_url.is_none() {
        anyhow::bail!("--consume-queue needs MARTIX_AMQP_URL (--amqp-url) to reach RabbitMQ");
    }
    let order_cache = match &listen.order_cache_url {
        Some(cache_url) => Some(
            martix_orders::OrderCache::connect(cache_url, listen.order_cache_ttl)
                .await
                .map_err(|e| anyhow::anyhow!("{e} (at {})", redact(cache_url)))?,
        ),
        None => None,
    };
    let store = martix_engine::store::connect(url)
        .await
        .with_context(|| format!("opening the store at {shown}"))?;
    let mut config = EngineConfig::default();
    config.long_poll_timeout = listen.long_poll_timeout;
    config.max_payload_bytes = listen.max_payload_bytes;
    config.max_history_events = listen.max_history_events;
    config.warn_history_events = listen.max_history_events / 5;
    config.max_history_bytes = listen.max_history_bytes;
    config.relay_configured = amqp_url.is_some();
    let mut events = martix_engine::events::EventsConfig::default();
    events.amqp_url = amqp_url.map(str::to_owned);
    events.consume_queue = listen.consume_queue.clone();
    events.inbound = martix_engine::events::inbound::InboundRules {
        namespaces: listen.consume_namespaces.clone(),
        signals: listen.consume_signals.clone(),
        workflow_types: listen.consume_workflow_types.clone(),
    };
    events.retention = listen.event_retention;
    let engine = Engine::new(store, config);
    let server = Server::bind(
        engine.clone(),
        &ServerConfig {
            grpc_addr: listen.grpc_addr,
            http_addr: listen.http_addr,
            metrics_addr: listen.metrics_addr,
            shutdown_grace: listen.shutdown_grace,
            edge: martix_engine::edge::EdgeConfig {
                auth,
                limits: listen.edge.limits(),
            },
            tls: listen.edge.tls(),
            events,
        },
    )
    .await?;
    let server = martix_orders::install(
        server,
        martix_orders::GatewayConfig {
            namespace: "default".into(),
            task_queue: order_queue.to_owned(),
            cache: order_cache,
        },
    );
    let server = martix_console::install(
        server,
        martix_console::ConsoleConfig {
            namespace: "default".into(),
            trace_url: listen.trace_url.clone(),
        },
    );
    let scheme = if listen.edge.tls().is_some() {
        "https"
    } else {
        "http"
    };
    println!("martix engine ({}) state: {shown}", server_backend(url));
    println!("  gRPC  {scheme}://{}", server.grpc_addr());
    println!(
        "  HTTP  {scheme}://{}  (/v1/orders, /openapi.json, /healthz, /readyz)",
        server.http_addr()
    );
    println!("  console  {scheme}://{}/ui", server.http_addr());
    if let Some(cache_url) = &listen.order_cache_url {
        println!(
            "  order views of ended orders cached in {}",
            redact(cache_url)
        );
    }
    if let Some(addr) = server.metrics_addr() {
        println!("  metrics http://{addr}/metrics  (no authentication)");
    }
    if !server.edge().requires_auth() {
        println!("  authentication is OFF: anyone who reaches these ports may do anything");
    }
    Ok(server)
}

/// The engine and, unless told otherwise, the order worker, in one process.
async fn dev(url: &str, shown: &str, args: DevArgs) -> Result<()> {
    if args.listen.edge.tls().is_some() {
        anyhow::bail!("martix dev serves plaintext on loopback; TLS is for `martix server`");
    }
    let server = bind(
        url,
        shown,
        &args.listen,
        None,
        &args.orders.task_queue,
        args.orders.amqp_url.as_deref(),
    )
    .await?;
    let address = format!("http://{}", server.grpc_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    let engine = tokio::spawn(server.serve(shutdown.clone()));
    let worker_stop = CancellationToken::new();
    let mut worker = None;
    let mut reference = None;
    if !args.no_worker {
        let (activities, r) = orders::activities(
            args.orders.adapters,
            Some(url),
            args.orders.amqp_url.as_deref(),
        )
        .await?;
        if let (Some(adapters), false, None) = (&r, args.empty, args.demo)
            && let Some(seeded) = catalog::seed_starter(adapters).await?
        {
            println!("{seeded}");
        }
        reference = r;
        println!("  order worker on task queue '{}'", args.orders.task_queue);
        let (address, queue, stop) = (
            address.clone(),
            args.orders.task_queue.clone(),
            worker_stop.clone(),
        );
        worker = Some(tokio::spawn(async move {
            orders::run_worker(&address, &Default::default(), &queue, activities, stop).await
        }));
    }
    let mut outcome = Ok(());
    if let Some(n) = args.demo {
        let Some(adapters) = reference.as_ref() else {
            anyhow::bail!("--demo needs the order worker with the reference adapters");
        };
        let client = martix_sdk::Client::connect(address.clone()).await?;
        outcome = demo::run(&client, adapters, &args.orders.task_queue, n).await;
        shutdown.cancel();
    }
    shutdown.cancelled().await;
    worker_stop.cancel();
    if let Some(w) = worker {
        w.await??;
    }
    engine.await??;
    println!("martix engine stopped");
    outcome
}

/// A trace URL template: http(s), with `{trace_id}` in it.
fn parse_trace_url(raw: &str) -> Result<String, String> {
    if !(raw.starts_with("https://") || raw.starts_with("http://")) {
        return Err("must start with https:// or http://".into());
    }
    if !raw.contains("{trace_id}") {
        return Err("must hold {trace_id} where the trace's id goes".into());
    }
    Ok(raw.to_owned())
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
        assert_eq!(
            redact("postgres://db/martix?user=m&password=s3cret&sslmode=require"),
            "postgres://db/martix?user=m&password=***&sslmode=require"
        );
        assert_eq!(
            redact("postgres://m@db/x?sslpassword=k3y"),
            "postgres://m@db/x?sslpassword=***"
        );
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
    }
}
