//! The `WorkflowService` as JSON over HTTP, for browsers (the console) and `curl`:
//! `POST /api/martix.v1.WorkflowService/<Method>` with the request message in proto3 JSON
//! answers the response message in proto3 JSON (field names in lowerCamelCase, 64-bit
//! integers as strings, bytes in base64, defaults left out). Behind the same edge as gRPC
//! (the HTTP port's authentication, then the same permission, namespace and rate checks);
//! errors have the HTTP API's one shape (`{"error": {"code", "message", "field"}}`).
//!
//! `GetWorkflowResult` is not here: it waits by design, and HTTP requests run under the
//! request deadline.

use super::Scoped;
use crate::edge::{Edge, Op, Principal};
use crate::engine::Engine;
use crate::http::HttpError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::StatusCode;
use axum::routing::post;
use martix_proto::v1 as pb;
use std::sync::Arc;

/// The largest request body: a start or signal carries at most a 2 MiB payload, which base64
/// makes 2.7 MiB.
const MAX_BODY_BYTES: usize = 4 << 20;

struct JsonApi {
    engine: Arc<Engine>,
    edge: Arc<Edge>,
}

/// The request message in `body` (empty: every field at its default), or a 400 that says
/// what is wrong with it.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8], message: &str) -> Result<T, HttpError> {
    let body = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(body).map_err(|e| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            format!("the body is not a martix.v1.{message} in proto3 JSON: {e}"),
        )
    })
}

macro_rules! json_routes {
    ($($rpc:ident($req:ident) => $method:ident $(($caller:ident))?, $op:ident;)*) => {
        /// The routes; merged into the HTTP port behind authentication.
        pub fn router(engine: Arc<Engine>, edge: Arc<Edge>) -> Router {
            let state = Arc::new(JsonApi { engine, edge });
            Router::new()
                $(.route(
                    concat!("/api/martix.v1.WorkflowService/", stringify!($rpc)),
                    post(
                        |State(api): State<Arc<JsonApi>>,
                         Extension(principal): Extension<Principal>,
                         body: Bytes| async move {
                            let req: pb::$req = decode(&body, stringify!($req))?;
                            let _admitted =
                                api.edge.admit(&principal, Op::$op, &req.namespace())?;
                            let answer = api
                                .engine
                                .$method(req $(, api.edge.$caller(&principal))?)
                                .await?;
                            Ok::<_, HttpError>(axum::Json(answer))
                        },
                    ),
                ))*
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .with_state(state)
        }
    };
}

json_routes! {
    StartWorkflow(StartWorkflowRequest) => start_workflow_as(caller), StartWorkflow;
    DescribeWorkflow(DescribeWorkflowRequest) => describe_workflow, DescribeWorkflow;
    ListWorkflows(ListWorkflowsRequest) => list_workflows, ListWorkflows;
    GetWorkflowHistory(GetWorkflowHistoryRequest) => workflow_history, GetWorkflowHistory;
    SignalWorkflow(SignalWorkflowRequest) => signal_workflow, SignalWorkflow;
    SignalWithStartWorkflow(SignalWithStartWorkflowRequest) => signal_with_start_workflow_as(caller), StartWorkflow;
    CancelWorkflow(CancelWorkflowRequest) => cancel_workflow, CancelWorkflow;
    TerminateWorkflow(TerminateWorkflowRequest) => terminate_workflow, TerminateWorkflow;
    ResetWorkflow(ResetWorkflowRequest) => reset_workflow, ResetWorkflow;
    PauseWorkflow(PauseWorkflowRequest) => pause_workflow_as(caller), PauseWorkflow;
    ResumeWorkflow(ResumeWorkflowRequest) => resume_workflow_as(caller), PauseWorkflow;
    RetryActivity(RetryActivityRequest) => retry_activity, RetryActivity;
    ListStuckWorkflows(ListStuckWorkflowsRequest) => list_stuck_workflows, ListWorkflows;
    SetBreaker(SetBreakerRequest) => set_breaker_as(caller), ManageBreakers;
    ListBreakers(ListBreakersRequest) => list_breakers, ListBreakers;
    CreateNamespace(CreateNamespaceRequest) => create_namespace, ManageNamespaces;
    ListNamespaces(ListNamespacesRequest) => list_namespaces, ManageNamespaces;
    UpdateNamespace(UpdateNamespaceRequest) => update_namespace, ManageNamespaces;
}
