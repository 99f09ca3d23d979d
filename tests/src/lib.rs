//! Shared support for the end-to-end tests: real stores and a real engine on a free port.
//!
//! PostgreSQL is the one on `MARTIX_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/martix_test`, created if missing). A test that needs it
//! fails, with how to start it, when it does not answer; it never skips.
//!
//! [`subscriptions`] is a second domain beside the order one, built on the engine without a
//! change to it.

pub mod subscriptions;

use martix_engine::edge::EdgeConfig;
use martix_engine::edge::tls::TlsFiles;
use martix_engine::store::{PostgresStore, SqliteStore, Store};
use martix_engine::{Engine, EngineConfig, Server, ServerConfig};
use martix_proto::v1 as pb;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The PostgreSQL database the tests use.
pub fn postgres_url() -> String {
    std::env::var("MARTIX_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/martix_test".into())
}

/// A store on the test PostgreSQL database, creating the database if needed.
pub async fn postgres_store() -> Arc<dyn Store> {
    postgres_store_on(&postgres_url()).await
}

/// A store on the test database's sibling for the store conformance suite (`<name>_conformance`,
/// created if needed): no engine runs there, so no relay moves the outbox cursors the suite
/// checks (the suite's cases consume the outbox as a relay would).
pub async fn conformance_postgres_store() -> Arc<dyn Store> {
    postgres_store_on(&format!("{}_conformance", postgres_url())).await
}

/// A store on the test database's sibling `<name>_<suffix>` (created if needed), for tests
/// whose engines must not see other tests' rows (schedules: any engine acts on any schedule
/// due by its clock).
pub async fn postgres_store_apart(suffix: &str) -> (Arc<dyn Store>, String) {
    let url = format!("{}_{suffix}", postgres_url());
    (postgres_store_on(&url).await, url)
}

/// A store on the PostgreSQL database of `url`, creating the database if needed.
async fn postgres_store_on(url: &str) -> Arc<dyn Store> {
    let (base, db) = url.rsplit_once('/').expect("database URL names a database");
    let admin = format!("{base}/postgres");
    let conn = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL does not answer at {admin}: {e}\n\
                 Start it (scripts/test.sh installs and starts one) or point \
                 MARTIX_TEST_DATABASE_URL at a running server."
            )
        });
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(db)
        .fetch_optional(&conn)
        .await
        .expect("query pg_database");
    assert!(
        db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "test database name '{db}' must be letters, digits and _"
    );
    if exists.is_none() {
        // Two test binaries may race to create it; losing that race is fine.
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
            .execute(&conn)
            .await;
    }
    conn.close().await;
    Arc::new(
        PostgresStore::connect(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open the test database {url}: {e}")),
    )
}

/// The URL of a fresh SQLite file in the temp directory.
pub fn sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("martix-test-{}.db", uuid::Uuid::new_v4()));
    format!("sqlite://{}", path.display())
}

/// A store on a fresh SQLite file in the temp directory.
pub async fn sqlite_store() -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::connect(&sqlite_url())
            .await
            .expect("open SQLite"),
    )
}

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// A fresh store of this backend.
    pub async fn store(self) -> Arc<dyn Store> {
        self.store_and_url().await.0
    }

    /// A fresh store of this backend and the URL of its database.
    pub async fn store_and_url(self) -> (Arc<dyn Store>, String) {
        match self {
            Backend::Postgres => (postgres_store().await, postgres_url()),
            Backend::Sqlite => {
                let url = sqlite_url();
                let store = SqliteStore::connect(&url).await.expect("open SQLite");
                (Arc::new(store), url)
            }
        }
    }
}

/// An engine serving gRPC on a free loopback port; stopped when dropped.
pub struct TestEngine {
    pub engine: Arc<Engine>,
    /// The database the engine keeps its state in.
    pub database_url: String,
    pub endpoint: String,
    pub http: String,
    /// The task queue of orders placed over REST (`/v1/orders`), unique to this engine.
    pub order_queue: String,
    shutdown: CancellationToken,
}

impl TestEngine {
    /// Starts an engine on `backend` with `config`, without authentication.
    pub async fn start(backend: Backend, config: EngineConfig) -> Self {
        Self::start_with(backend, config, EdgeConfig::default(), None).await
    }

    /// Starts an engine that requires tokens signed with `secret` (see [`token`]), default
    /// limits, no TLS.
    pub async fn start_authenticated(backend: Backend, secret: &[u8]) -> Self {
        Self::start_with(
            backend,
            EngineConfig::default(),
            EdgeConfig {
                auth: Some(martix_engine::edge::AuthConfig::hs256(secret)),
                limits: martix_engine::edge::LimitsConfig::default(),
            },
            None,
        )
        .await
    }

