//! The HTTP port: `/healthz` (the process is up) and `/readyz` (the store answers).

use crate::engine::Engine;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;

/// The HTTP routes of the engine.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(engine)
}

async fn readyz(State(engine): State<Arc<Engine>>) -> (StatusCode, String) {
    match engine.store().namespace_exists("default").await {
        Ok(_) => (
            StatusCode::OK,
            format!("ready ({})\n", engine.store().backend()),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        ),
    }
}
