// The fleet as the router knows it, without any I/O: its members, their
// health, latest load and cached prefixes, circuit breakers and the calls in
// flight on each. The gRPC shell (router/fleet.h) feeds it what it hears
// (health reports, state-stream messages, call results) and carries out the
// FleetEffects it answers; tests and the fleet simulator feed it directly.
// Time is always passed in.
//
// A worker is healthy when its last health report was SERVING with its Info,
// its state stream has delivered its snapshot (or the worker has no
// WatchState), and it is not stalled. Stalled: it has work (running or
// waiting sequences, or router calls in flight) and its engine made no
// progress (step counter, or a step starting) for longer than
//   stall_timeout + stall_step_factor * expected duration of its current step,
// so a worker whose steps legitimately take 10 s is not declared dead, while
// one whose engine hangs is caught within that bound. When a worker stops
// being healthy its calls are handed back to be aborted (they resume
// elsewhere) and its prefix entries are dropped — except when it is draining
// (NOT_SERVING but still streaming its state): it takes nothing new but
// finishes what it has. A worker is routable when healthy and its circuit
// lets calls through.
//
// Membership: members are added and removed by address (Reconcile). A
// removed member keeps its entry and id (pointers stay valid, ids are never
// reused for another address) and is revived if its address comes back.
//
// Memory: per worker a few hundred bytes plus its prefix-index entries (see
// prefix_index.h) and one weak pointer per call in flight on it.
//
// Thread contract: every method may be called from any thread; none blocks
// beyond a short critical section, except WaitForStreams. It never calls
// out while holding its lock; callers may hold their own locks (the
// dispatcher and the gRPC fleet do), never the reverse.
#ifndef TERN_ROUTER_CORE_FLEET_STATE_H_
#define TERN_ROUTER_CORE_FLEET_STATE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "router/core/circuit_breaker.h"
#include "router/core/fleet_view.h"
#include "router/core/kv_event.h"
#include "router/core/prefix_index.h"
#include "router/core/worker_report.h"

namespace tern::router {

struct FleetStateOptions {
  // Progress bound of a worker with work, beyond its current step's expected duration.
  absl::Duration stall_timeout = absl::Seconds(3);
  // How many expected step durations a step may take before it counts as a hang.
  double stall_step_factor = 2.0;
  CircuitBreakerOptions breaker;
  PrefixIndexOptions index;
};

// What a change asks of the caller, to be done after the call returns.
struct FleetEffects {
  // Calls on a worker that was just lost: abort each (AbortWorkerLost).
  std::vector<std::shared_ptr<WorkerCall>> lost;
  // A worker became healthy or reported load: queued requests may fit now.
  bool may_have_room = false;
  // Open a state stream on the worker (StartStream says whether to).
  bool watch = false;
  // Cancel the worker's state stream (an event gap: it is opened again when
  // it ends; or the worker left the fleet).
  bool cancel_stream = false;

  void Merge(FleetEffects other);
};

// One member as operators see it (Router.ClusterState).
struct MemberStatus {
  std::string address;
  bool healthy = false;
  std::string model_id;
  int64_t kv_blocks_total = 0;  // from Info; 0 before it
  bool has_load = false;
  WorkerLoad load;
  int inflight = 0;
  int64_t cached_blocks = 0;
  std::string detail;  // why not healthy
  std::string circuit;
  bool state_stream = false;
  int64_t routed_prompt_tokens = 0;
  int64_t predicted_cached_tokens = 0;
  int64_t reported_cached_tokens = 0;
};

// One model served by healthy workers (Router.ListModels).
struct ModelSummary {
  std::string id;
  int64_t created = 0;  // Unix seconds when a worker first served it
  int32_t ready_workers = 0;
  int32_t max_model_len = 0;  // the smallest among replicas
  std::vector<int32_t> eos_token_ids;
};

class FleetState : public FleetView {
 public:
  explicit FleetState(FleetStateOptions options);
  ~FleetState() override;

