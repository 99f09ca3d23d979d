//! `OrderService` (gRPC): the orders read model and the outbox, behind the engine's edge.
//! Listing checks and keyset page tokens live here once; the REST gateway uses them too.

use crate::OrdersProjection;
use crate::pb;
use crate::store::ReadModel;
use crate::view::{OrderQuery, OrderView};
use base64::Engine as _;
use martix_engine::api::{Scoped, handle};
use martix_engine::clock::{Millis, from_timestamp, to_timestamp};
use martix_engine::edge::{Edge, Op};
use martix_engine::store::events::StoredEvent;
use martix_engine::{Engine, EngineError};
use pb::order_service_server::OrderService;
use std::borrow::Cow;
use std::sync::Arc;
use tonic::{Request, Response, Status};

const TOKEN_MALFORMED: &str =
    "is malformed: pass back the next_page_token of the previous page unchanged";

/// The order in API form.
pub fn order_to_proto(o: &OrderView) -> pb::Order {
    pb::Order {
        namespace: o.namespace.clone(),
        order_id: o.order_id.clone(),
        customer_id: o.customer_id.clone(),
        status: o.status.clone(),
        step: o.step.clone(),
        currency: o.currency.clone(),
        items_json: o.items.clone(),
        subtotal_cents: o.subtotal_cents,
        discount_cents: o.discount_cents,
        tax_cents: o.tax_cents,
        total_cents: o.total_cents,
        charged_cents: o.charged_cents,
        refunded_cents: o.refunded_cents,
        shipment: o.shipment.clone().unwrap_or_default(),
        last_error: o.last_error.clone().unwrap_or_default(),
        created_at: Some(to_timestamp(o.created_at)),
        updated_at: Some(to_timestamp(o.updated_at)),
        last_sequence: o.last_sequence,
    }
}

/// What a page token is bound to: a token of one query is refused for another.
fn filter_key(q: &OrderQuery) -> u32 {
    let text = format!(
        "{}\0{:?}\0{:?}\0{:?}\0{:?}",
        q.namespace, q.customer_id, q.status, q.created_after, q.created_before
    );
    martix_engine::store::events::fnv1a(text.bytes())
}

/// Page tokens: base64url of `o1:<filter key>:<created_at>:<order id>` (the last row given).
pub fn encode_page_token(q: &OrderQuery, last: &OrderView) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "o1:{}:{}:{}",
        filter_key(q),
        last.created_at,
        last.order_id
    ))
}

/// The position a page token continues from; precise errors for tokens not made by us or
/// made for other filters.
pub fn decode_page_token(q: &OrderQuery, token: &str) -> Result<(Millis, String), EngineError> {
    let bad = || EngineError::invalid("page_token", TOKEN_MALFORMED);
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = text.splitn(4, ':');
    let (Some("o1"), Some(key), Some(time), Some(id)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if key.parse::<u32>().map_err(|_| bad())? != filter_key(q) {
        return Err(EngineError::invalid(
            "page_token",
            "was made for other filters: keep the filters of the first page, or start over \
             without a token",
        ));
    }
    let time = time.parse::<i64>().map_err(|_| bad())?;
    if id.is_empty() || id.len() > 255 {
        return Err(bad());
    }
    Ok((time, id.to_owned()))
}

fn namespace_or_default(ns: &str) -> &str {
    if ns.is_empty() { "default" } else { ns }
}

/// Order statuses a filter may name.
pub const STATUSES: [&str; 12] = [
    "placed",
    "priced",
    "reserved",
    "charged",
    "shipped",
    "compensating",
    "needs_attention",
    "completed",
    "compensated",
    "canceled",
    "failed",
    "rejected",
];

/// The statuses an order ends in: its read-model row changes no more while its run is the
/// order's latest.
pub const FINAL_STATUSES: [&str; 5] =
    ["completed", "compensated", "canceled", "failed", "rejected"];

/// Checks and builds a listing query (without the page position).
pub fn order_query(
    namespace: &str,
    customer_id: &str,
    status: &str,
    created_after: Option<Millis>,
    created_before: Option<Millis>,
    page_size: i64,
) -> Result<OrderQuery, EngineError> {
    if customer_id.len() > 255 {
        return Err(EngineError::invalid(
            "customer_id",
            "is longer than 255 bytes",
        ));
    }
    if !status.is_empty() && !STATUSES.contains(&status) {
        return Err(EngineError::invalid(
            "status",
            format!("must be one of {}", STATUSES.join(", ")),
        ));
    }
    if let (Some(a), Some(b)) = (created_after, created_before)
        && a >= b
    {
        return Err(EngineError::invalid(
            "created_before",
            "must be later than created_after",
        ));
    }
    let limit = match page_size {
        0 => 50,
        n if n < 0 => return Err(EngineError::invalid("page_size", "must not be negative")),
        n if n > 1000 => return Err(EngineError::invalid("page_size", "must be at most 1000")),
        n => n as usize,
    };
    Ok(OrderQuery {
        namespace: namespace_or_default(namespace).to_owned(),
        customer_id: (!customer_id.is_empty()).then(|| customer_id.to_owned()),
        status: (!status.is_empty()).then(|| status.to_owned()),
        created_after,
        created_before,
        after: None,
        limit,
    })
}

/// An outbox event in API form.
pub fn event_to_proto(e: &StoredEvent) -> pb::OrderEvent {
    pb::OrderEvent {
        event_id: e.event_id.clone(),
        event_type: e.event_type.clone(),
        order_id: e.subject.clone(),
        namespace: e.namespace.clone(),
        sequence: e.sequence,
        occurred_at: Some(to_timestamp(e.occurred_at)),
        body_json: e.body.clone(),
        position: e.position,
        sent: e.sent,
    }
}

/// A read of the read model that failed: the database away is `Unavailable` (try again);
/// anything else is ours to fix, logged and answered as `Internal`.
pub(crate) fn read_error(e: sqlx::Error) -> EngineError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => EngineError::Unavailable(format!("orders read model: {e}")),
        e => {
            tracing::error!(error = %e, "orders read model read failed");
            EngineError::Internal("orders read model read failed".into())
        }
    }
}

