// What the dispatcher needs to know of the fleet, without gRPC: the members
// (FleetMember), the routable candidates for a prompt, and where a prompt's
// blocks are cached. FleetState implements it; tests and the fleet simulator
// drive that same FleetState with plain events and a ManualClock.
#ifndef TERN_ROUTER_CORE_FLEET_VIEW_H_
#define TERN_ROUTER_CORE_FLEET_VIEW_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "router/core/policy.h"
#include "router/core/prefix_index.h"

namespace tern::router {

// One member of the fleet: its address, dense id and the router's count of
// calls in flight on it. Owned by the fleet state and never freed before it,
// so pointers to it stay valid; the address and id are constant.
class FleetMember {
 public:
  FleetMember(WorkerId id, std::string address) : id_(id), address_(std::move(address)) {}

  WorkerId id() const { return id_; }
  const std::string& address() const { return address_; }
  int inflight() const { return inflight_.load(); }
  void AddInflight(int delta) { inflight_.fetch_add(delta); }

 private:
  const WorkerId id_;
  const std::string address_;
  std::atomic<int> inflight_{0};
};

// A call in flight on a worker that the fleet can end when the worker is lost.
class WorkerCall {
 public:
  virtual ~WorkerCall() = default;
  // The worker stopped being healthy: end the call soon (non-blocking; may
  // run on any thread, at most once per loss).
  virtual void AbortWorkerLost() = 0;
};

// A prompt's block hashes, computed once per block size.
class PromptBlocks {
 public:
  explicit PromptBlocks(absl::Span<const int32_t> prompt) : prompt_(prompt) {}
  const std::vector<uint64_t>& For(int32_t block_size);
  size_t num_tokens() const { return prompt_.size(); }

 private:
  absl::Span<const int32_t> prompt_;
  std::vector<std::pair<int32_t, std::vector<uint64_t>>> by_size_;
};

// A routable worker as the dispatcher sees it now.
struct Candidate {
  FleetMember* worker = nullptr;
  int32_t max_num_seqs = 0;
  int32_t block_size = 16;
  WorkerLoadView view;  // matched_blocks filled for the prompt asked about
};

// Thread contract: implementations are called from any thread, possibly with
// the dispatcher's lock held; they never call back into the dispatcher.
class FleetView {
 public:
  virtual ~FleetView() = default;

  // The routable workers serving `model`, minus `exclude`, with their load
  // and the leading blocks of `prompt` each holds. NOT_FOUND when no current
  // member ever served the model, UNAVAILABLE when none is routable now.
  virtual absl::StatusOr<std::vector<Candidate>> Candidates(const std::string& model,
                                                            PromptBlocks& prompt,
                                                            absl::Span<FleetMember* const> exclude,
                                                            absl::Time now) = 0;
  // `worker` as a candidate (its load, no prompt matched) and the model it
  // serves, when it is routable now; nullopt otherwise.
  virtual std::optional<Candidate> CandidateFor(const FleetMember& worker, absl::Time now,
                                                std::string* model) = 0;
  // Leading blocks of `prompt` that `worker` holds by the index.
  virtual int32_t MatchedBlocks(const FleetMember& worker, PromptBlocks& prompt,
                                absl::Time now) = 0;
  // A request was routed to `worker`: records its prompt blocks in the index
  // and takes the circuit's half-open probe if that is the state.
  virtual void OnRouted(const FleetMember& worker, PromptBlocks& prompt, absl::Time now) = 0;
};

}  // namespace tern::router

#endif  // TERN_ROUTER_CORE_FLEET_VIEW_H_
