// The gateway's gRPC server: tern.v1.Inference (inference_service.h) beside
// gRPC server reflection (so clients such as grpcurl discover the API without
// our .proto files) and the standard grpc.health.v1.Health service, whose
// status ("" and "tern.v1.Inference") follows the model registry: SERVING
// while a worker serving the model is ready, as GET /health is 200.
//
// Thread contract: Start, port and Shutdown from the owning thread; a
// background thread of its own (joined by Shutdown) mirrors readiness.
#ifndef TERN_GATEWAY_INFERENCE_API_INFERENCE_SERVER_H_
#define TERN_GATEWAY_INFERENCE_API_INFERENCE_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gateway/inference_api/inference_service.h"

namespace tern::gateway {

struct InferenceServerOptions {
  // "host:port"; port 0 picks a free one.
  std::string listen;
  // The listening port's credentials; null: plaintext.
  std::shared_ptr<grpc::ServerCredentials> credentials;
  InferenceServiceOptions service;
};

class InferenceServer {
 public:
  // Binds and starts serving. UNAVAILABLE when the address cannot be bound.
  // The registry, router client, metrics (and options.service.key_limiter)
  // must outlive the server.
  static absl::StatusOr<std::unique_ptr<InferenceServer>> Start(InferenceServerOptions options,
                                                                ModelRegistry* registry,
                                                                RouterClient* router,
                                                                GatewayMetrics* metrics);
  // Shuts down if still serving.
  ~InferenceServer();

  InferenceServer(const InferenceServer&) = delete;
  InferenceServer& operator=(const InferenceServer&) = delete;

  // The bound port.
  int port() const { return port_; }

  // Stops accepting calls, cancels those still running after `grace`, and
  // waits until they are over.
  void Shutdown(absl::Duration grace);

 private:
  InferenceServer(std::unique_ptr<InferenceService> service, ModelRegistry* registry);
  void MirrorReadiness();

  const std::unique_ptr<InferenceService> service_;
  ModelRegistry* const registry_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread readiness_;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_INFERENCE_API_INFERENCE_SERVER_H_