    /// Starts an engine with the given edge (authentication, limits) and TLS.
    pub async fn start_with(
        backend: Backend,
        config: EngineConfig,
        edge: EdgeConfig,
        tls: Option<TlsFiles>,
    ) -> Self {
        Self::start_full(
            backend.store_and_url().await,
            config,
            edge,
            tls,
            Default::default(),
        )
        .await
    }

    /// Starts an engine on the database `url` whose event relay and inbound consumer use
    /// `events`.
    pub async fn start_on(
        url: &str,
        config: EngineConfig,
        events: martix_engine::events::EventsConfig,
    ) -> Self {
        let store = martix_engine::store::connect(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
        Self::start_full(
            (store, url.to_owned()),
            config,
            EdgeConfig::default(),
            None,
            events,
        )
        .await
    }

    /// Starts an engine on the database `url`, as [`TestEngine::start_on`], with more domains:
    /// `install` registers them on the server (after the order domain).
    pub async fn start_with_domains(
        url: &str,
        config: EngineConfig,
        events: martix_engine::events::EventsConfig,
        install: impl FnOnce(Server) -> Server,
    ) -> Self {
        let store = martix_engine::store::connect(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
        Self::start_domains(
            (store, url.to_owned()),
            config,
            EdgeConfig::default(),
            None,
            events,
            install,
        )
        .await
    }

    async fn start_full(
        store: (Arc<dyn Store>, String),
        config: EngineConfig,
        edge: EdgeConfig,
        tls: Option<TlsFiles>,
        events: martix_engine::events::EventsConfig,
    ) -> Self {
        Self::start_domains(store, config, edge, tls, events, |s| s).await
    }

    async fn start_domains(
        (store, database_url): (Arc<dyn Store>, String),
        config: EngineConfig,
        edge: EdgeConfig,
        tls: Option<TlsFiles>,
        events: martix_engine::events::EventsConfig,
        install: impl FnOnce(Server) -> Server,
    ) -> Self {
        Self::start_gateway(
            (store, database_url),
            config,
            edge,
            tls,
            events,
            None,
            install,
        )
        .await
    }

    /// Starts an engine on `backend`, without authentication, whose REST gateway caches
    /// settled order views in `cache`.
    pub async fn start_with_order_cache(
        backend: Backend,
        config: EngineConfig,
        cache: martix_orders::OrderCache,
    ) -> Self {
        Self::start_gateway(
            backend.store_and_url().await,
            config,
            EdgeConfig::default(),
            None,
            Default::default(),
            Some(cache),
            |s| s,
        )
        .await
    }

    async fn start_gateway(
        (store, database_url): (Arc<dyn Store>, String),
        config: EngineConfig,
        edge: EdgeConfig,
        tls: Option<TlsFiles>,
        events: martix_engine::events::EventsConfig,
        cache: Option<martix_orders::OrderCache>,
        install: impl FnOnce(Server) -> Server,
    ) -> Self {
        let engine = Engine::new(store, config);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = Server::bind(
            engine.clone(),
            &ServerConfig {
                grpc_addr: "127.0.0.1:0".parse().unwrap(),
                http_addr: "127.0.0.1:0".parse().unwrap(),
                metrics_addr: None,
                shutdown_grace: std::time::Duration::from_secs(1),
                edge,
                tls,
                events,
            },
        )
        .await
        .expect("bind free ports");
        let order_queue = unique("orders");
        let server = martix_orders::install(
            server,
            martix_orders::GatewayConfig {
                namespace: "default".into(),
                task_queue: order_queue.clone(),
                cache,
            },
        );
        let server = martix_console::install(
            install(server),
            martix_console::ConsoleConfig {
                namespace: "default".into(),
                trace_url: Some("https://traces.example/trace/{trace_id}".into()),
            },
        );
        let endpoint = format!("{scheme}://{}", server.grpc_addr());
        let http = format!("{scheme}://{}", server.http_addr());
        let shutdown = CancellationToken::new();
        tokio::spawn(server.serve(shutdown.clone()));
        Self {
            engine,
            database_url,
            endpoint,
            http,
            order_queue,
            shutdown,
        }
    }

    /// A client of `WorkflowService`.
    pub async fn workflows(
        &self,
    ) -> pb::workflow_service_client::WorkflowServiceClient<tonic::transport::Channel> {
        pb::workflow_service_client::WorkflowServiceClient::connect(self.endpoint.clone())
            .await
            .expect("connect")
    }

    /// A client of `WorkerService`.
    pub async fn workers(
        &self,
    ) -> pb::worker_service_client::WorkerServiceClient<tonic::transport::Channel> {
        pb::worker_service_client::WorkerServiceClient::connect(self.endpoint.clone())
            .await
            .expect("connect")
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // A SQLite test database is the test's own: remove it (still-open handles keep
        // working on Linux until they close).
        if let Some(path) = self.database_url.strip_prefix("sqlite://") {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }
}

/// A JSON payload.
pub fn json(value: &str) -> Option<pb::Payload> {
    Some(pb::Payload {
        encoding: "json/plain".into(),
        data: value.as_bytes().to_vec(),
    })
}

/// A unique id for a test's workflows and queues.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Expands `name(backend)` into one test per backend: `name::postgres`, `name::sqlite`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::Backend::Postgres).await
                }
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::Backend::Sqlite).await
                }
            }
        )*
    };
}

