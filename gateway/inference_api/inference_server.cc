#include "gateway/inference_api/inference_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace tern::gateway {

absl::StatusOr<std::unique_ptr<InferenceServer>> InferenceServer::Start(
    InferenceServerOptions options, ModelRegistry* registry, RouterClient* router,
    GatewayMetrics* metrics) {
  auto service =
      std::make_unique<InferenceService>(std::move(options.service), registry, router, metrics);
  std::unique_ptr<InferenceServer> server(new InferenceServer(std::move(service), registry));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(
      options.listen,
      options.credentials != nullptr ? options.credentials : grpc::InsecureServerCredentials(),
      &server->port_);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve gRPC on ", options.listen));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(false);
  server->readiness_ = std::thread([raw = server.get()] { raw->MirrorReadiness(); });
  return server;
}

InferenceServer::InferenceServer(std::unique_ptr<InferenceService> service, ModelRegistry* registry)
    : service_(std::move(service)), registry_(registry) {}

InferenceServer::~InferenceServer() { Shutdown(absl::ZeroDuration()); }

void InferenceServer::MirrorReadiness() {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  bool serving = false;
  bool first = true;
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    const bool ready = registry_->Ready();
    if (first || ready != serving) {
      first = false;
      serving = ready;
      health->SetServingStatus(ready);
      health->SetServingStatus(tern::v1::Inference::service_full_name(), ready);
    }
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(250));
  }
}

void InferenceServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (readiness_.joinable()) readiness_.join();
  if (server_ == nullptr) return;
  server_->GetHealthCheckService()->SetServingStatus(false);
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
}

}  // namespace tern::gateway
