// Late binding of requests to workers (DESIGN.md section 3): a request is
// bound to a worker only when that worker can start it.
//
// Admit binds a request at once when some routable worker of its model has
// room (the router's calls in flight on it below its max_num_seqs plus
// `slack`), choosing among those with room by the routing policy, and records
// the prompt's blocks for that worker in the prefix index so requests sharing
// a new prefix follow each other. Otherwise the request waits in its model's
// AdmissionQueue; whenever a worker may have room (a call on it ended, its
// load report or health changed, the fleet's periodic tick) Pump hands each
// worker with room the queued request that costs it least (the policy's cost
// on that worker, within the queue's fairness bounds). Session affinity and
// per-model policies (DispatcherOptions) apply when a request is bound at
// admission; a request that had to queue goes to the first worker with room,
// since waiting on for its session's worker would trade latency for affinity.
// Queued requests go by priority, aged by the queue's max_priority_wait
// (admission_queue.h): past it a request is served before any later arrival,
// whatever their priorities.
//
// Fail fast: a request that would have to queue is turned away at once when
// its predicted wait exceeds the queue's max_wait, rather than after waiting
// it out. The prediction is the requests ahead of it (of its priority or
// higher) plus one, times the time between freed slots when every slot is
// busy: the mean time a call holds its slot (over the model's last 32 calls,
// as Release reports them) divided by the slots of the model's routable
// workers (max_num_seqs + slack each). Call times are measured whether or not
// anything queues, so the estimate stays current while requests are turned
// away. Until 4 calls are seen nothing is predicted; requests resumed after
// a failure are never turned away this way. With a short max_wait and slack
// 0, requests admitted under overload start almost at once and the rest hear
// 429 at once: a TTFT bound instead of a queue (README "Load shedding").
//
// Overload pacing (options.overload_ttft_factor > 0). A model is overloaded
// from the moment a request of it is turned away while every worker has its
// full room (max_num_seqs + slack) until the rate of its arrivals (admitted
// or not, decaying over 1 s) falls below the rate its workers complete calls
// at full room (their slots over the mean time its last 32 calls started and
// ended outside overload held a slot), 1 s at least. While it is, each of
// its workers is paced: held to a concurrency at which its time to first
// token stays within the factor of its TTFT alone, so the requests admitted
// start about as fast as on an idle cluster and more of the excess is turned
// away at once. TTFTs come from ObserveFirstToken; the reference is the mean
// of the worker's last 32 from calls started with nothing else in flight on
// it while its model was not overloaded (at least 4: until then the worker
// is not paced). A worker's limit is set from its last 8 TTFTs when the
// overload starts, then again after every 8 TTFTs of calls started since it
// last moved: down in proportion to how far their mean overshoots the bound
// (by one at least, never below one), up by one after 3 such windows in a
// row within it. Outside overload nothing is paced: a load the cluster
// carries at full room is never turned away for latency, and each overload
// starts again from full room. The overload's end is checked at every
// arrival and on every Pump; arrivals include clients' retries, so clients
// that retry at once instead of after Retry-After keep it going.
//
// Errors: NOT_FOUND (no worker serves the model), UNAVAILABLE (none is
// routable; also for queued requests once none is), RESOURCE_EXHAUSTED (the
// queue is full, the predicted wait is past the limit, or a request waited
// longer than its limit).
//
// Thread contract: every method may be called from any thread; none blocks
// beyond a short critical section. Waiters are called without the
// dispatcher's lock held, exactly once per queued request unless Cancel
// took it out first.
#ifndef TERN_ROUTER_CORE_DISPATCHER_H_
#define TERN_ROUTER_CORE_DISPATCHER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "router/core/admission_queue.h"
#include "router/core/clock.h"
#include "router/core/fleet_view.h"
#include "router/core/policy.h"