/// A fresh PostgreSQL database of its own (`martix_t_<id>`), for tests whose engines must not
/// share the outbox with other tests' engines; drop it with [`drop_postgres_database`].
pub async fn fresh_postgres_url() -> String {
    let url = postgres_url();
    let (base, _) = url.rsplit_once('/').expect("database URL names a database");
    let db = format!("martix_t_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{base}/postgres"))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL does not answer at {base}: {e}\n\
                 Start it (scripts/test.sh installs and starts one) or point \
                 MARTIX_TEST_DATABASE_URL at a running server."
            )
        });
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .execute(&admin)
        .await
        .expect("create a test database");
    admin.close().await;
    format!("{base}/{db}")
}

/// Drops a database made by [`fresh_postgres_url`] (its connections are closed by force).
pub async fn drop_postgres_database(url: &str) {
    let (base, db) = url.rsplit_once('/').expect("database URL names a database");
    assert!(
        db.starts_with("martix_t_"),
        "only test databases are dropped"
    );
    if let Ok(admin) = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{base}/postgres"))
        .await
    {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
        admin.close().await;
    }
}

/// The Redis the order-cache tests use (`MARTIX_TEST_REDIS_URL`, default the local one;
/// scripts/test.sh starts or installs it).
pub fn redis_url() -> String {
    std::env::var("MARTIX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// The RabbitMQ the tests use (`MARTIX_TEST_AMQP_URL`, default the local one).
pub fn amqp_url() -> String {
    std::env::var("MARTIX_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A connection to the test RabbitMQ; fails with how to start it.
pub async fn amqp_connection() -> lapin::Connection {
    let url = amqp_url();
    lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ does not answer at {url}: {e}\n\
                 Start it (scripts/test.sh installs and starts one) or set MARTIX_TEST_AMQP_URL."
            )
        })
}

/// A business event as a consumer of `martix.events` received it.
#[derive(Clone, Debug, PartialEq)]
pub struct TappedEvent {
    /// The AMQP message id.
    pub message_id: String,
    pub routing_key: String,
    /// The message body, as sent.
    pub raw: String,
    pub body: serde_json::Value,
}

impl TappedEvent {
    pub fn order_id(&self) -> &str {
        self.body["order_id"].as_str().unwrap_or_default()
    }
    pub fn event_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }
    pub fn sequence(&self) -> i64 {
        self.body["sequence"].as_i64().unwrap_or_default()
    }
}

/// A queue of its own bound to every event on the `martix.events` exchange.
pub struct EventTap {
    _conn: lapin::Connection,
    consumer: lapin::Consumer,
    /// Everything received so far.
    pub received: Vec<TappedEvent>,
}

