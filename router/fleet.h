// The fleet of workers as the router sees it: their connections, health,
// latest load and cached prefixes.
//
// Per worker:
//  - grpc.health.v1 and Info, checked every `health_interval` by the fleet's
//    loop thread;
//  - a Worker.WatchState stream (a gRPC callback reactor) whose messages
//    update the worker's load and feed its KV events to the prefix index. A
//    new stream starts the worker's index afresh (its first message is a
//    snapshot); a sequence gap (kResync) cancels the stream and subscribes
//    again at once;
//  - an engine-progress check: a worker that has work (running or waiting
//    sequences, or router calls in flight) and whose step counter has not
//    moved for `stall_timeout` is stalled;
//  - a circuit breaker over the results of Generate calls.
// A worker is healthy when its health check passes, its WatchState stream is
// open (or the worker does not implement it) and it is not stalled. When a
// worker stops being healthy, the calls registered on it (RegisterCall) are
// aborted so their requests resume elsewhere, and its prefix entries are
// dropped. A worker is routable when healthy and its circuit lets calls through.
//
// Memory: per worker a few hundred bytes plus its prefix-index entries
// (about 24 bytes per cached block, bounded by its KV pool; see
// prefix_index.h) and one weak pointer per call in flight on it.
//
// Thread contract: every public method may be called from any thread. The
// listener and WorkerCall::AbortWorkerLost are invoked without the fleet's
// lock held. Lock order: a caller's own lock may be held while calling into
// the fleet (the dispatcher does), never the reverse.
#ifndef TERN_ROUTER_FLEET_H_
#define TERN_ROUTER_FLEET_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "router/circuit_breaker.h"
#include "router/policy.h"
#include "router/prefix_index.h"
#include "tern/v1/router.pb.h"
#include "tern/v1/worker.grpc.pb.h"

namespace tern::router {

// A call in flight on a worker that the fleet can end when the worker is lost.
class WorkerCall {
 public:
  virtual ~WorkerCall() = default;
  // The worker stopped being healthy: end the call soon (non-blocking; may
  // run on any thread, at most once per loss).
  virtual void AbortWorkerLost() = 0;
};

// One worker endpoint: its address, dense id and stubs (constant after
// construction) and the router's count of calls in flight on it. Owned by
// the fleet and never freed before it, so pointers to it stay valid.
class WorkerEndpoint {
 public:
  WorkerEndpoint(WorkerId id, std::string address);

  WorkerId id() const { return id_; }
  const std::string& address() const { return address_; }
  tern::v1::Worker::Stub* stub() const { return stub_.get(); }
  grpc::health::v1::Health::Stub* health_stub() const { return health_stub_.get(); }
  int inflight() const { return inflight_.load(); }
  void AddInflight(int delta) { inflight_.fetch_add(delta); }

 private:
  const WorkerId id_;
  const std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<tern::v1::Worker::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_stub_;
  std::atomic<int> inflight_{0};
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
  WorkerEndpoint* worker = nullptr;
  int32_t max_num_seqs = 0;
  int32_t block_size = 16;
  WorkerLoadView view;  // matched_blocks filled for the prompt asked about
};

// The set difference a membership change makes: addresses in `desired` not
// in `current` are added, those in `current` not in `desired` removed, each
// in the order of its input, duplicates once.
struct MembershipDiff {
  std::vector<std::string> added;
  std::vector<std::string> removed;
};
MembershipDiff DiffMembership(absl::Span<const std::string> current,
                              absl::Span<const std::string> desired);

// "HOST:PORT" for each address `name` resolves to (AF_INET and AF_INET6,
// IPv6 in brackets), deduplicated, in resolver order. `name_and_port` is
// "NAME:PORT". Blocks on the system resolver. UNAVAILABLE when the name does
// not resolve, INVALID_ARGUMENT when it is malformed.
absl::StatusOr<std::vector<std::string>> ResolveWorkerAddresses(absl::string_view name_and_port);

struct FleetOptions {
  // "HOST:PORT" or "dns:NAME:PORT" (see Membership above).
  std::vector<std::string> worker_addresses;
  // How often "dns:" entries are resolved again.
  absl::Duration dns_refresh = absl::Seconds(5);
  // How long a self-registered worker stays a member without re-registering.
  absl::Duration registration_lease = absl::Seconds(10);
  std::chrono::milliseconds health_interval{1000};
  std::chrono::milliseconds health_timeout{1000};
  // A worker with work whose engine step counter stalls this long is unhealthy.
  absl::Duration stall_timeout = absl::Seconds(3);
  // Period of the loop's quick duties (progress checks, the tick listener).
  absl::Duration tick_interval = absl::Milliseconds(100);
  CircuitBreakerOptions breaker;
  PrefixIndexOptions index;
};

class Fleet {
 public:
  explicit Fleet(FleetOptions options);
  // Stops the loop, ends the WatchState streams and waits for them (Stop).
  ~Fleet();

  // Starts the loop; the first health round (and the WatchState streams of
  // healthy workers) starts before Start returns.
  void Start();

  // Called without the fleet's lock after a change that may give queued
  // requests room (a load report, a worker becoming healthy) and on every
  // tick of the loop. Set before Start.
  void SetListener(std::function<void()> listener) { listener_ = std::move(listener); }
  // Stops the loop and the WatchState streams, and waits for them; the
  // listener is not called after Stop returns. Idempotent; one thread only.
  void Stop();