/// A page of orders and the token of the next one (None: the last page).
pub async fn orders_page(
    read_model: &ReadModel,
    mut q: OrderQuery,
) -> Result<(Vec<OrderView>, Option<String>), EngineError> {
    let limit = q.limit;
    q.limit = limit + 1;
    let mut orders = read_model.list_orders(&q).await.map_err(read_error)?;
    q.limit = limit;
    let next = if orders.len() > limit {
        orders.truncate(limit);
        orders.last().map(|o| encode_page_token(&q, o))
    } else {
        None
    };
    Ok((orders, next))
}

/// One order of the read model with its events, or `NotFound`.
pub async fn order_with_events(
    read_model: &ReadModel,
    namespace: &str,
    order_id: &str,
) -> Result<(OrderView, Vec<StoredEvent>), EngineError> {
    read_model
        .order_with_events(namespace, order_id)
        .await
        .map_err(read_error)?
        .ok_or_else(|| {
            EngineError::NotFound(format!("no order '{order_id}' in namespace '{namespace}'"))
        })
}

/// `OrderService` on an engine, behind its edge.
#[derive(Clone)]
pub struct OrderApi {
    engine: Arc<Engine>,
    edge: Arc<Edge>,
    projection: Arc<OrdersProjection>,
    read_model: ReadModel,
    /// The REST gateway's cache of order views, told when the read model is rebuilt.
    cache: Option<crate::cache::OrderCache>,
}

impl OrderApi {
    /// The service for `engine`, guarded by `edge`, reading the store's read model.
    pub fn new(
        engine: Arc<Engine>,
        edge: Arc<Edge>,
        projection: Arc<OrdersProjection>,
        cache: Option<crate::cache::OrderCache>,
    ) -> Self {
        let read_model = ReadModel::new(engine.store().pools());
        Self {
            engine,
            edge,
            projection,
            read_model,
            cache,
        }
    }

    async fn get_order(
        &self,
        req: pb::GetOrderRequest,
    ) -> Result<pb::GetOrderResponse, EngineError> {
        let ns = namespace_or_default(&req.namespace);
        if req.order_id.is_empty() || req.order_id.len() > 255 {
            return Err(EngineError::invalid("order_id", "must be 1 to 255 bytes"));
        }
        let (order, events) = order_with_events(&self.read_model, ns, &req.order_id).await?;
        Ok(pb::GetOrderResponse {
            order: Some(order_to_proto(&order)),
            events: events.iter().map(event_to_proto).collect(),
        })
    }

    async fn list_orders(
        &self,
        req: pb::ListOrdersRequest,
    ) -> Result<pb::ListOrdersResponse, EngineError> {
        let mut q = order_query(
            &req.namespace,
            &req.customer_id,
            &req.status,
            req.created_after.as_ref().map(from_timestamp),
            req.created_before.as_ref().map(from_timestamp),
            i64::from(req.page_size),
        )?;
        if !req.page_token.is_empty() {
            q.after = Some(decode_page_token(&q, &req.page_token)?);
        }
        let (orders, next) = orders_page(&self.read_model, q).await?;
        Ok(pb::ListOrdersResponse {
            orders: orders.iter().map(order_to_proto).collect(),
            next_page_token: next.unwrap_or_default(),
        })
    }

    async fn rebuild_orders(
        &self,
        _req: pb::RebuildOrdersRequest,
    ) -> Result<pb::RebuildOrdersResponse, EngineError> {
        let projections: [Arc<dyn martix_engine::events::Projection>; 1] =
            [self.projection.clone()];
        let events = martix_engine::events::rebuild(&self.engine, &projections).await?;
        if let Some(cache) = &self.cache {
            cache.bump_generation().await;
        }
        let orders = self.read_model.count().await.map_err(read_error)?;
        tracing::info!(
            orders,
            events,
            "orders read model rebuilt from the histories"
        );
        Ok(pb::RebuildOrdersResponse {
            orders: orders as i64,
            events: events as i64,
        })
    }

