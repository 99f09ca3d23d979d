//! Shared support for the end-to-end tests: real stores and a real engine on a free port.
//!
//! PostgreSQL is the one on `MARTIX_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/martix_test`, created if missing). A test that needs it
//! fails, with how to start it, when it does not answer; it never skips.

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
    let url = postgres_url();
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
        PostgresStore::connect(&url)
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

    /// Starts an engine with the given edge (authentication, limits) and TLS.
    pub async fn start_with(
        backend: Backend,
        config: EngineConfig,
        edge: EdgeConfig,
        tls: Option<TlsFiles>,
    ) -> Self {
        Self::start_full(backend, config, edge, tls, Default::default()).await
    }

    /// Starts an engine whose event relay and inbound consumer use `events`.
    pub async fn start_with_events(
        backend: Backend,
        config: EngineConfig,
        events: martix_engine::events::EventsConfig,
    ) -> Self {
        Self::start_full(backend, config, EdgeConfig::default(), None, events).await
    }

    async fn start_full(
        backend: Backend,
        config: EngineConfig,
        edge: EdgeConfig,
        tls: Option<TlsFiles>,
        events: martix_engine::events::EventsConfig,
    ) -> Self {
        let (store, database_url) = backend.store_and_url().await;
        let engine = Engine::new(store, config);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = Server::bind(
            engine.clone(),
            &ServerConfig {
                grpc_addr: "127.0.0.1:0".parse().unwrap(),
                http_addr: "127.0.0.1:0".parse().unwrap(),
                shutdown_grace: std::time::Duration::from_secs(1),
                edge,
                tls,
                events,
            },
        )
        .await
        .expect("bind free ports");
        let order_queue = unique("orders");
        let gateway = martix_gateway::router(
            engine.clone(),
            server.edge().clone(),
            martix_gateway::GatewayConfig {
                namespace: "default".into(),
                task_queue: order_queue.clone(),
            },
        );
        let server = server.route(gateway);
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
