//! The REST edge of Martix: `POST /v1/orders` places an order (starts the order saga),
//! `GET /v1/orders` lists orders from the read model (filters, keyset pagination),
//! `GET /v1/orders/{id}` tells its status, steps, read-model row and events,
//! `POST /v1/orders/{id}/cancel` cancels it, and `GET /openapi.json` describes all of it. Served on the engine's HTTP port behind the
//! same edge as gRPC (tokens, roles, namespaces, rate limits); handlers call the engine
//! in-process, so a REST call costs what the gRPC call would.
//!
//! Errors always have the shape `{"error": {"code": "...", "message": "...", "field": "..."}}`.

use crate::steps::{Step, order_steps};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use martix_engine::edge::{Edge, Op, Principal};
use martix_engine::http::HttpError;
use martix_engine::{Engine, EngineError};
use martix_order_contract::{Address, Item, ORDER_WORKFLOW_TYPE, Order};
use martix_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::OpenApi;

/// Where the gateway puts orders.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub namespace: String,
    /// The task queue the order workers poll.
    pub task_queue: String,
    /// Where settled order views are cached (`--order-cache-url`), if anywhere.
    pub cache: Option<crate::cache::OrderCache>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            task_queue: "orders".into(),
            cache: None,
        }
    }
}

struct Gateway {
    engine: Arc<Engine>,
    edge: Arc<Edge>,
    config: GatewayConfig,
    read_model: crate::store::ReadModel,
}

/// The REST routes; merge them into the engine's HTTP port with `Server::route`, which puts
/// them behind authentication.
pub fn router(engine: Arc<Engine>, edge: Arc<Edge>, config: GatewayConfig) -> Router {
    let read_model = crate::store::ReadModel::new(engine.store().pools());
    let state = Arc::new(Gateway {
        engine,
        edge,
        config,
        read_model,
    });
    Router::new()
        .route("/v1/orders", post(place_order).get(list_orders))
        .route("/v1/orders/{id}", get(get_order))
        .route("/v1/orders/{id}/cancel", post(cancel_order))
        .route("/v1/orders/{id}/resolve", post(resolve_order))
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A new order. Without `order_id`, the `Idempotency-Key` header is the order id, and
/// without either a fresh id is made.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    #[serde(default)]
    pub order_id: Option<String>,
    pub customer_id: String,
    /// ISO 4217, upper case (`EUR`).
    pub currency: String,
    pub items: Vec<Item>,
    #[serde(default)]
    pub shipping_address: Address,
    /// A discount code (`WELCOME10`, `SPRING5`); an unknown code is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_code: Option<String>,
}

/// An order as the engine knows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderView {
    pub order_id: String,
    pub run_id: String,
    /// `running`, `completed`, `compensated`, `failed`, `canceled`, `terminated`, `timed_out`.
    pub status: String,
    /// The saga's steps in the order they were scheduled.
    pub steps: Vec<Step>,
    /// How the saga ended (its result), once it has.
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<serde_json::Value>,
    /// Why the run failed, when it failed without a result.
    pub failure: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    pub closed_at: Option<String>,
    pub cancel_requested: bool,
    /// The W3C trace id of the call that placed it (its `traceparent`), when one was traced.
    pub trace_id: Option<String>,
    /// The order as the read model holds it (absent until its first event is folded in).
    pub order: Option<OrderSummary>,
    /// The order's business events, by sequence, as the read model holds them.
    pub events: Vec<OrderEvent>,
}

/// An order as the read model (CQRS) holds it. Amounts in integer cents.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct OrderSummary {
    pub order_id: String,
    pub customer_id: String,
    /// placed, priced, reserved, charged, shipped, compensating, needs_attention; final:
    /// completed, compensated, canceled, failed, rejected.
    pub status: String,
    /// The type of the last event.
    pub step: String,
    pub currency: String,
    #[schema(value_type = Object)]
    pub items: serde_json::Value,
    pub subtotal_cents: i64,
    pub discount_cents: i64,
    pub tax_cents: i64,
    pub total_cents: i64,
    pub charged_cents: i64,
    pub refunded_cents: i64,
    pub shipment: Option<String>,
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

