//! gRPC: the `martix.v1` services. Handlers are thin: call the engine, map the error once
//! (`From<EngineError> for Status`).

pub mod json;

use crate::edge::{Edge, Op, Principal};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::history::TaskToken;
use martix_proto::trace;
use martix_proto::v1 as pb;
use pb::worker_service_server::WorkerService;
use pb::workflow_service_server::WorkflowService;
use std::borrow::Cow;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// `WorkflowService` on an engine, behind the edge.
#[derive(Clone)]
pub struct WorkflowApi {
    pub engine: Arc<Engine>,
    pub edge: Arc<Edge>,
}

/// `WorkerService` on an engine, behind the edge.
#[derive(Clone)]
pub struct WorkerApi {
    pub engine: Arc<Engine>,
    pub edge: Arc<Edge>,
}

/// The namespace a request acts in, for authorization (`*`: every namespace). A domain's own
/// service implements it for its requests and answers through [`handle`].
pub trait Scoped {
    fn namespace(&self) -> Cow<'_, str>;
}

macro_rules! scoped {
    (field: $($t:ty),*) => {
        $(impl Scoped for $t {
            fn namespace(&self) -> Cow<'_, str> {
                Cow::Borrowed(&self.namespace)
            }
        })*
    };
    (token: $($t:ty),*) => {
        $(impl Scoped for $t {
            // The task token names the namespace; a garbled one is refused by the engine.
            fn namespace(&self) -> Cow<'_, str> {
                Cow::Owned(
                    <TaskToken as prost::Message>::decode(&self.task_token[..])
                        .map(|t| t.namespace)
                        .unwrap_or_default(),
                )
            }
        })*
    };
}

scoped!(field: pb::StartWorkflowRequest, pb::DescribeWorkflowRequest, pb::ListWorkflowsRequest,
    pb::GetWorkflowHistoryRequest, pb::GetWorkflowResultRequest, pb::SignalWorkflowRequest,
    pb::QueryWorkflowRequest, pb::UpdateWorkflowRequest, pb::CreateScheduleRequest,
    pb::DescribeScheduleRequest, pb::ListSchedulesRequest, pb::PatchScheduleRequest,
    pb::DeleteScheduleRequest,
    pb::CancelWorkflowRequest, pb::TerminateWorkflowRequest, pb::ResetWorkflowRequest,
    pb::PauseWorkflowRequest, pb::ResumeWorkflowRequest, pb::SetBreakerRequest,
    pb::ListBreakersRequest, pb::ListStuckWorkflowsRequest, pb::ListTaskQueuesRequest,
    pb::RetryActivityRequest, pb::PollWorkflowTaskRequest, pb::PollActivityTaskRequest,
    pb::ReportBreakersRequest);

/// Namespaces are administered by tokens for every namespace (`*`) only.
macro_rules! scoped_everywhere {
    ($($t:ty),*) => {
        $(impl Scoped for $t {
            fn namespace(&self) -> Cow<'_, str> {
                Cow::Borrowed("*")
            }
        })*
    };
}

scoped_everywhere!(
    pb::CreateNamespaceRequest,
    pb::ListNamespacesRequest,
    pb::UpdateNamespaceRequest
);
impl Scoped for pb::SignalWithStartWorkflowRequest {
    fn namespace(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.start.as_ref().map_or("", |s| s.namespace.as_str()))
    }
}

scoped!(token: pb::RespondWorkflowTaskCompletedRequest, pb::RespondWorkflowTaskFailedRequest,
    pb::RespondActivityTaskCompletedRequest, pb::RespondActivityTaskFailedRequest,
    pb::RecordActivityHeartbeatRequest, pb::RespondQueryTaskCompletedRequest);

/// Authenticates, authorizes and counts a request before the engine sees it, then runs it
/// under the request deadline (except operations that wait by design).
async fn guarded<Q: Scoped, T, F>(
    edge: &Edge,
    op: Op,
    request: Request<Q>,
    run: impl FnOnce(Q, &Principal) -> F,
) -> Result<Response<T>, Status>
where
    F: std::future::Future<Output = Result<T, EngineError>>,
{
    let mut request = request;
    // Authenticated before decoding by the server's interceptor; a service mounted without
    // it is authenticated here.
    let principal = match request.extensions_mut().remove::<Principal>() {
        Some(p) => p,
        None => edge.authenticate(
            request
                .metadata()
                .get("authorization")
                .map(|v| v.as_bytes()),
            request.remote_addr().map(|a| a.ip()),
        )?,
    };
    let _admission = edge.admit(&principal, op, &request.get_ref().namespace())?;
    let work = run(request.into_inner(), &principal);
    match edge.request_timeout().filter(|_| !op.waits()) {
        None => reply(work.await),
        Some(deadline) => match tokio::time::timeout(deadline, work).await {
            Ok(r) => reply(r),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the request ran over the engine's {} ms deadline",
                deadline.as_millis()
            ))),
        },
    }
}

