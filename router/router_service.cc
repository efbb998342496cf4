#include "router/router_service.h"

namespace tern::router {

grpc::ServerWriteReactor<tern::v1::GenerateResponse>* RouterService::Generate(
    grpc::CallbackServerContext* context, const tern::v1::RouterGenerateRequest* request) {
  requests_received_.fetch_add(1);
  return new GenerateRelay(fleet_, dispatcher_, relay_options_, &relay_counters_, context, request);
}

grpc::ServerUnaryReactor* RouterService::ListModels(grpc::CallbackServerContext* context,
                                                    const tern::v1::ListModelsRequest* /*request*/,
                                                    tern::v1::ListModelsResponse* response) {
  *response = fleet_->ListModels();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::ClusterState(
    grpc::CallbackServerContext* context, const tern::v1::ClusterStateRequest* /*request*/,
    tern::v1::ClusterStateResponse* response) {
  *response = fleet_->ClusterState();
  response->set_queued_requests(static_cast<int32_t>(dispatcher_->queued()));
  response->set_policy(PolicyKindName(dispatcher_->options().policy.kind));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::RegisterWorker(
    grpc::CallbackServerContext* context, const tern::v1::RegisterWorkerRequest* request,
    tern::v1::RegisterWorkerResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<absl::Duration> lease =
      fleet_->Register(request->address(), fleet_->clock()->Now());
  if (!lease.ok()) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(lease.status().message())));
    return reactor;
  }
  response->set_lease_ms(absl::ToInt64Milliseconds(*lease));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace tern::router
