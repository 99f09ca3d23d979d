//! The HTTP port: `/healthz` (the process is up), `/readyz` (the store answers) and the
//! public routes a server adds (the console's page), open to all; every other route (the
//! engine's API as JSON, the REST gateway, metrics) is merged in behind the edge, which
//! authenticates the caller and leaves its [`Principal`] in the request's extensions.

use crate::edge::tls::PeerAddr;
use crate::edge::{Edge, Op, Principal, Refusal};
use crate::engine::Engine;
use crate::error::EngineError;
use axum::Router;
use axum::extract::{ConnectInfo, Extension, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// The HTTP routes of the engine: health and `public` open to all, then metrics and `guarded`
/// (the engine's API as JSON and what domains add) behind authentication.
pub fn router(engine: Arc<Engine>, edge: Arc<Edge>, public: Router, guarded: Router) -> Router {
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .with_state((engine.clone(), edge.clone()));
    let guarded = guarded
        .merge(metrics)
        .layer(axum::middleware::from_fn_with_state(
            edge.clone(),
            request_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(edge, authenticate))
        .layer(axum::middleware::from_fn(same_origin));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(engine)
        .merge(public)
        .merge(guarded)
        .layer(axum::middleware::from_fn(trace_request))
}

/// One span per HTTP request, a child of the caller's `traceparent` when it sends one.
async fn trace_request(req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "http",
        otel.kind = "server",
        http.method = %req.method(),
        http.path = %req.uri().path(),
        http.status = tracing::field::Empty,
    );
    if let Some(parent) = req
        .headers()
        .get(martix_proto::trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
    {
        martix_proto::trace::set_parent(&span, parent);
    }
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    span.record("http.status", resp.status().as_u16());
    resp
}

/// The metrics port (`ServerConfig::metrics_addr`): `GET /metrics` and nothing else, without
/// authentication, for a Prometheus on the private network. Scrapes take turns (one encodes
/// at a time), so a busy scraper costs the store one backlog query at a time.
pub fn metrics_router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(engine): State<Arc<Engine>>| async move {
                engine
                    .metrics_text()
                    .await
                    .map(openmetrics)
                    .map_err(HttpError::from)
            }),
        )
        .with_state(engine)
}

fn openmetrics(text: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Ready or not; why not goes to the log, not to whoever asks (the store's error may name
/// hosts and users).
async fn readyz(State(engine): State<Arc<Engine>>) -> (StatusCode, &'static str) {
    match engine.store().namespace_exists("default").await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        }
    }
}

/// The edge's request deadline on the HTTP routes behind authentication, as on gRPC: a
/// request that runs over it is answered 504 `DEADLINE_EXCEEDED` (its work is dropped).
async fn request_deadline(State(edge): State<Arc<Edge>>, req: Request, next: Next) -> Response {
    let Some(deadline) = edge.request_timeout() else {
        return next.run(req).await;
    };
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => HttpError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "DEADLINE_EXCEEDED",
            format!(
                "the request ran over the engine's {} ms deadline",
                deadline.as_millis()
            ),
        )
        .into_response(),
    }
}

/// Prometheus scrape (OpenMetrics text). Metrics span namespaces: a `*` token of an operator or
/// admin may read them.
async fn metrics(
    State((engine, edge)): State<(Arc<Engine>, Arc<Edge>)>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, HttpError> {
    let _admitted = edge.admit(&principal, Op::ReadMetrics, "*")?;
    Ok(openmetrics(engine.metrics_text().await?))
}

/// Changes come from the page this port serves or from programs, never from another site: a
/// browser names the page a request comes from (`Origin`, `Sec-Fetch-Site`), and one from
/// another origin is refused before anything is read. Without authentication (`martix dev`)
/// this is what stops a web page in the same browser from driving the engine.
async fn same_origin(req: Request, next: Next) -> Response {
    if matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) {
        return next.run(req).await;
    }
    let headers = req.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let cross_site = text("sec-fetch-site") == Some("cross-site");
    let foreign_origin = match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => {
            origin == "null" || origin.split_once("://").map(|(_, a)| a) != Some(host)
        }
        (Some(_), None) => true,
        (None, _) => false,
    };
    if cross_site || foreign_origin {
        return HttpError::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "a request from another site's page is refused (its Origin is not this server)",
        )
        .into_response();
    }
    next.run(req).await
}

async fn authenticate(State(edge): State<Arc<Edge>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0.0.ip());
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match edge.authenticate(auth, peer) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(r) => HttpError::from(r).into_response(),
    }
}

/// An error of the HTTP API, always answered as
/// `{"error": {"code": "INVALID_ARGUMENT", "message": "...", "field": "..."}}`
/// (`field` only where one field is at fault), with `Retry-After` on 429.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after: Option<Duration>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl HttpError {
    /// A 400 naming the field at fault.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_ARGUMENT",
            message: format!("invalid {field}: {}", message.into()),
            field: Some(field),
            retry_after: None,
        }
    }

    /// Any status with a code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }
}

impl From<Refusal> for HttpError {
    fn from(r: Refusal) -> Self {
        Self {
            status: StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::FORBIDDEN),
            code: r.code(),
            message: r.to_string(),
            field: None,
            retry_after: r.retry_after(),
        }
    }
}

/// A body that could not be read: too large (413, `RESOURCE_EXHAUSTED`) or broken (400).
impl From<axum::extract::rejection::BytesRejection> for HttpError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "RESOURCE_EXHAUSTED"
        } else {
            "INVALID_ARGUMENT"
        };
        Self::new(e.status(), code, format!("body: {}", e.body_text()))
    }
}

impl From<EngineError> for HttpError {
    fn from(e: EngineError) -> Self {
        let (status, code) = match &e {
            EngineError::InvalidArgument { field, .. } => {
                return Self {
                    field: Some((*field).to_owned()),
                    ..Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", e.to_string())
                };
            }
            EngineError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "RESOURCE_EXHAUSTED"),
            EngineError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            EngineError::FailedPrecondition(_) => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
            EngineError::AlreadyExists(_) => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
            EngineError::Unimplemented(_) => (StatusCode::NOT_IMPLEMENTED, "UNIMPLEMENTED"),
            EngineError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            EngineError::DeadlineExceeded(_) => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
            EngineError::Overloaded { retry_after, .. } => {
                return Self {
                    retry_after: Some(*retry_after),
                    ..Self::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "RESOURCE_EXHAUSTED",
                        e.to_string(),
                    )
                };
            }
            EngineError::Internal(_) => {
                tracing::error!(error = %e, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL")
            }
        };
        Self::new(status, code, e.to_string())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}
