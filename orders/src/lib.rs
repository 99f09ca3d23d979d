//! The order domain's read side, built on the Martix engine without the engine knowing it:
//! the orders projection (a read model of the events the `order` saga publishes, folded by the
//! engine's projection host), `OrderService` over gRPC, the REST gateway, and the inbound
//! message shape `order.cancel_requested`, and who placed an order (`placed_by`). [`install`]
//! registers all of it on a server.
//!
//! Modules: `view` (the pure fold), `store` (its SQL on both backends), `service` (gRPC),
//! `rest` and `steps` (HTTP), `cache` (settled order views in Redis), `inbound` (messages),
//! `placed_by` (the caller of a start).

#[cfg(feature = "redis-cache")]
pub mod cache;
/// The order cache's place when the build has none (feature `redis-cache` off).
#[cfg(not(feature = "redis-cache"))]
#[path = "cache_off.rs"]
pub mod cache;
pub mod inbound;
pub mod placed_by;
pub mod rest;
pub mod service;
pub mod steps;
pub mod store;
pub mod view;

use martix_engine::events::{Projection, ProjectionError, ProjectionTx};
use martix_engine::store::events::StoredEvent;
use martix_order_contract::ORDER_WORKFLOW_TYPE;
use std::sync::Arc;

pub use cache::OrderCache;
pub use rest::{GatewayConfig, MAX_BODY_BYTES, router};
pub use steps::{Step, order_steps};
pub use store::ReadModel;
pub use view::{OrderQuery, OrderView};

/// `martix.v1.OrderService`: messages and service (the package the engine's contract shares,
/// so clients keep their paths).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)] // generated code
pub mod pb {
    tonic::include_proto!("martix.v1");
    include!(concat!(env!("OUT_DIR"), "/martix.v1.serde.rs"));
}

/// The encoded `FileDescriptorSet` of `OrderService`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orders_descriptor");

/// The orders read model as a projection of the engine's projection host.
#[derive(Debug, Default)]
pub struct OrdersProjection;

#[async_trait::async_trait]
impl Projection for OrdersProjection {
    fn name(&self) -> &'static str {
        "orders"
    }

    fn takes(&self, event: &StoredEvent) -> bool {
        view::is_order_event(event)
    }

    fn workflow_types(&self) -> &[&'static str] {
        &[ORDER_WORKFLOW_TYPE]
    }

    async fn fold(
        &self,
        tx: &mut ProjectionTx<'_>,
        batch: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        store::fold_batch(tx, batch).await
    }

    async fn clear(&self, tx: &mut ProjectionTx<'_>) -> Result<(), ProjectionError> {
        store::clear(tx).await
    }

    fn migrations(&self) -> Option<&'static martix_engine::martix_migrate::Owner> {
        Some(&MIGRATIONS)
    }
}

/// The read model's tables (`orders`, `order_events`), tracked as owner `orders`.
pub static MIGRATIONS: martix_engine::martix_migrate::Owner =
    martix_engine::martix_migrate::Owner {
        name: "orders",
        shared_history: true,
        postgres: martix_engine::martix_migrate::embedded!("orders_postgres"),
        sqlite: martix_engine::martix_migrate::embedded!("orders_sqlite"),
    };

/// Registers the order domain's read side on `server`: the orders projection in the relay,
/// `OrderService` on the gRPC port, the REST routes on the HTTP port (behind the edge), the
/// `order.cancel_requested` message shape, `order_id` as the published events' subject name,
/// and the caller of an order's start as its `placed_by`.
pub fn install(server: martix_engine::Server, gateway: GatewayConfig) -> martix_engine::Server {
    let engine = server.engine().clone();
    let edge = server.edge().clone();
    let projection = Arc::new(OrdersProjection);
    let limit = engine.config().max_message_bytes();
    let service = pb::order_service_server::OrderServiceServer::new(service::OrderApi::new(
        engine.clone(),
        edge.clone(),
        projection.clone(),
        gateway.cache.clone(),
    ))
    .max_decoding_message_size(limit);
    let routes = rest::router(engine, edge, gateway);
    server
        .projection(projection)
        .grpc_service(service, FILE_DESCRIPTOR_SET)
        .route(routes)
        .translator(Arc::new(inbound::CancelRequested))
        .start_input(ORDER_WORKFLOW_TYPE, Arc::new(placed_by::PlacedBy))
        .subject_name(ORDER_WORKFLOW_TYPE, "order_id")
        // An order id is placed once, whatever the way in (REST, gRPC, CLI, messages): the same
        // order again is answered with its run, another order under the id is a conflict.
        .id_reuse_default(
            ORDER_WORKFLOW_TYPE,
            martix_proto::v1::IdReusePolicy::RejectDuplicate,
        )
}