namespace tern::router {

// Hears how a queued request ends.
class DispatchWaiter {
 public:
  virtual ~DispatchWaiter() = default;
  // The request is bound to `worker` (its in-flight count already includes
  // it; call Release when the call ends). `predicted_cached_tokens` is the
  // prompt prefix the index expects the worker to hold.
  virtual void OnDispatched(FleetMember* worker, int32_t predicted_cached_tokens) = 0;
  virtual void OnRejected(const absl::Status& status) = 0;
};

// Hears the timings of dispatch, for metrics (router/router_metrics.h).
// Called from the dispatcher's callers' threads, some with the
// dispatcher's lock held: implementations must be quick, must not block and
// must not call back into the dispatcher.
class DispatchObserver {
 public:
  virtual ~DispatchObserver() = default;
  // A request was bound to a worker after waiting `queue_time` (zero when
  // it was bound at admission).
  virtual void OnBound(absl::Duration queue_time) = 0;
  // Admit took `decision_time` of real time to bind or queue a request
  // (prompt hashing, index lookups, scoring). Measured on a steady clock,
  // not the injected one: it is the router's own cost.
  virtual void OnAdmitted(absl::Duration decision_time) = 0;
};

struct DispatcherOptions {
  // The policy of models without an entry in `model_policies`.
  PolicyOptions policy;
  // Per-model policy kinds (router.model_policies); the other options are `policy`'s.
  absl::flat_hash_map<std::string, PolicyKind> model_policies;
  // Requests with a session key stick to the session's worker (policy.h).
  bool session_affinity = true;
  // Requests a worker may have in flight beyond its max_num_seqs.
  int32_t slack = 2;
  AdmissionQueueOptions queue;
  // Overload pacing (see the header comment): a worker's TTFT under overload
  // is held within this factor of its TTFT alone; 0: off.
  double overload_ttft_factor = 0;
  // May be null; must outlive the dispatcher.
  DispatchObserver* observer = nullptr;
};

struct DispatchRequest {
  uint64_t ticket = 0;  // unique among live requests
  std::string model;
  absl::Span<const int32_t> prompt;  // must stay valid while the request waits
  int32_t priority = 0;
  std::vector<FleetMember*> exclude;  // workers not to use (they failed it)
  // Already streaming to its client (a resume): the queue's length limit does not apply.
  bool resumed = false;
  // This request's policy instead of the configured one (router.proto routing_policy).
  std::optional<PolicyKind> policy;
  // Client session hint (router.proto session_key); empty: none.
  std::string session_key;
  DispatchWaiter* waiter = nullptr;
};

// Admit's answer: the worker when bound now, nullptr when queued.
struct Admission {
  FleetMember* worker = nullptr;
  int32_t predicted_cached_tokens = 0;
};

struct DispatcherStats {
  uint64_t dispatched = 0;
  uint64_t queued = 0;  // requests that had to wait
  uint64_t rejected_full = 0;
  uint64_t rejected_predicted = 0;  // turned away at once: predicted wait past max_wait
  uint64_t expired = 0;
  uint64_t no_worker = 0;   // turned away because no worker could serve the model
  uint64_t cache_hits = 0;  // dispatches to a worker holding part of the prompt
  uint64_t sticky = 0;      // dispatches decided by session affinity
  uint64_t promoted = 0;    // queued requests promoted by max_priority_wait
  uint64_t overloads = 0;   // times a model became overloaded (overload pacing)
  uint64_t paced_down = 0;  // a worker's pace lowered for its TTFT
};

class Dispatcher {
 public:
  // `fleet` and `clock` must outlive the dispatcher.
  Dispatcher(FleetView* fleet, DispatcherOptions options, Clock* clock = Clock::Real());

  absl::StatusOr<Admission> Admit(DispatchRequest request);
  // Takes a waiting request out; false when it is not waiting (already
  // dispatched or rejected: its waiter is being or was called).
  bool Cancel(uint64_t ticket);
  // A call bound to `worker` ended, or its sequence finished there: frees its
  // slot, which takes the queued request that suits it best. `held_for` is
  // how long the call held the slot, for the wait prediction (zero: a call
  // that never ran, not a sample).
  void Release(FleetMember* worker, absl::Duration held_for = absl::ZeroDuration());
  // The first token of a call bound to `worker` arrived `ttft` after the call
  // started; `alone`: nothing else was in flight on the worker when it
  // started. Feeds overload pacing; resumed calls are not reported.
  void ObserveFirstToken(FleetMember* worker, absl::Duration ttft, bool alone);
  // Expires and dispatches queued requests where workers have room.
  void Pump();

  size_t queued() const;
  // Waiting requests by the priority they were admitted with (promotion
  // changes their place in the queue, not their priority).
  std::vector<std::pair<int32_t, int64_t>> QueuedByPriority() const;
  DispatcherStats stats() const;
  // Workers that overload pacing holds below their full room: address and limit.
  std::vector<std::pair<std::string, int32_t>> Paced() const;
  const DispatcherOptions& options() const { return options_; }
  // The policy kind for `model` by configuration (no per-request override).
  PolicyKind PolicyFor(const std::string& model) const;

 private:
  struct Waiting {
    DispatchRequest request;
    PromptBlocks blocks;
    absl::Time queued_at;  // when it entered the queue
  };
  // The last N durations added and their mean.
  template <size_t N>
  class DurationRing {
   public:
    void Add(absl::Duration d) {
      if (count_ == N) {
        sum_ -= ring_[next_];
      } else {
        ++count_;
      }
      ring_[next_] = d;
      sum_ += d;
      next_ = (next_ + 1) % N;
    }
    size_t count() const { return count_; }
    absl::Duration Mean() const {  // zero when empty
      return count_ == 0 ? absl::ZeroDuration() : sum_ / static_cast<int64_t>(count_);
    }

