//! The `WorkflowService` as JSON over HTTP, for browsers (the console) and `curl`:
//! `POST /api/martix.v1.WorkflowService/<Method>` with the request message in proto3 JSON
//! answers the response message in proto3 JSON (field names in lowerCamelCase, 64-bit
//! integers as strings, bytes in base64, defaults left out). Behind the same edge as gRPC
//! (the HTTP port's authentication, then the same permission, namespace and rate checks);
//! errors have the HTTP API's one shape (`{"error": {"code", "message", "field"}}`), a
//! body that is not declared `application/json` is refused (415), as the HTTP port refuses any
//! change sent from another site's page.
//!
//! `GetWorkflowResult` is not here: it waits by design, and HTTP requests run under the
//! request deadline.

use super::Scoped;
use crate::edge::{Edge, Op, Principal};
use crate::engine::Engine;
use crate::http::HttpError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use martix_proto::v1 as pb;
use std::sync::Arc;

struct JsonApi {
    engine: Arc<Engine>,
    edge: Arc<Edge>,
}

/// The request message in `body` (empty: every field at its default), or a 4xx that says what
/// is wrong with it. The body must be declared JSON: a browser sends a cross-site form or a
/// `text/plain` body without asking first, never `application/json`.
fn decode<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    message: &str,
) -> Result<T, HttpError> {
    let body = body?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "INVALID_ARGUMENT",
            "send the request as 'content-type: application/json'",
        ));
    }
    let body = &body[..];
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
        /// Each route's method with the operation it is admitted as.
        #[cfg(test)]
        const JSON_RPCS: &[(&str, Op)] = &[$((stringify!($rpc), Op::$op)),*];

        /// The routes; merged into the HTTP port behind authentication.
        pub fn router(engine: Arc<Engine>, edge: Arc<Edge>) -> Router {
            // What gRPC takes (two payloads and the rest), in base64 (4/3), and some room.
            let max_body = engine.config().max_message_bytes() / 3 * 4 + (64 << 10);
            let state = Arc::new(JsonApi { engine, edge });
            Router::new()
                $(.route(
                    concat!("/api/martix.v1.WorkflowService/", stringify!($rpc)),
                    post(
                        |State(api): State<Arc<JsonApi>>,
                         Extension(principal): Extension<Principal>,
                         headers: HeaderMap,
                         body: Result<Bytes, BytesRejection>| async move {
                            let req: pb::$req = decode(&headers, body, stringify!($req))?;
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
                .layer(DefaultBodyLimit::max(max_body))
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
    QueryWorkflow(QueryWorkflowRequest) => query_workflow, QueryWorkflow;
    UpdateWorkflow(UpdateWorkflowRequest) => update_workflow_as(caller), UpdateWorkflow;
    SignalWithStartWorkflow(SignalWithStartWorkflowRequest) => signal_with_start_workflow_as(caller), StartWorkflow;
    CancelWorkflow(CancelWorkflowRequest) => cancel_workflow, CancelWorkflow;
    TerminateWorkflow(TerminateWorkflowRequest) => terminate_workflow, TerminateWorkflow;
    ResetWorkflow(ResetWorkflowRequest) => reset_workflow, ResetWorkflow;
    PauseWorkflow(PauseWorkflowRequest) => pause_workflow_as(caller), PauseWorkflow;
    ResumeWorkflow(ResumeWorkflowRequest) => resume_workflow_as(caller), PauseWorkflow;
    RetryActivity(RetryActivityRequest) => retry_activity, RetryActivity;
    ListStuckWorkflows(ListStuckWorkflowsRequest) => list_stuck_workflows, ListWorkflows;
    ListTaskQueues(ListTaskQueuesRequest) => list_task_queues, ListWorkflows;
    SetBreaker(SetBreakerRequest) => set_breaker_as(caller), ManageBreakers;
    ListBreakers(ListBreakersRequest) => list_breakers, ListBreakers;
    CreateNamespace(CreateNamespaceRequest) => create_namespace, ManageNamespaces;
    ListNamespaces(ListNamespacesRequest) => list_namespaces, ManageNamespaces;
    UpdateNamespace(UpdateNamespaceRequest) => update_namespace, ManageNamespaces;
    CreateSchedule(CreateScheduleRequest) => create_schedule, ManageSchedules;
    DescribeSchedule(DescribeScheduleRequest) => describe_schedule, ListWorkflows;
    ListSchedules(ListSchedulesRequest) => list_schedules, ListWorkflows;
    PatchSchedule(PatchScheduleRequest) => patch_schedule, ManageSchedules;
    DeleteSchedule(DeleteScheduleRequest) => delete_schedule, ManageSchedules;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snake(camel: &str) -> String {
        let mut out = String::new();
        for (i, c) in camel.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    /// Every RPC of `WorkflowService` but the waiting one is on JSON, admitted as on gRPC: a
    /// route admitted as a weaker operation would be a way around a role.
    #[test]
    fn every_json_route_is_admitted_as_its_rpc() {
        let grpc = super::super::WORKFLOW_RPCS;
        for (name, op) in JSON_RPCS {
            let rpc = snake(name);
            let found = grpc.iter().find(|(r, _)| *r == rpc);
            assert_eq!(found.map(|(_, o)| o), Some(op), "{name}");
        }
        for (rpc, _) in grpc {
            let on_json = JSON_RPCS.iter().any(|(n, _)| snake(n) == *rpc);
            assert_eq!(on_json, *rpc != "get_workflow_result", "{rpc}");
        }
        // Workers speak gRPC only.
        for (rpc, _) in super::super::WORKER_RPCS {
            assert!(!JSON_RPCS.iter().any(|(n, _)| snake(n) == *rpc), "{rpc}");
        }
    }
}
