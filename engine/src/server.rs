//! Wiring: binds the gRPC and HTTP ports, runs the services and the timer loop, and shuts
//! everything down gracefully when the token is cancelled.

use crate::api::{WorkerApi, WorkflowApi};
use crate::edge::conns::ConnectionCap;
use crate::edge::tls::{EdgeListener, TlsFiles};
use crate::edge::{Authenticate, Edge, EdgeConfig};
use crate::engine::Engine;
use martix_proto::v1::worker_service_server::WorkerServiceServer;
use martix_proto::v1::workflow_service_server::WorkflowServiceServer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

/// Connections the metrics port holds at once.
const METRICS_CONNECTIONS: usize = 8;

/// Where the engine listens.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// A port serving only `GET /metrics`, without authentication or TLS (Prometheus on a
    /// private network); `None`: metrics only on the HTTP port, behind authentication.
    pub metrics_addr: Option<SocketAddr>,
    /// How long in-flight requests may run on after shutdown begins.
    pub shutdown_grace: Duration,
    /// Authentication and limits of both ports.
    pub edge: EdgeConfig,
    /// TLS for both ports; `None`: plaintext.
    pub tls: Option<TlsFiles>,
    /// The event relay, projector and inbound consumer.
    pub events: crate::events::EventsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: ([127, 0, 0, 1], 7233).into(),
            http_addr: ([127, 0, 0, 1], 8233).into(),
            metrics_addr: None,
            shutdown_grace: Duration::from_secs(10),
            edge: EdgeConfig::default(),
            tls: None,
            events: crate::events::EventsConfig::default(),
        }
    }
}

/// An engine with its ports bound, ready to serve.
pub struct Server {
    engine: Arc<Engine>,
    edge: Arc<Edge>,
    grace: Duration,
    grpc: TcpListener,
    http: TcpListener,
    metrics: Option<TcpListener>,
    grpc_tls: Option<tonic::transport::ServerTlsConfig>,
    http_tls: Option<tokio_rustls::TlsAcceptor>,
    routes: axum::Router,
    public_routes: axum::Router,
    events: crate::events::EventsConfig,
    /// gRPC services that domains added, their names (for health) and descriptor sets (for
    /// reflection).
    services: tonic::service::RoutesBuilder,
    service_names: Vec<&'static str>,
    descriptors: Vec<&'static [u8]>,
    projections: Vec<Arc<dyn crate::events::Projection>>,
    translators: Vec<Arc<dyn crate::events::inbound::Translator>>,
}