   private:
    std::array<absl::Duration, N> ring_{};
    size_t count_ = 0;
    size_t next_ = 0;
    absl::Duration sum_;
  };
  struct ModelQueue {
    ModelQueue(std::string model, const AdmissionQueueOptions& options)
        : model(std::move(model)), queue(options) {}
    const std::string model;
    AdmissionQueue queue;
    DurationRing<32> held;  // the last calls' slot-holding times (see the header comment)
    // Overload pacing: the calls started and ended outside overload, the
    // state, and the arrival rate per second (decaying), as of `arrival_at`.
    DurationRing<32> held_full;
    bool overloaded = false;
    absl::Time overload_started_at;
    absl::Time overload_ended_at = absl::InfinitePast();
    double arrival_rate = 0;
    absl::Time arrival_at;
  };
  // A worker's overload pacing.
  struct Pace {
    DurationRing<32> alone;  // TTFTs of calls started with nothing else in flight
    int32_t limit = 0;       // calls in flight while its model is overloaded; 0: full room
    std::string model;       // the model it serves, as last seen
    absl::Time moved_at = absl::InfinitePast();  // TTFTs of calls started before are left out
    DurationRing<8> recent;                      // the last TTFTs not left out
    int32_t fresh = 0;                           // TTFTs since the last adjustment
    int32_t good_windows = 0;                    // in a row within the bound
  };
  struct Outcome {
    DispatchWaiter* waiter;
    FleetMember* worker;  // nullptr: rejected with `status`
    int32_t predicted = 0;
    absl::Status status;
  };

  // Admit, less telling the observer how long it took.
  absl::StatusOr<Admission> AdmitUntimed(DispatchRequest request);
  // Binds to the best of `candidates` with room, if any.
  std::optional<Admission> ChooseLocked(absl::Span<const Candidate> candidates,
                                        const ModelQueue& queue, PromptBlocks& blocks,
                                        const DispatchRequest& request, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PumpModelLocked(const std::string& model, ModelQueue& queue, absl::Time now,
                       std::vector<Outcome>* outcomes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands `candidate` (a worker with room) the queued request that suits
  // it best; false when none was given (nothing in its window it may take).
  bool DispatchOneLocked(const std::string& model, ModelQueue& queue, const Candidate& candidate,
                         absl::Time now, std::vector<Outcome>* outcomes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Calls the waiters; without the lock.
  static void Deliver(const std::vector<Outcome>& outcomes);
  // Calls `c` may have in flight: max_num_seqs + slack, or its pace while
  // the model of `queue` is overloaded.
  int32_t RoomLocked(const Candidate& c, const ModelQueue& queue) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  bool HasRoomLocked(const Candidate& c, const ModelQueue& queue) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Counts an arrival and ends the overload when the arrivals fell below the
  // workers' capacity at full room.
  void OnArrivalLocked(ModelQueue& queue, absl::Span<const Candidate> candidates, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A request of the model of `queue` was turned away: the overload starts
  // when nothing was paced.
  void OnTurnedAwayLocked(ModelQueue& queue, absl::Span<const Candidate> candidates, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the overload of `queue`'s model when its arrivals fell below its
  // workers' capacity at full room.
  void MaybeEndOverloadLocked(ModelQueue& queue, absl::Span<const Candidate> candidates,
                              absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts or ends the overload of `queue`'s model; its workers' paces start
  // afresh (at its start, set from their last TTFTs).
  void SetOverloadedLocked(ModelQueue& queue, bool overloaded,
                           absl::Span<const Candidate> candidates, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves `pace` by the mean of its last TTFTs; `full`: the worker's full room.
  void AdjustPaceLocked(Pace& pace, int32_t full, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The predicted wait of a request of `priority` queued now, with `slots`
  // call slots on the model's routable workers; nullopt until the queue has
  // seen enough calls.
  std::optional<absl::Duration> PredictedWaitLocked(const ModelQueue& queue, int32_t priority,
                                                    int64_t slots) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The queue of `model`, made on first use.
  ModelQueue& QueueLocked(const std::string& model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  FleetView* const fleet_;
  const DispatcherOptions options_;
  Clock* const clock_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<ModelQueue>> queues_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::unique_ptr<Waiting>> waiting_ ABSL_GUARDED_BY(mu_);
  // Members are never deleted (fleet_state.h), so their pointers are stable keys.
  absl::flat_hash_map<const FleetMember*, Pace> paces_ ABSL_GUARDED_BY(mu_);
  uint64_t round_robin_ ABSL_GUARDED_BY(mu_) = 0;
  DispatcherStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tern::router

#endif  // TERN_ROUTER_CORE_DISPATCHER_H_