impl EventTap {
    pub async fn open() -> Self {
        use lapin::options::{
            BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
        };
        use lapin::types::FieldTable;
        let conn = amqp_connection().await;
        let ch = conn.create_channel().await.expect("channel");
        ch.exchange_declare(
            martix_engine::events::EXCHANGE.into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare martix.events");
        let queue = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare a tap queue");
        ch.queue_bind(
            queue.name().as_str().into(),
            martix_engine::events::EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the tap");
        let consumer = ch
            .basic_consume(
                queue.name().as_str().into(),
                "tap".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume the tap");
        Self {
            _conn: conn,
            consumer,
            received: Vec::new(),
        }
    }

    /// Receives until `done(received)` holds or `timeout` passes; returns whether it held.
    pub async fn receive_until(
        &mut self,
        timeout: std::time::Duration,
        done: impl Fn(&[TappedEvent]) -> bool,
    ) -> bool {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&self.received) {
            match tokio::time::timeout_at(deadline, self.consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    let raw = String::from_utf8_lossy(&d.data).into_owned();
                    self.received.push(TappedEvent {
                        message_id: d
                            .properties
                            .message_id()
                            .as_ref()
                            .map(|m| m.as_str().to_owned())
                            .unwrap_or_default(),
                        routing_key: d.routing_key.as_str().to_owned(),
                        body: serde_json::from_str(&raw).unwrap_or_default(),
                        raw,
                    });
                }
                Ok(_) => panic!("the tap's consumer ended"),
                Err(_) => return false,
            }
        }
        true
    }
}

/// A TCP proxy in front of a service, that a test can cut (closing every connection and
/// refusing new ones, as if the service stopped) and restore.
pub struct TcpProxy {
    pub addr: std::net::SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl TcpProxy {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (flag, tx) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees a closed connection
                }
                let mut cut = tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            generation,
        }
    }

    /// Closes every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Engine settings for tests that wait on timers and other nodes: rechecks every 200 ms.
pub fn fast_config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.recheck_interval = std::time::Duration::from_millis(200);
    config.timer_poll_interval = std::time::Duration::from_millis(200);
    config
}

/// An engine with an order worker on its database's reference adapters, a client, and stock
/// for its orders (SKUs `<prefix>-sku-0` to `-3`). The worker stops when this is dropped.
pub struct OrderShop {
    pub engine: TestEngine,
    pub adapters: martix_activities::ReferenceAdapters,
    pub activities: Arc<martix_activities::OrderActivities>,
    pub client: martix_sdk::Client,
    /// The order worker's task queue.
    pub queue: String,
    /// This shop's own prefix of SKUs, order and customer ids.
    pub prefix: String,
    stop: CancellationToken,
}

impl Drop for OrderShop {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl OrderShop {
    /// Opens a shop on `engine`: `faults` and `breakers` for its activities, `stock(s)` units
    /// of SKU `s`, a prefix from `label`.
    pub async fn open(
        engine: TestEngine,
        faults: martix_activities::Faults,
        breakers: martix_activities::BreakerSettings,
        label: &str,
        stock: impl Fn(usize) -> i64,
    ) -> Self {
        use martix_activities::{Backend as Adapters, OrderActivities, ReferenceAdapters};
        let adapters = ReferenceAdapters::connect(&engine.database_url)
            .await
            .unwrap();
        let activities = OrderActivities::new(
            Adapters::reference(adapters.clone(), None),
            faults,
            breakers,
        );
        let queue = unique("orders");
        let mut worker =
            martix_sdk::Worker::new(&engine.endpoint, martix_sdk::WorkerOptions::new(&queue))
                .unwrap();
        worker.workflow(martix_workflows::OrderSaga, martix_workflows::order);
        worker.workflow(
            martix_workflows::ReconcilePaymentsWorkflow,
            martix_workflows::reconcile_payments,
        );
        activities.register(&mut worker);
        let stop = CancellationToken::new();
        let reported = stop.clone();
        tokio::spawn(activities.breakers().clone().report_to(
            worker.breaker_reporter(),
            async move {
                reported.cancelled().await;
            },
        ));
        tokio::spawn(worker.run(stop.clone()));
        let client = martix_sdk::Client::connect(engine.endpoint.clone())
            .await
            .unwrap();
        let prefix = unique(label).replace('-', "");
        for s in 0..4 {
            adapters
                .seed_stock(&format!("{prefix}-sku-{s}"), stock(s))
                .await
                .unwrap();
        }
        Self {
            engine,
            adapters,
            activities,
            client,
            queue,
            prefix,
            stop,
        }
    }
}

/// A token signed with `secret` (HS256) for `subject`, with `roles` in `namespaces`, valid for
/// 10 minutes, as an engine started by [`TestEngine::start_authenticated`] takes it.
pub fn token(
    secret: &[u8],
    subject: &str,
    roles: &[martix_engine::edge::Role],
    namespaces: &[&str],
) -> String {
    use martix_engine::edge::auth;
    auth::issue(
        &auth::SigningKey::Secret(secret.to_vec()),
        &auth::TokenRequest {
            subject: subject.into(),
            roles: roles.to_vec(),
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            ttl: std::time::Duration::from_secs(600),
            issuer: auth::DEFAULT_ISSUER.into(),
            audience: auth::DEFAULT_AUDIENCE.into(),
        },
    )
    .expect("sign a test token")
}
