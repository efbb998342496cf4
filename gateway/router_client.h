// The gateway's gRPC client of tern.v1.Router (callback API).
//
// Generate streams run on gRPC's own threads: the callbacks given to
// Generate are invoked there and must only hand the event off (post it to
// the connection's io context) and return. ListModels blocks and is for
// threads that may block (the model registry's refresher), never io threads.
//
// Thread-safe. The client must outlive the GenerateCall handles it returns
// only in the sense that its destructor cancels every call still in flight and
// waits for their final callbacks.
#ifndef TERN_GATEWAY_ROUTER_CLIENT_H_
#define TERN_GATEWAY_ROUTER_CLIENT_H_

#include <grpcpp/channel.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/grpc_tls.h"
#include "tern/v1/router.grpc.pb.h"

namespace tern::gateway {

// A Generate stream in flight.
class GenerateCall {
 public:
  virtual ~GenerateCall() = default;
  // Cancels the RPC so the router stops the worker's sequence. Any thread;
  // idempotent; harmless once the call has ended.
  virtual void Cancel() = 0;
};

struct GenerateCallbacks {
  // Each response, in order, on a gRPC thread.
  std::function<void(tern::v1::GenerateResponse)> on_response;
  // Exactly once, after the last on_response, on a gRPC thread. CANCELLED
  // after Cancel(); otherwise the router's status.
  std::function<void(absl::Status)> on_done;
};

class RouterClient {
 public:
  explicit RouterClient(std::shared_ptr<grpc::Channel> channel);
  // A channel to `target` ("host:port"): plaintext, or mutual TLS as
  // `security` says (common/grpc_tls.h).
  static std::unique_ptr<RouterClient> Connect(
      const std::string& target, const tern::ChannelSecurity& security = tern::ChannelSecurity());
  // Cancels in-flight calls and waits until they have finished.
  ~RouterClient();

  RouterClient(const RouterClient&) = delete;
  RouterClient& operator=(const RouterClient&) = delete;

  // Starts a Generate stream with a deadline of now + timeout.
  std::shared_ptr<GenerateCall> Generate(tern::v1::RouterGenerateRequest request,
                                         absl::Duration timeout, GenerateCallbacks callbacks);

  // Blocking unary ListModels.
  absl::StatusOr<tern::v1::ListModelsResponse> ListModels(absl::Duration timeout);

  // Cancels every Generate call in flight (shutdown).
  void CancelAll();
  // Blocks until no Generate call is in flight or `timeout` passed; true when idle.
  bool WaitUntilIdle(absl::Duration timeout);

 private:
  class Reactor;
  void Register(Reactor* reactor);
  void Unregister(Reactor* reactor);

  std::unique_ptr<tern::v1::Router::Stub> stub_;
  absl::Mutex mu_;
  absl::flat_hash_set<Reactor*> active_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_ROUTER_CLIENT_H_
