//! gRPC: the `martix.v1` services. Handlers are thin: call the engine, map the error once
//! (`From<EngineError> for Status`).

use crate::engine::Engine;
use crate::error::EngineError;
use martix_proto::v1 as pb;
use pb::worker_service_server::WorkerService;
use pb::workflow_service_server::WorkflowService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// `WorkflowService` on an engine.
#[derive(Clone)]
pub struct WorkflowApi(pub Arc<Engine>);

/// `WorkerService` on an engine.
#[derive(Clone)]
pub struct WorkerApi(pub Arc<Engine>);

fn reply<T>(r: Result<T, EngineError>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

macro_rules! service {
    ($trait:path, $ty:ty { $($rpc:ident($req:ty) -> $resp:ty => $method:ident;)* }) => {
        #[tonic::async_trait]
        impl $trait for $ty {
            $(
                #[tracing::instrument(skip_all)]
                async fn $rpc(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    reply(self.0.$method(request.into_inner()).await)
                }
            )*
        }
    };
}

service!(WorkflowService, WorkflowApi {
    start_workflow(pb::StartWorkflowRequest) -> pb::StartWorkflowResponse => start_workflow;
    describe_workflow(pb::DescribeWorkflowRequest) -> pb::DescribeWorkflowResponse => describe_workflow;
    list_workflows(pb::ListWorkflowsRequest) -> pb::ListWorkflowsResponse => list_workflows;
    get_workflow_history(pb::GetWorkflowHistoryRequest) -> pb::GetWorkflowHistoryResponse => workflow_history;
    get_workflow_result(pb::GetWorkflowResultRequest) -> pb::GetWorkflowResultResponse => workflow_result;
    signal_workflow(pb::SignalWorkflowRequest) -> pb::SignalWorkflowResponse => signal_workflow;
    cancel_workflow(pb::CancelWorkflowRequest) -> pb::CancelWorkflowResponse => cancel_workflow;
    terminate_workflow(pb::TerminateWorkflowRequest) -> pb::TerminateWorkflowResponse => terminate_workflow;
    reset_workflow(pb::ResetWorkflowRequest) -> pb::ResetWorkflowResponse => reset_workflow;
    retry_activity(pb::RetryActivityRequest) -> pb::RetryActivityResponse => retry_activity;
});

service!(WorkerService, WorkerApi {
    poll_workflow_task(pb::PollWorkflowTaskRequest) -> pb::PollWorkflowTaskResponse => poll_workflow_task;
    respond_workflow_task_completed(pb::RespondWorkflowTaskCompletedRequest) -> pb::RespondWorkflowTaskCompletedResponse => complete_workflow_task;
    respond_workflow_task_failed(pb::RespondWorkflowTaskFailedRequest) -> pb::RespondWorkflowTaskFailedResponse => fail_workflow_task;
    poll_activity_task(pb::PollActivityTaskRequest) -> pb::PollActivityTaskResponse => poll_activity_task;
    respond_activity_task_completed(pb::RespondActivityTaskCompletedRequest) -> pb::RespondActivityTaskCompletedResponse => complete_activity_task;
    respond_activity_task_failed(pb::RespondActivityTaskFailedRequest) -> pb::RespondActivityTaskFailedResponse => fail_activity_task;
    record_activity_heartbeat(pb::RecordActivityHeartbeatRequest) -> pb::RecordActivityHeartbeatResponse => record_activity_heartbeat;
});