/// One business event of an order.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct OrderEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub sequence: i64,
    /// RFC 3339.
    pub time: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A page of orders, newest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderPage {
    pub orders: Vec<OrderSummary>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
    /// With `counts=true`: how many orders hold each status (every status named, each counted
    /// up to 10,001, which means "over 10,000"), whatever the filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<std::collections::BTreeMap<String, i64>>,
}

/// Filters and page of `GET /v1/orders`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub customer_id: Option<String>,
    pub status: Option<String>,
    /// RFC 3339: created at or after.
    pub created_after: Option<String>,
    /// RFC 3339: created before.
    pub created_before: Option<String>,
    /// Default 50, at most 1000.
    pub page_size: Option<i64>,
    pub page_token: Option<String>,
    /// `true`: the answer also counts the orders of each status (the console's chips).
    pub counts: Option<bool>,
}

/// The error body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A gRPC-style code: `INVALID_ARGUMENT`, `NOT_FOUND`, `UNAUTHENTICATED`, ...
    pub code: String,
    pub message: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Martix orders API", description = "Place, read and cancel order sagas."),
    paths(place_order, list_orders, get_order, cancel_order, resolve_order),
    components(schemas(
        PlaceOrder,
        ResolveOrder,
        OrderView,
        OrderSummary,
        OrderEvent,
        OrderPage,
        Step,
        Item,
        Address,
        ErrorBody,
        ErrorDetail
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(c) = api.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
    }
}

/// The OpenAPI document of these routes.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn openapi() -> Response {
    axum::Json(openapi_document()).into_response()
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The largest request body accepted (an order of 100 items is a few KiB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Place an order: starts its saga, or finds the one already placed under the same id.
#[utoipa::path(
    post,
    path = "/v1/orders",
    request_body = PlaceOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "The order id when the body has none: a retried request returns the same order.")),
    responses(
        (status = 201, description = "Placed", body = OrderView),
        (status = 200, description = "Placed before with the same body", body = OrderView),
        (status = 400, description = "Malformed or invalid order", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "The id was placed with a different body", body = ErrorBody),
        (status = 429, body = ErrorBody)
    )
)]
async fn place_order(
    State(g): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let body = body?;
    let req: PlaceOrder = serde_json::from_slice(&body)
        .map_err(|e| HttpError::invalid("body", format!("not a valid order: {e}")))?;
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| HttpError::invalid("Idempotency-Key", "is not visible ASCII"))?
                .to_owned(),
        ),
    };
    let order = Order {
        order_id: req
            .order_id
            .or(key)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        customer_id: req.customer_id,
        currency: req.currency,
        items: req.items,
        shipping_address: req.shipping_address,
        discount_code: req.discount_code,
        // Whatever the client sent is not read (the body refuses unknown fields): the
        // authenticated caller placed it.
        placed_by: g.edge.caller(&principal),
    };
    order
        .validate()
        .map_err(|e| HttpError::invalid(e.field, e.message))?;
    let ns = &g.config.namespace;
    let _admitted = g.edge.admit(&principal, Op::StartWorkflow, ns)?;
    let input = serde_json::to_vec(&order).map_err(|e| EngineError::Internal(e.to_string()))?;
    let started = g
        .engine
        .start_workflow(pb::StartWorkflowRequest {
            namespace: ns.clone(),
            workflow_id: order.order_id.clone(),
            workflow_type: ORDER_WORKFLOW_TYPE.into(),
            task_queue: g.config.task_queue.clone(),
            input: Some(pb::Payload {
                encoding: "json/plain".into(),
                data: input,
            }),
            identity: principal.subject.clone(),
            id_reuse_policy: pb::IdReusePolicy::RejectDuplicate as i32,
            ..Default::default()
        })
        .await;
    let created = match started {
        Ok(r) => r.started,
        // The order ran to its end before: the same order, if the body is the same.
        Err(EngineError::AlreadyExists(_)) => false,
        Err(e) => return Err(e.into()),
    };
    if !created && placed_order(&g, &order.order_id).await? != order {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!(
                "order '{}' was placed before with a different body",
                order.order_id
            ),
        ));
    }
    let view = view(&g, &order.order_id).await?.0;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(view)).into_response())
}