    async fn outbox_status(
        &self,
        _req: pb::GetOutboxStatusRequest,
    ) -> Result<pb::GetOutboxStatusResponse, EngineError> {
        let s = self.engine.outbox_status().await?;
        Ok(pb::GetOutboxStatusResponse {
            total: s.total,
            unsent: s.unsent,
            oldest_unsent: s.oldest_unsent_at.map(to_timestamp),
            unprojected: s.unprojected,
            oldest_unprojected: s.oldest_unprojected_at.map(to_timestamp),
            leases: s
                .leases
                .into_iter()
                .map(|l| pb::ShardLease {
                    shard: l.shard,
                    owner: l.owner,
                    lease_until: Some(to_timestamp(l.until)),
                })
                .collect(),
            relay_configured: self.engine.config().relay_configured,
        })
    }

    async fn list_outbox_events(
        &self,
        req: pb::ListOutboxEventsRequest,
    ) -> Result<pb::ListOutboxEventsResponse, EngineError> {
        let events = self
            .engine
            .list_outbox_events(&req.namespace, req.after_position, req.page_size)
            .await?;
        Ok(pb::ListOutboxEventsResponse {
            events: events.iter().map(event_to_proto).collect(),
        })
    }
}

impl Scoped for pb::GetOrderRequest {
    fn namespace(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.namespace)
    }
}

impl Scoped for pb::ListOrdersRequest {
    fn namespace(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.namespace)
    }
}

/// The outbox of one namespace, or (empty) of all: then a token for every namespace.
impl Scoped for pb::ListOutboxEventsRequest {
    fn namespace(&self) -> Cow<'_, str> {
        Cow::Borrowed(if self.namespace.is_empty() {
            "*"
        } else {
            &self.namespace
        })
    }
}

/// Engine-wide: a token for every namespace.
impl Scoped for pb::RebuildOrdersRequest {
    fn namespace(&self) -> Cow<'_, str> {
        Cow::Borrowed("*")
    }
}

/// Engine-wide: a token for every namespace.
impl Scoped for pb::GetOutboxStatusRequest {
    fn namespace(&self) -> Cow<'_, str> {
        Cow::Borrowed("*")
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        handle(
            &self.edge,
            Op::QueryReadModel,
            "martix.v1.get_order",
            request,
            |r| self.get_order(r),
        )
        .await
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        handle(
            &self.edge,
            Op::QueryReadModel,
            "martix.v1.list_orders",
            request,
            |r| self.list_orders(r),
        )
        .await
    }

    async fn rebuild_orders(
        &self,
        request: Request<pb::RebuildOrdersRequest>,
    ) -> Result<Response<pb::RebuildOrdersResponse>, Status> {
        handle(
            &self.edge,
            Op::RebuildReadModel,
            "martix.v1.rebuild_orders",
            request,
            |r| self.rebuild_orders(r),
        )
        .await
    }

    async fn get_outbox_status(
        &self,
        request: Request<pb::GetOutboxStatusRequest>,
    ) -> Result<Response<pb::GetOutboxStatusResponse>, Status> {
        handle(
            &self.edge,
            Op::ReadEvents,
            "martix.v1.get_outbox_status",
            request,
            |r| self.outbox_status(r),
        )
        .await
    }

    async fn list_outbox_events(
        &self,
        request: Request<pb::ListOutboxEventsRequest>,
    ) -> Result<Response<pb::ListOutboxEventsResponse>, Status> {
        handle(
            &self.edge,
            Op::ReadEvents,
            "martix.v1.list_outbox_events",
            request,
            |r| self.list_outbox_events(r),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_bad_ones_are_named() {
        let q = order_query("default", "c-1", "completed", None, None, 10).unwrap();
        let last = OrderView {
            order_id: "o:1".into(),
            created_at: 42,
            ..Default::default()
        };
        let t = encode_page_token(&q, &last);
        assert_eq!(decode_page_token(&q, &t).unwrap(), (42, "o:1".to_owned()));
        let other = order_query("default", "c-2", "completed", None, None, 10).unwrap();
        let err = decode_page_token(&other, &t).unwrap_err().to_string();
        assert!(err.contains("other filters"), "{err}");
        for garbage in ["", "!!!", "bzE6", "not a token at all", &t[1..]] {
            let err = decode_page_token(&q, garbage).unwrap_err().to_string();
            assert!(err.contains("page_token"), "{garbage}: {err}");
        }
        assert!(order_query("default", "", "shipped?", None, None, 0).is_err());
        assert!(order_query("default", "", "", Some(5), Some(5), 0).is_err());
        assert!(order_query("default", "", "", None, None, 1001).is_err());
    }
}
