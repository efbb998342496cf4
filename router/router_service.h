// tern.v1.Router: receives token-level requests from gateways, picks a worker
// (round-robin over healthy ones for now) and relays the worker's stream.
// Deadlines and cancellation propagate both ways; a failure before the first
// token is retried on another worker; a fleet with no healthy worker answers
// UNAVAILABLE at once. Reactions run on gRPC's callback threads and never block.
#ifndef TERN_ROUTER_ROUTER_SERVICE_H_
#define TERN_ROUTER_ROUTER_SERVICE_H_

#include <atomic>

#include "router/fleet.h"
#include "tern/v1/router.grpc.pb.h"

namespace tern::router {

class RouterService final : public tern::v1::Router::CallbackService {
 public:
  // `fleet` must outlive the service. `max_attempts` bounds retries of a
  // request that failed before its first token.
  RouterService(Fleet* fleet, int max_attempts) : fleet_(fleet), max_attempts_(max_attempts) {}

  // Generate calls received since start.
  uint64_t requests_received() const { return requests_received_.load(); }

  grpc::ServerWriteReactor<tern::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context,
      const tern::v1::RouterGenerateRequest* request) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const tern::v1::ListModelsRequest* request,
                                       tern::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* ClusterState(grpc::CallbackServerContext* context,
                                         const tern::v1::ClusterStateRequest* request,
                                         tern::v1::ClusterStateResponse* response) override;

 private:
  Fleet* const fleet_;
  const int max_attempts_;
  std::atomic<uint64_t> requests_received_{0};
};

}  // namespace tern::router

#endif  // TERN_ROUTER_ROUTER_SERVICE_H_