/// Status and steps of an order.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    params(("id" = String, Path, description = "The order id")),
    responses(
        (status = 200, body = OrderView),
        (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
    )
)]
async fn get_order(
    State(g): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let ns = &g.config.namespace;
    let _admitted = g.edge.admit(&principal, Op::DescribeWorkflow, ns)?;
    let Some(cache) = g.config.cache.as_ref().filter(|c| !c.skipping()) else {
        return Ok(axum::Json(view(&g, &id).await?.0).into_response());
    };
    // The order's latest run, in one read: a cached view of another run (before a reset) or
    // of a run no longer kept (purged) is never served.
    let (run_id, status) = g
        .engine
        .run_status(pb::DescribeWorkflowRequest {
            namespace: ns.clone(),
            execution: execution(&id),
        })
        .await?;
    let key = crate::cache::OrderCache::key(ns, &id);
    let lookup = if status == pb::WorkflowStatus::Running {
        None
    } else {
        cache.get(&key, &run_id).await
    };
    let generation = match lookup {
        Some(crate::cache::Lookup {
            hit: Some(json), ..
        }) => return Ok(json_response(json)),
        Some(l) => Some(l.generation),
        None => None,
    };
    let (view, settled) = view(&g, &id).await?;
    let json = serde_json::to_vec(&view).map_err(|e| EngineError::Internal(e.to_string()))?;
    // Kept only if the lookup found the cache answering, in the generation it saw: a rebuild
    // of the read model in between makes the entry unused.
    if let (true, Some(generation)) = (settled, generation) {
        let (cache, json) = (cache.clone(), json.clone());
        tokio::spawn(async move { cache.put(&key, generation, &view.run_id, &json).await });
    }
    Ok(json_response(json))
}

fn json_response(json: Vec<u8>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response()
}

/// The most a status is counted to (then shown as "over 10,000").
const COUNT_CAP: i64 = 10_001;

/// Orders from the read model, newest first, with keyset pagination: every order appears
/// once across the pages even while orders are placed.
#[utoipa::path(
    get,
    path = "/v1/orders",
    params(ListParams),
    responses(
        (status = 200, body = OrderPage),
        (status = 400, description = "A bad filter or page token", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
    )
)]
async fn list_orders(
    State(g): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<OrderPage>, HttpError> {
    let ns = &g.config.namespace;
    let _admitted = g.edge.admit(&principal, Op::QueryReadModel, ns)?;
    let Query(p) = params.map_err(|e| EngineError::invalid("query", e.body_text()))?;
    let when = |field: &'static str, v: &Option<String>| -> Result<Option<i64>, EngineError> {
        v.as_deref()
            .map(|s| {
                humantime::parse_rfc3339_weak(s)
                    .map(|t| {
                        t.duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64)
                    })
                    .map_err(|e| {
                        EngineError::invalid(field, format!("is not an RFC 3339 time: {e}"))
                    })
            })
            .transpose()
    };
    let mut q = crate::service::order_query(
        ns,
        p.customer_id.as_deref().unwrap_or(""),
        p.status.as_deref().unwrap_or(""),
        when("created_after", &p.created_after)?,
        when("created_before", &p.created_before)?,
        p.page_size.unwrap_or(0),
    )?;
    if let Some(t) = p.page_token.as_deref().filter(|t| !t.is_empty()) {
        q.after = Some(crate::service::decode_page_token(&q, t)?);
    }
    let (orders, next) = crate::service::orders_page(&g.read_model, q).await?;
    let counts = if p.counts == Some(true) {
        let counts = g
            .read_model
            .count_by_status(ns, &crate::service::STATUSES, COUNT_CAP)
            .await
            .map_err(crate::service::read_error)?;
        Some(counts.into_iter().collect())
    } else {
        None
    };
    Ok(axum::Json(OrderPage {
        orders: orders.iter().map(summary).collect(),
        next_page_token: next,
        counts,
    }))
}

/// The trace id in the run's first event's `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(history: &[pb::HistoryEvent]) -> Option<String> {
    let Some(pb::history_event::Attributes::WorkflowExecutionStarted(started)) =
        history.first().and_then(|e| e.attributes.as_ref())
    else {
        return None;
    };
    let id = started.traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then(|| id.to_owned())
}