  // --- Membership.
  struct Reconciled {
    std::vector<FleetMember*> added;    // new or revived: health-check them now
    std::vector<FleetMember*> removed;  // cancel their state streams
  };
  // Makes the members exactly the addresses in `desired` (duplicates once).
  Reconciled Reconcile(absl::Span<const std::string> desired);
  // The current members, in id order.
  std::vector<FleetMember*> members() const;

  // --- What the shell hears.
  FleetEffects OnHealthReport(FleetMember& worker, const HealthReport& report, absl::Time now);
  // True when the caller should open a state stream on `worker` now (none is
  // open, its health check passes and it implements WatchState); the stream
  // counts as open from here until OnStreamEnded.
  bool StartStream(FleetMember& worker);
  // One WorkerState message of the worker's open stream (the first is a snapshot).
  FleetEffects OnStateMessage(FleetMember& worker, const WorkerLoad& load,
                              absl::Span<const KvEvent> events, absl::Time now);
  // The stream ended; `unimplemented` when the worker has no WatchState.
  FleetEffects OnStreamEnded(FleetMember& worker, bool unimplemented, const std::string& detail,
                             absl::Time now);
  // The engine-progress check (the shell runs it every tick).
  FleetEffects CheckProgress(absl::Time now);

  // --- Dispatch (FleetView).
  absl::StatusOr<std::vector<Candidate>> Candidates(const std::string& model, PromptBlocks& prompt,
                                                    absl::Span<FleetMember* const> exclude,
                                                    absl::Time now) override;
  std::optional<Candidate> CandidateFor(const FleetMember& worker, absl::Time now,
                                        std::string* model) override;
  int32_t MatchedBlocks(const FleetMember& worker, PromptBlocks& prompt, absl::Time now) override;
  void OnRouted(const FleetMember& worker, PromptBlocks& prompt, absl::Time now) override;

  // --- Calls.
  // Outcome of a Generate call, for the circuit breaker. `worker_fault` false
  // means the outcome says nothing about the worker (client cancel, bad request).
  void OnCallResult(const FleetMember& worker, bool ok, bool worker_fault, absl::Time now);
  // Prompt tokens the router expected `worker` to find cached vs what it reported.
  void OnPrefixReport(const FleetMember& worker, int64_t prompt_tokens, int64_t predicted_cached,
                      int64_t reported_cached);
  // Calls in flight on a worker, handed back in FleetEffects::lost when it is
  // lost. Only weak references are kept.
  uint64_t RegisterCall(const FleetMember& worker, std::weak_ptr<WorkerCall> call);
  void UnregisterCall(const FleetMember& worker, uint64_t registration);

  // --- Views.
  bool healthy(const FleetMember& worker) const;
  std::vector<ModelSummary> Models() const;
  std::vector<MemberStatus> Status(absl::Time now) const;
  PrefixIndexStats index_stats() const;
  // Waits (real time) until every member whose health check passed is
  // healthy or stalled, or has no stream coming; false on timeout.
  bool WaitForStreams(absl::Duration timeout) const;

 private:
  struct State;

  FleetMember* AddLocked(const std::string& address) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool RemoveLocked(WorkerId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HealthyLocked(const State& state) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Recomputes health; when the worker just became unhealthy, adds its calls
  // to `effects->lost`.
  void UpdateHealthLocked(WorkerId id, absl::Time now, FleetEffects* effects)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Duration StallBoundLocked(const State& state) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // `member` as a candidate with its load (matched_blocks left 0).
  Candidate CandidateLocked(FleetMember* member, const State& state) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const FleetStateOptions options_;

  mutable absl::Mutex mu_;
  // By WorkerId; they only grow (see Membership above).
  std::vector<std::unique_ptr<FleetMember>> members_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<State>> states_ ABSL_GUARDED_BY(mu_);
  PrefixIndex index_ ABSL_GUARDED_BY(mu_);
  // First time each model was seen (ModelSummary.created).
  std::vector<std::pair<std::string, int64_t>> model_created_ ABSL_GUARDED_BY(mu_);
  uint64_t next_registration_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tern::router

#endif  // TERN_ROUTER_CORE_FLEET_STATE_H_