impl Server {
    /// Binds both ports (port 0 picks a free one).
    pub async fn bind(engine: Arc<Engine>, config: &ServerConfig) -> std::io::Result<Self> {
        let grpc = TcpListener::bind(config.grpc_addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind gRPC on {}: {e}", config.grpc_addr),
            )
        })?;
        let http = TcpListener::bind(config.http_addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind HTTP on {}: {e}", config.http_addr),
            )
        })?;
        let metrics = match config.metrics_addr {
            None => None,
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot bind metrics on {addr}: {e}"))
            })?),
        };
        let edge = Edge::new(&config.edge).map_err(std::io::Error::other)?;
        let (grpc_tls, http_tls) = match &config.tls {
            None => (None, None),
            Some(files) => (
                Some(files.grpc().map_err(std::io::Error::other)?),
                Some(files.acceptor().map_err(std::io::Error::other)?),
            ),
        };
        Ok(Self {
            engine,
            edge: Arc::new(edge),
            grace: config.shutdown_grace,
            grpc,
            http,
            metrics,
            grpc_tls,
            http_tls,
            routes: axum::Router::new(),
            public_routes: axum::Router::new(),
            events: config.events.clone(),
            services: tonic::service::RoutesBuilder::default(),
            service_names: Vec::new(),
            descriptors: Vec::new(),
            projections: Vec::new(),
            translators: Vec::new(),
        })
    }

    /// Serves a domain's gRPC service on the gRPC port too, with `descriptor_set` (its encoded
    /// `FileDescriptorSet`) for reflection. The service answers through [`crate::api::handle`]
    /// to get the same authentication, limits and spans as the engine's own.
    pub fn grpc_service<S>(mut self, service: S, descriptor_set: &'static [u8]) -> Self
    where
        S: tonic::codegen::Service<
                tonic::codegen::http::Request<tonic::body::Body>,
                Response = tonic::codegen::http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.services.add_service(InterceptedService::new(
            service,
            Authenticate(self.edge.clone()),
        ));
        self.service_names.push(S::NAME);
        self.descriptors.push(descriptor_set);
        self
    }

    /// Runs `projection` in this node's relay: it folds the events it takes, in order.
    pub fn projection(mut self, projection: Arc<dyn crate::events::Projection>) -> Self {
        self.projections.push(projection);
        self
    }

    /// Publishes the subject of `workflow_type`'s events under `name` too (see
    /// [`crate::events::envelope`]).
    pub fn subject_name(mut self, workflow_type: &str, name: &str) -> Self {
        self.events
            .subject_names
            .push((workflow_type.to_owned(), name.to_owned()));
        self
    }

    /// Declares the id-reuse policy a start of `workflow_type` gets when it names none (a
    /// domain whose workflow id is a business key, such as an order id, declares
    /// reject-duplicate: one run per id, a start again with the same input answered with it).
    pub fn id_reuse_default(
        self,
        workflow_type: &str,
        policy: martix_proto::v1::IdReusePolicy,
    ) -> Self {
        self.engine.declare_id_reuse(workflow_type, policy);
        self
    }

    /// Declares what a start of `workflow_type` over gRPC or from a message writes into its
    /// input, given who starts it (see [`crate::engine::StartInput`]).
    pub fn start_input(
        self,
        workflow_type: &str,
        stamp: Arc<dyn crate::engine::StartInput>,
    ) -> Self {
        self.engine.declare_start_input(workflow_type, stamp);
        self
    }

    /// Lets the inbound consumer turn a domain's own message shapes into signals.
    pub fn translator(mut self, translator: Arc<dyn crate::events::inbound::Translator>) -> Self {
        self.translators.push(translator);
        self
    }

    /// The edge guarding this server's ports (for routes merged with [`Server::route`]).
    pub fn edge(&self) -> &Arc<Edge> {
        &self.edge
    }

    /// Serves `routes` on the HTTP port too, behind authentication.
    pub fn route(mut self, routes: axum::Router) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Serves `routes` on the HTTP port without authentication: for what a browser must load
    /// before it has a token (the console's page and scripts), never for data.
    pub fn public_route(mut self, routes: axum::Router) -> Self {
        self.public_routes = self.public_routes.merge(routes);
        self
    }

    /// The engine this server serves.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The bound metrics address, if there is a metrics port.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener has an address"))
    }

    /// Serves until `shutdown` is cancelled, then drains: in-flight requests get a grace
    /// period, long polls end at once (their tasks stay in the store).
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow_free::Result<()> {
        let engine = self.engine;
        let edge = self.edge;
        let pools = engine.store().pools();
        for p in &self.projections {
            if let Some(owner) = p.migrations() {
                crate::events::projection::migrate(&pools, owner)
                    .await
                    .map_err(|e| anyhow_free::Error(e.to_string()))?;
            }
        }
        let grace = self.grace;
        let limit = engine.config().max_message_bytes();
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<WorkflowServiceServer<WorkflowApi>>()
            .await;
        health.set_serving::<WorkerServiceServer<WorkerApi>>().await;
        for name in &self.service_names {
            health
                .set_service_status(*name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let mut sets = vec![martix_proto::FILE_DESCRIPTOR_SET];
        sets.extend(self.descriptors.iter().copied());
        let reflection = crate::reflection::Reflection::new(&sets)
            .map_err(|e| anyhow_free::Error(format!("reflection: {e}")))?;
        // Each port holds at most so many connections, each connection so many calls at once.
        let mut builder = tonic::transport::Server::builder()
            .max_concurrent_streams(edge.max_streams_per_connection());
        if let Some(tls) = self.grpc_tls {
            builder = builder
                .tls_config(tls)
                .map_err(|e| anyhow_free::Error(format!("gRPC TLS: {e}")))?;
        }
        let grpc = builder
            .add_routes(self.services.routes())
            .add_service(health_service)
            .add_service(reflection.v1())
            .add_service(reflection.v1alpha())
            .add_service(InterceptedService::new(
                WorkflowServiceServer::new(WorkflowApi {
                    engine: engine.clone(),
                    edge: edge.clone(),
                })
                .max_decoding_message_size(limit),
                Authenticate(edge.clone()),
            ))
            .add_service(InterceptedService::new(
                WorkerServiceServer::new(WorkerApi {
                    engine: engine.clone(),
                    edge: edge.clone(),
                })
                .max_decoding_message_size(limit),
                Authenticate(edge.clone()),
            ));
        let mut tasks = JoinSet::new();
        // No Nagle: a small response must not wait for the client's delayed ACK (~40 ms).
        let incoming = tonic::transport::server::TcpIncoming::from(self.grpc)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        let cap = Arc::new(ConnectionCap::new("grpc", edge.max_connections()));
        let incoming = futures::StreamExt::filter_map(incoming, move |accepted| {
            std::future::ready(match accepted {
                Ok(stream) => cap.admit(stream).map(Ok),
                Err(e) => Some(Err(e)),
            })
        });
        let token = shutdown.clone();
        tasks.spawn(async move {
            grpc.serve_with_incoming_shutdown(incoming, token.cancelled())
                .await
                .map_err(|e| anyhow_free::Error(format!("gRPC server: {e}")))
        });
        let router = crate::http::router(
            engine.clone(),
            edge.clone(),
            self.public_routes,
            self.routes
                .merge(crate::api::json::router(engine.clone(), edge.clone())),
        );
        let token = shutdown.clone();
        let http_cap = Arc::new(ConnectionCap::new("http", edge.max_connections()));
        let http = EdgeListener::new(self.http, self.http_tls, http_cap)
            .map_err(|e| anyhow_free::Error(format!("HTTP listener: {e}")))?;
        tasks.spawn(async move {
            axum::serve(
                http,
                router.into_make_service_with_connect_info::<crate::edge::tls::PeerAddr>(),
            )
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await
            .map_err(|e| anyhow_free::Error(format!("HTTP server: {e}")))
        });
        if let Some(listener) = self.metrics {
            // A few scrapers at most; more connections wait in the kernel's backlog.
            let cap = Arc::new(ConnectionCap::new("metrics", METRICS_CONNECTIONS));
            let listener = EdgeListener::new(listener, None, cap)
                .map_err(|e| anyhow_free::Error(format!("metrics listener: {e}")))?;
            let router = crate::http::metrics_router(engine.clone());
            let token = shutdown.clone();
            tasks.spawn(async move {
                axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<crate::edge::tls::PeerAddr>(),
                )
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .map_err(|e| anyhow_free::Error(format!("metrics server: {e}")))
            });
        }
        if let Some(mut notices) = engine.store().subscribe_tasks() {
            let token = shutdown.clone();
            let engine = engine.clone();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        () = token.cancelled() => return Ok(()),
                        n = notices.recv() => match n {
                            Ok(n) => engine.task_committed_elsewhere(&n),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                engine.notices_lost();
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                        },
                    }
                }
            });
        }
        let token = shutdown.clone();
        let timers = engine.clone();
        tasks.spawn(async move {
            crate::timers::run(timers, token).await;
            Ok(())
        });
        let (token, wakes) = (shutdown.clone(), engine.clone());
        tasks.spawn(async move {
            crate::timers::run_wakes(wakes, token).await;
            Ok(())
        });
        let (token, retention) = (shutdown.clone(), engine.clone());
        tasks.spawn(async move {
            crate::engine::retention::run(retention, token).await;
            Ok(())
        });
        let (token, release) = (shutdown.clone(), engine.clone());
        tasks.spawn(async move {
            crate::engine::breakers::run_release(release, token).await;
            Ok(())
        });
        let (token, relay, events) = (shutdown.clone(), engine.clone(), self.events.clone());
        let projections: crate::events::Projections = self.projections.into();
        tasks.spawn(async move {
            crate::events::run_relay(relay, events, projections, token).await;
            Ok(())
        });
        if let (Some(url), Some(queue)) = (&self.events.amqp_url, &self.events.consume_queue) {
            let (token, inbound, edge) = (shutdown.clone(), engine.clone(), edge.clone());
            let (url, queue) = (url.clone(), queue.clone());
            let translators: crate::events::inbound::Translators = self.translators.into();
            let rules = self.events.inbound.clone();
            tasks.spawn(async move {
                crate::events::inbound::run(inbound, edge, translators, rules, url, queue, token)
                    .await;
                Ok(())
            });
        }
        let mut result = Ok(());
        loop {
            tokio::select! {
                done = tasks.join_next() => match done {
                    None => break,
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => { result = Err(e); shutdown.cancel(); }
                    Some(Err(e)) => { result = Err(anyhow_free::Error(format!("task panicked: {e}"))); shutdown.cancel(); }
                },
                () = shutdown.cancelled() => {
                    engine.stop_polls();
                    // Bounded: hyper's graceful shutdown can wait on idle client connections
                    // indefinitely (hyperium/hyper#4170).
                    if tokio::time::timeout(grace, async {
                        while let Some(r) = tasks.join_next().await {
                            if let Ok(Err(e)) = r {
                                tracing::warn!(error = %e, "server task failed while stopping");
                            }
                        }
                    }).await.is_err() {
                        tracing::warn!("shutdown grace period over; aborting the rest");
                        tasks.abort_all();
                    }
                    break;
                }
            }
        }
        result
    }
}

/// A plain error type for the server (the engine crate does not use anyhow).
pub mod anyhow_free {
    /// A server failure, as text.
    #[derive(Debug)]
    pub struct Error(pub String);

    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Error {}

    /// A server result.
    pub type Result<T> = std::result::Result<T, Error>;
}