fn summary(o: &crate::view::OrderView) -> OrderSummary {
    OrderSummary {
        order_id: o.order_id.clone(),
        customer_id: o.customer_id.clone(),
        status: o.status.clone(),
        step: o.step.clone(),
        currency: o.currency.clone(),
        items: serde_json::from_str(&o.items).unwrap_or_default(),
        subtotal_cents: o.subtotal_cents,
        discount_cents: o.discount_cents,
        tax_cents: o.tax_cents,
        total_cents: o.total_cents,
        charged_cents: o.charged_cents,
        refunded_cents: o.refunded_cents,
        shipment: o.shipment.clone(),
        last_error: o.last_error.clone(),
        created_at: martix_engine::clock::rfc3339(o.created_at),
        updated_at: martix_engine::clock::rfc3339(o.updated_at),
    }
}

/// Asks the order's saga to cancel: it compensates what it did and ends `canceled` or
/// `compensated`.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/cancel",
    params(("id" = String, Path, description = "The order id")),
    responses(
        (status = 202, description = "Cancellation requested", body = OrderView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The order has ended", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
    )
)]
async fn cancel_order(
    State(g): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let ns = &g.config.namespace;
    let _admitted = g.edge.admit(&principal, Op::CancelWorkflow, ns)?;
    g.engine
        .cancel_workflow(pb::CancelWorkflowRequest {
            namespace: ns.clone(),
            execution: execution(&id),
            reason: "cancel requested over REST".into(),
            identity: principal.subject.clone(),
        })
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(view(&g, &id).await?.0)).into_response())
}

/// An operator's decision on an order that needs attention.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ResolveOrder {
    /// `retry` (run the failed compensations again), `done` (they were done by hand: the
    /// order ends compensated) or `fail` (give up: the order ends failed).
    pub action: String,
    /// Why; required with `done` and `fail`, recorded in the order's history.
    #[serde(default)]
    pub reason: String,
}

/// Decides on an order whose compensation failed for good (status `needs_attention`). An
/// operator's call: it needs the operator role, as retrying a step does.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/resolve",
    params(("id" = String, Path, description = "The order id")),
    request_body = ResolveOrder,
    responses(
        (status = 202, description = "Decision sent", body = OrderView),
        (status = 400, description = "Not a decision", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The order does not wait for a decision", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
    )
)]
async fn resolve_order(
    State(g): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<axum::Json<ResolveOrder>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, HttpError> {
    let ns = &g.config.namespace;
    let _admitted = g.edge.admit(&principal, Op::RetryActivity, ns)?;
    let axum::Json(req) = body.map_err(|e| HttpError::invalid("body", e.body_text()))?;
    let decision = martix_order_contract::Resolution::new(&req.action, &req.reason)
        .map_err(|e| HttpError::invalid("action", e))?;
    let d = g
        .engine
        .describe_workflow(pb::DescribeWorkflowRequest {
            namespace: ns.clone(),
            execution: execution(&id),
        })
        .await?;
    if d.info.as_ref().is_none_or(|i| i.attention.is_empty()) {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            "FAILED_PRECONDITION",
            format!("order '{id}' does not wait for a decision"),
        ));
    }
    let input = serde_json::to_vec(&decision).map_err(|e| EngineError::Internal(e.to_string()))?;
    g.engine
        .signal_workflow(pb::SignalWorkflowRequest {
            namespace: ns.clone(),
            execution: execution(&id),
            signal_name: martix_order_contract::RESOLVE_SIGNAL.into(),
            input: Some(pb::Payload {
                encoding: "json/plain".into(),
                data: input,
            }),
            identity: principal.subject.clone(),
            request_id: String::new(),
        })
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(view(&g, &id).await?.0)).into_response())
}

fn execution(id: &str) -> Option<pb::WorkflowExecution> {
    Some(pb::WorkflowExecution {
        workflow_id: id.to_owned(),
        run_id: String::new(),
    })
}

/// Most history events one order view reads: an order's steps are in its first few dozen
/// events, and a view must not cost a read of a history grown long by signals.
const VIEW_HISTORY_EVENTS: i32 = 1000;