fn reply<T>(r: Result<T, EngineError>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

/// Answers one RPC: a span named after it (a child of the caller's `traceparent`), then
/// authentication, authorization and limits for `op`, then `run` under the request deadline.
/// The engine's services and the services domains add to the server all answer through it.
pub async fn handle<Q: Scoped, T, F>(
    edge: &Edge,
    op: Op,
    rpc: &'static str,
    request: Request<Q>,
    run: impl FnOnce(Q) -> F,
) -> Result<Response<T>, Status>
where
    F: std::future::Future<Output = Result<T, EngineError>>,
{
    handle_as(edge, op, rpc, request, |q, _| run(q)).await
}

/// [`handle`], with `run` told who is calling.
pub async fn handle_as<Q: Scoped, T, F>(
    edge: &Edge,
    op: Op,
    rpc: &'static str,
    request: Request<Q>,
    run: impl FnOnce(Q, &Principal) -> F,
) -> Result<Response<T>, Status>
where
    F: std::future::Future<Output = Result<T, EngineError>>,
{
    let span = tracing::info_span!(
        "rpc",
        otel.name = rpc,
        otel.kind = "server",
        rpc.method = rpc
    );
    if let Some(parent) = request
        .metadata()
        .get(trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
    {
        trace::set_parent(&span, parent);
    }
    guarded(edge, op, request, run).instrument(span).await
}

/// One handler per line: `rpc(Request) -> Response => engine_method, Op;`, and
/// `=> engine_method(caller), Op;` for a method that also takes the caller's authenticated
/// subject (`Edge::caller`).
macro_rules! service {
    ($trait:path, $ty:ty, $table:ident { $($rpc:ident($req:ty) -> $resp:ty => $method:ident $(($caller:ident))?, $op:ident;)* }) => {
        /// Each RPC of the service with the operation it is admitted as (checked against the
        /// JSON routes' table by a test).
        #[cfg(test)]
        pub(crate) const $table: &[(&str, Op)] = &[$((stringify!($rpc), Op::$op)),*];

        #[tonic::async_trait]
        impl $trait for $ty {
            $(
                async fn $rpc(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    let (engine, edge) = (&self.engine, &self.edge);
                    handle_as(edge, Op::$op, concat!("martix.v1.", stringify!($rpc)), request, |r, _principal| {
                        engine.$method(r $(, edge.$caller(_principal))?)
                    }).await
                }
            )*
        }
    };
}

service!(WorkflowService, WorkflowApi, WORKFLOW_RPCS {
    start_workflow(pb::StartWorkflowRequest) -> pb::StartWorkflowResponse => start_workflow_as(caller), StartWorkflow;
    describe_workflow(pb::DescribeWorkflowRequest) -> pb::DescribeWorkflowResponse => describe_workflow, DescribeWorkflow;
    list_workflows(pb::ListWorkflowsRequest) -> pb::ListWorkflowsResponse => list_workflows, ListWorkflows;
    get_workflow_history(pb::GetWorkflowHistoryRequest) -> pb::GetWorkflowHistoryResponse => workflow_history, GetWorkflowHistory;
    get_workflow_result(pb::GetWorkflowResultRequest) -> pb::GetWorkflowResultResponse => workflow_result, GetWorkflowResult;
    signal_workflow(pb::SignalWorkflowRequest) -> pb::SignalWorkflowResponse => signal_workflow, SignalWorkflow;
    query_workflow(pb::QueryWorkflowRequest) -> pb::QueryWorkflowResponse => query_workflow, QueryWorkflow;
    update_workflow(pb::UpdateWorkflowRequest) -> pb::UpdateWorkflowResponse => update_workflow_as(caller), UpdateWorkflow;
    signal_with_start_workflow(pb::SignalWithStartWorkflowRequest) -> pb::SignalWithStartWorkflowResponse => signal_with_start_workflow_as(caller), StartWorkflow;
    cancel_workflow(pb::CancelWorkflowRequest) -> pb::CancelWorkflowResponse => cancel_workflow, CancelWorkflow;
    terminate_workflow(pb::TerminateWorkflowRequest) -> pb::TerminateWorkflowResponse => terminate_workflow, TerminateWorkflow;
    reset_workflow(pb::ResetWorkflowRequest) -> pb::ResetWorkflowResponse => reset_workflow, ResetWorkflow;
    pause_workflow(pb::PauseWorkflowRequest) -> pb::PauseWorkflowResponse => pause_workflow_as(caller), PauseWorkflow;
    resume_workflow(pb::ResumeWorkflowRequest) -> pb::ResumeWorkflowResponse => resume_workflow_as(caller), PauseWorkflow;
    retry_activity(pb::RetryActivityRequest) -> pb::RetryActivityResponse => retry_activity, RetryActivity;
    list_stuck_workflows(pb::ListStuckWorkflowsRequest) -> pb::ListStuckWorkflowsResponse => list_stuck_workflows, ListWorkflows;
    list_task_queues(pb::ListTaskQueuesRequest) -> pb::ListTaskQueuesResponse => list_task_queues, ListWorkflows;
    set_breaker(pb::SetBreakerRequest) -> pb::SetBreakerResponse => set_breaker_as(caller), ManageBreakers;
    list_breakers(pb::ListBreakersRequest) -> pb::ListBreakersResponse => list_breakers, ListBreakers;
    create_namespace(pb::CreateNamespaceRequest) -> pb::CreateNamespaceResponse => create_namespace, ManageNamespaces;
    list_namespaces(pb::ListNamespacesRequest) -> pb::ListNamespacesResponse => list_namespaces, ManageNamespaces;
    update_namespace(pb::UpdateNamespaceRequest) -> pb::UpdateNamespaceResponse => update_namespace, ManageNamespaces;
    create_schedule(pb::CreateScheduleRequest) -> pb::CreateScheduleResponse => create_schedule, ManageSchedules;
    describe_schedule(pb::DescribeScheduleRequest) -> pb::DescribeScheduleResponse => describe_schedule, ListWorkflows;
    list_schedules(pb::ListSchedulesRequest) -> pb::ListSchedulesResponse => list_schedules, ListWorkflows;
    patch_schedule(pb::PatchScheduleRequest) -> pb::PatchScheduleResponse => patch_schedule, ManageSchedules;
    delete_schedule(pb::DeleteScheduleRequest) -> pb::DeleteScheduleResponse => delete_schedule, ManageSchedules;
});

service!(WorkerService, WorkerApi, WORKER_RPCS {
    poll_workflow_task(pb::PollWorkflowTaskRequest) -> pb::PollWorkflowTaskResponse => poll_workflow_task, PollWorkflowTask;
    respond_workflow_task_completed(pb::RespondWorkflowTaskCompletedRequest) -> pb::RespondWorkflowTaskCompletedResponse => complete_workflow_task, RespondWorkflowTask;
    respond_workflow_task_failed(pb::RespondWorkflowTaskFailedRequest) -> pb::RespondWorkflowTaskFailedResponse => fail_workflow_task, RespondWorkflowTask;
    poll_activity_task(pb::PollActivityTaskRequest) -> pb::PollActivityTaskResponse => poll_activity_task, PollActivityTask;
    respond_activity_task_completed(pb::RespondActivityTaskCompletedRequest) -> pb::RespondActivityTaskCompletedResponse => complete_activity_task, RespondActivityTask;
    respond_activity_task_failed(pb::RespondActivityTaskFailedRequest) -> pb::RespondActivityTaskFailedResponse => fail_activity_task, RespondActivityTask;
    record_activity_heartbeat(pb::RecordActivityHeartbeatRequest) -> pb::RecordActivityHeartbeatResponse => record_activity_heartbeat, RecordActivityHeartbeat;
    report_breakers(pb::ReportBreakersRequest) -> pb::ReportBreakersResponse => report_breakers, ReportBreakers;
    respond_query_task_completed(pb::RespondQueryTaskCompletedRequest) -> pb::RespondQueryTaskCompletedResponse => respond_query_task, RespondWorkflowTask;
});