  // The routable workers serving `model`, minus `exclude`, with their load
  // and the leading blocks of `prompt` each holds. NOT_FOUND when no
  // current member ever served the model, UNAVAILABLE when none is
  // routable now.
  absl::StatusOr<std::vector<Candidate>> Candidates(const std::string& model, PromptBlocks& prompt,
                                                    absl::Span<WorkerEndpoint* const> exclude,
                                                    absl::Time now);
  // Leading blocks of `prompt` that `worker` holds by the index.
  int32_t MatchedBlocks(const WorkerEndpoint& worker, PromptBlocks& prompt, absl::Time now);

  // A request was routed to `worker`: records its prompt blocks in the index
  // and takes the circuit's half-open probe if that is the state.
  void OnRouted(const WorkerEndpoint& worker, PromptBlocks& prompt, absl::Time now);
  // Outcome of a Generate call, for the circuit breaker. `worker_fault` false
  // means the outcome says nothing about the worker (client cancel, bad request).
  void OnCallResult(const WorkerEndpoint& worker, bool ok, bool worker_fault);
  // Prompt tokens the router expected `worker` to find cached vs what it reported.
  void OnPrefixReport(const WorkerEndpoint& worker, int64_t prompt_tokens, int64_t predicted_cached,
                      int64_t reported_cached);

  // Calls in flight on a worker, aborted when it is lost. The fleet keeps
  // only weak references.
  uint64_t RegisterCall(const WorkerEndpoint& worker, std::weak_ptr<WorkerCall> call);
  void UnregisterCall(const WorkerEndpoint& worker, uint64_t registration);

  // A worker asks to be a member (Router.RegisterWorker) or renews its
  // lease; it joins at the loop's next tick. Returns the lease.
  // INVALID_ARGUMENT when `address` is not HOST:PORT.
  absl::StatusOr<absl::Duration> Register(const std::string& address, absl::Time now);
  // Brings the membership up to date at `now` (the loop runs it every tick;
  // DNS names are resolved only every dns_refresh, or when `resolve_dns`).
  // New workers are health-checked before it returns.
  void RefreshMembership(absl::Time now, bool resolve_dns);

  bool healthy(const WorkerEndpoint& worker) const;
  // The current members, in id order.
  std::vector<WorkerEndpoint*> workers() const;

  // Models served by healthy workers.
  tern::v1::ListModelsResponse ListModels() const;
  tern::v1::ClusterStateResponse ClusterState() const;
  PrefixIndexStats index_stats() const;

  // Runs one health round now (tests and the first round).
  void CheckAll();
  // Waits until every worker whose health check passed is healthy (its state
  // stream delivered its snapshot) or stalled; false on timeout.
  bool WaitForStreams(absl::Duration timeout);
  // Runs the engine-progress check at `now` (the loop runs it every tick).
  void CheckProgress(absl::Time now);

 private:
  class WatchStream;
  struct State;

  void CheckOne(WorkerEndpoint& worker);
  void Loop();
  // RefreshMembership's work; returns the workers it added, unchecked.
  std::vector<WorkerEndpoint*> UpdateMembership(absl::Time now, bool resolve_dns);
  // Adds or revives the worker at `address`.
  WorkerEndpoint* AddWorkerLocked(const std::string& address) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the worker removed; returns its stream to cancel after unlocking.
  std::shared_ptr<WatchStream> RemoveWorkerLocked(WorkerId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts a WatchState stream on the worker when it has none and is up.
  void MaybeWatch(WorkerEndpoint& worker);
  void OnWatchMessage(WatchStream* stream, const tern::v1::WorkerState& message);
  void OnWatchDone(WatchStream* stream, const grpc::Status& status);
  // Recomputes health; when the worker just became unhealthy, returns the
  // calls to abort (the caller aborts them after unlocking).
  std::vector<std::shared_ptr<WorkerCall>> UpdateHealthLocked(WorkerId id, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HealthyLocked(const State& state) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Notify() const;

  const FleetOptions options_;
  std::vector<std::string> static_addresses_;           // constant after construction
  std::vector<std::string> dns_names_;                  // "NAME:PORT", constant after construction
  std::function<void()> listener_;                      // set before Start
  absl::Time next_dns_refresh_ = absl::InfinitePast();  // loop thread only

  absl::Notification stopping_;
  mutable absl::Mutex mu_;
  // By WorkerId; they only grow (see Membership).
  std::vector<std::unique_ptr<WorkerEndpoint>> workers_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<State>> states_ ABSL_GUARDED_BY(mu_);
  // The last successful resolution of each DNS name.
  absl::flat_hash_map<std::string, std::vector<std::string>> resolved_ ABSL_GUARDED_BY(mu_);
  // Self-registered addresses and the end of their leases.
  absl::flat_hash_map<std::string, absl::Time> leases_ ABSL_GUARDED_BY(mu_);
  PrefixIndex index_ ABSL_GUARDED_BY(mu_);
  // First time each model was seen (ModelCard.created).
  std::vector<std::pair<std::string, int64_t>> model_created_ ABSL_GUARDED_BY(mu_);
  int live_streams_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_registration_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread loop_thread_;
};

}  // namespace tern::router

#endif  // TERN_ROUTER_FLEET_H_