/// The first events of the latest run of `id` (at most [`VIEW_HISTORY_EVENTS`]).
async fn history_head(g: &Gateway, id: &str) -> Result<Vec<pb::HistoryEvent>, EngineError> {
    Ok(g.engine
        .workflow_history(pb::GetWorkflowHistoryRequest {
            namespace: g.config.namespace.clone(),
            execution: execution(id),
            page_size: VIEW_HISTORY_EVENTS,
            next_page_token: Vec::new(),
        })
        .await?
        .events)
}

/// The order the latest run of `id` was started with.
async fn placed_order(g: &Gateway, id: &str) -> Result<Order, HttpError> {
    let first = g
        .engine
        .workflow_history(pb::GetWorkflowHistoryRequest {
            namespace: g.config.namespace.clone(),
            execution: execution(id),
            page_size: 1,
            next_page_token: Vec::new(),
        })
        .await?;
    let input = first
        .events
        .into_iter()
        .find_map(|e| match e.attributes {
            Some(pb::history_event::Attributes::WorkflowExecutionStarted(s)) => s.input,
            _ => None,
        })
        .unwrap_or_default();
    serde_json::from_slice(&input.data).map_err(|_| {
        HttpError::new(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!("'{id}' names a workflow that is not an order"),
        )
    })
}

fn time(t: Option<&pbjson_types::Timestamp>) -> Option<String> {
    let t = t?;
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
    Some(humantime::format_rfc3339_millis(at).to_string())
}

fn status_name(status: i32) -> String {
    pb::WorkflowStatus::try_from(status)
        .unwrap_or(pb::WorkflowStatus::Unspecified)
        .as_str_name()
        .trim_start_matches("WORKFLOW_STATUS_")
        .to_ascii_lowercase()
}

/// The order's view, and whether it is settled: its run closed and the read model holding the
/// run's final event, so that it stays as it is while that run is the order's latest.
async fn view(g: &Gateway, id: &str) -> Result<(OrderView, bool), HttpError> {
    let ns = &g.config.namespace;
    let d = g
        .engine
        .describe_workflow(pb::DescribeWorkflowRequest {
            namespace: ns.clone(),
            execution: execution(id),
        })
        .await?;
    let info = d.info.clone().unwrap_or_default();
    let run_id = info.execution.clone().unwrap_or_default().run_id;
    let events = history_head(g, id).await?;
    // Only a closed run has a result to read.
    let result = if info.status == pb::WorkflowStatus::Running as i32 {
        pb::GetWorkflowResultResponse::default()
    } else {
        g.engine
            .workflow_result(pb::GetWorkflowResultRequest {
                namespace: ns.clone(),
                execution: Some(pb::WorkflowExecution {
                    workflow_id: id.to_owned(),
                    run_id: run_id.clone(),
                }),
                ..Default::default()
            })
            .await?
    };
    let outcome = result
        .result
        .filter(|_| result.closed)
        .and_then(|p| serde_json::from_slice(&p.data).ok());
    let (order, order_events) = match crate::service::order_with_events(&g.read_model, ns, id).await
    {
        Ok((order, events)) => (Some(order), events),
        Err(EngineError::NotFound(_)) => (None, Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let settled = info.status != pb::WorkflowStatus::Running as i32
        && order
            .as_ref()
            .is_some_and(|o| crate::service::FINAL_STATUSES.contains(&o.status.as_str()))
        && order_events.last().is_some_and(|e| e.run_id == run_id);
    let view = OrderView {
        order_id: id.to_owned(),
        run_id,
        status: status_name(info.status),
        steps: order_steps(&events, &d.pending_activities),
        outcome,
        failure: result.failure.map(|f| f.message),
        created_at: time(info.start_time.as_ref()).unwrap_or_default(),
        closed_at: time(info.close_time.as_ref()),
        cancel_requested: d.cancel_requested,
        trace_id: trace_id(&events),
        order: order.as_ref().map(summary),
        events: order_events
            .iter()
            .map(|e| OrderEvent {
                id: e.event_id.clone(),
                event_type: e.event_type.clone(),
                sequence: e.sequence,
                time: martix_engine::clock::rfc3339(e.occurred_at),
                data: serde_json::from_str(&e.body).unwrap_or_default(),
            })
            .collect(),
    };
    Ok((view, settled))
}
