// tern.v1.Router: receives token-level requests from gateways, admits them
// through the dispatcher (prefix-aware routing, global queue) and relays the
// worker's stream, resuming it elsewhere when its worker fails (see
// generate_relay.h). Deadlines and cancellation propagate both ways.
// Reactions run on gRPC's callback threads and never block.
#ifndef TERN_ROUTER_ROUTER_SERVICE_H_
#define TERN_ROUTER_ROUTER_SERVICE_H_

#include <atomic>

#include "router/core/dispatcher.h"
#include "router/fleet.h"
#include "router/generate_relay.h"
#include "tern/v1/router.grpc.pb.h"

namespace tern::router {

class RouterService final : public tern::v1::Router::CallbackService {
 public:
  // `fleet` and `dispatcher` must outlive the service.
  RouterService(Fleet* fleet, Dispatcher* dispatcher, RelayOptions relay_options = {})
      : fleet_(fleet), dispatcher_(dispatcher), relay_options_(relay_options) {}

  // Generate calls received since start.
  uint64_t requests_received() const { return requests_received_.load(); }
  const Dispatcher& dispatcher() const { return *dispatcher_; }
  const RelayCounters& relay_counters() const { return relay_counters_; }

  grpc::ServerWriteReactor<tern::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context,
      const tern::v1::RouterGenerateRequest* request) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const tern::v1::ListModelsRequest* request,
                                       tern::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* ClusterState(grpc::CallbackServerContext* context,
                                         const tern::v1::ClusterStateRequest* request,
                                         tern::v1::ClusterStateResponse* response) override;
  grpc::ServerUnaryReactor* RegisterWorker(grpc::CallbackServerContext* context,
                                           const tern::v1::RegisterWorkerRequest* request,
                                           tern::v1::RegisterWorkerResponse* response) override;

 private:
  Fleet* const fleet_;
  Dispatcher* const dispatcher_;
  const RelayOptions relay_options_;
  std::atomic<uint64_t> requests_received_{0};
  RelayCounters relay_counters_;
};

}  // namespace tern::router

#endif  // TERN_ROUTER_ROUTER_SERVICE_H_
