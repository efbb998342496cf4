// One Router.Generate call relayed to a worker: a server write reactor that
// owns client read reactors (attempts), one at a time. Reads and writes go in
// lockstep (read one response, write it, then read the next), so a slow
// client slows the worker's stream instead of filling memory.
// Lifetime: created by RouterService::Generate, deletes itself in OnDone.
#ifndef TERN_ROUTER_GENERATE_RELAY_H_
#define TERN_ROUTER_GENERATE_RELAY_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "router/fleet.h"
#include "tern/v1/router.pb.h"
#include "tern/v1/worker.grpc.pb.h"

namespace tern::router {

class GenerateRelay : public grpc::ServerWriteReactor<tern::v1::GenerateResponse> {
 public:
  GenerateRelay(Fleet* fleet, int max_attempts, grpc::CallbackServerContext* context,
                const tern::v1::RouterGenerateRequest* request);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  class Attempt;

  // Starts an attempt on the next healthy worker not tried yet, or finishes
  // with the fleet's error (or last_error, when an attempt failed).
  void StartAttempt(const grpc::Status& last_error);
  void OnWorkerResponse(const tern::v1::GenerateResponse& response);
  void OnAttemptDone(Attempt* attempt, const grpc::Status& status);

  Fleet* const fleet_;
  const int max_attempts_;
  grpc::CallbackServerContext* const context_;
  const tern::v1::RouterGenerateRequest* const request_;

  absl::Mutex mu_;
  std::shared_ptr<Attempt> attempt_ ABSL_GUARDED_BY(mu_);
  std::vector<WorkerEndpoint*> tried_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  int tokens_relayed_ ABSL_GUARDED_BY(mu_) = 0;
  tern::v1::GenerateResponse pending_write_;
};

}  // namespace tern::router

#endif  // TERN_ROUTER_GENERATE_RELAY_H_
