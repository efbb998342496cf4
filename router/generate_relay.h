// One Router.Generate call: admitted by the dispatcher (bound to a worker at
// once, or queued until one has room), then relayed from the worker in
// lockstep (read one response, write it, then read the next), so a slow
// client slows the worker's stream instead of filling memory. The worker's
// slot in the dispatcher is freed at the worker's final message (the sequence
// is over there), or when the call ends, whichever comes first, with how long
// the call held it (the dispatcher's wait prediction).
//
// Failover with resume: the relay keeps the token ids already streamed to the
// client and the sampling seed the worker reported. When the worker's call
// ends, DecideFailover (router/core/failover.h) says whether to finish or to
// admit the request again, excluding the workers that failed it, with
// resume_token_ids = the tokens streamed so far and the same seed, after a
// backoff with jitter; the client's stream goes on without a duplicated or
// missing token.
//
// Lifetime: created by RouterService::Generate, deletes itself in OnDone.
// Thread contract: reactions arrive on gRPC threads and never block.
#ifndef TERN_ROUTER_GENERATE_RELAY_H_
#define TERN_ROUTER_GENERATE_RELAY_H_

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "router/core/dispatcher.h"
#include "router/core/failover.h"
#include "router/fleet.h"
#include "tern/v1/router.pb.h"
#include "tern/v1/worker.grpc.pb.h"

namespace tern::router {

// Failovers of all calls, for metrics (router/router_metrics.h).
struct RelayCounters {
  std::atomic<uint64_t> retries{0};  // re-dispatched before the first token
  std::atomic<uint64_t> resumes{0};  // resumed mid-stream on another worker
};

class GenerateRelay : public grpc::ServerWriteReactor<tern::v1::GenerateResponse>,
                      public DispatchWaiter {
 public:
  // `fleet`, `dispatcher` and `counters` must outlive the call.
  GenerateRelay(Fleet* fleet, Dispatcher* dispatcher, RelayOptions options, RelayCounters* counters,
                grpc::CallbackServerContext* context,
                const tern::v1::RouterGenerateRequest* request);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  void OnDispatched(FleetMember* worker, int32_t predicted_cached_tokens) override;
  void OnRejected(const absl::Status& status) override;

 private:
  class Attempt;
  enum class Phase { kWaiting, kRunning, kBackoff, kDone };

  void Admit();
  void StartAttempt(FleetMember* worker, int32_t predicted_cached_tokens);
  void OnWorkerResponse(Attempt* attempt, const tern::v1::GenerateResponse& response);
  void OnAttemptDone(Attempt* attempt, const grpc::Status& status);
  // Frees the attempt's dispatcher slot, once (at its final message or its end).
  void ReleaseSlot(Attempt* attempt);
  void OnBackoffDone();
  // Finishes the call once; later calls do nothing.
  void FinishOnce(const grpc::Status& status);
  // Ends the call with `status`, naming the earlier worker failure if any.
  void FinishWithError(const absl::Status& status);

  Fleet* const fleet_;
  Dispatcher* const dispatcher_;
  const RelayOptions options_;
  RelayCounters* const counters_;
  grpc::CallbackServerContext* const context_;
  const tern::v1::RouterGenerateRequest* const request_;
  const uint64_t ticket_;

  absl::Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kWaiting;
  std::shared_ptr<Attempt> attempt_ ABSL_GUARDED_BY(mu_);
  std::vector<FleetMember*> failed_ ABSL_GUARDED_BY(mu_);  // workers that failed this request
  grpc::Status last_error_ ABSL_GUARDED_BY(mu_);
  int retries_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // Token ids handed to the client so far, and the seed in effect.
  std::vector<int32_t> streamed_ ABSL_GUARDED_BY(mu_);
  uint64_t seed_ ABSL_GUARDED_BY(mu_) = 0;
  bool has_seed_ ABSL_GUARDED_BY(mu_) = false;
  bool seed_sent_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<grpc::Alarm> backoff_alarm_;  // set only while no attempt runs
  tern::v1::GenerateResponse pending_write_;    // one write in flight at most
};

}  // namespace tern::router

#endif  // TERN_ROUTER_GENERATE_RELAY_H_
