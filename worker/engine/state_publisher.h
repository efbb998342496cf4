// What a worker publishes about itself (DESIGN.md section 2, WatchState):
// its load and its KV-cache events, and the StatePublisher that feeds them to
// every subscription at a bounded cadence.
//
// Thread contract: Subscribe and the subscriptions' methods may be called
// from any thread; Publish and CloseAll from one thread only (the engine
// loop).
#ifndef TERN_WORKER_ENGINE_STATE_PUBLISHER_H_
#define TERN_WORKER_ENGINE_STATE_PUBLISHER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/engine/kv_events.h"

namespace tern::worker {

struct EngineLoad {
  int32_t running = 0;
  int32_t waiting = 0;
  uint64_t steps = 0;
  // A step is executing now. Published when a step expected to last at
  // least Engine::kLongStep starts, so a long step is not taken for a hang.
  bool step_running = false;
  // How long the running step is expected to take; between steps, how long
  // a step of the work queued now would take. From the engine's step-time
  // model (worker/engine/step_time_model.h), rounded up; 0 without an
  // estimate.
  int64_t expected_step_ms = 0;
  int64_t total_kv_blocks = 0;
  // Blocks an allocation may take now: never used, or held by no sequence
  // (cached unreferenced blocks count as free; they are evicted LRU on
  // demand). With no sequence live, free_kv_blocks == total_kv_blocks.
  int64_t free_kv_blocks = 0;
  // Blocks in the prefix cache, referenced or not.
  int64_t cached_kv_blocks = 0;
  // Prompt tokens of running and waiting sequences not computed yet.
  int64_t queued_prefill_tokens = 0;
  uint64_t preemptions = 0;
  // Prefix cache: prompt tokens looked up and found, since start.
  uint64_t prefix_query_tokens = 0;
  uint64_t prefix_hit_tokens = 0;
  // Totals since start.
  uint64_t prompt_tokens = 0;
  uint64_t generation_tokens = 0;
  // Finished sequences, indexed by FinishReason (worker/engine/engine.h).
  std::array<uint64_t, 4> finished = {};
};

// Load plus the KV events since the previous update of one subscription.
struct EngineStateUpdate {
  EngineLoad load;
  std::vector<KvEvent> events;
};

// One WatchState subscriber's feed. Its first update starts with
// AllBlocksCleared followed by the whole prefix cache as BlockStored chain
// runs (each run after its parent's, with parent_block_hash set when the
// parent is cached too), so applying every update's events in order to an
// empty set gives exactly the worker's cached block hashes.
//
// Numbering is per subscription: its events carry 1, 2, 3, ... in delivery
// order across updates, with no gaps ever (numbers are given when Next hands
// the events out). When a subscriber falls behind by more than its bound
// (4 x the pool's blocks in pending hashes), its pending events are replaced
// by AllBlocksCleared + a fresh snapshot, numbered on from where it was, so a
// subscriber never needs to detect loss: an AllBlocksCleared means "drop
// everything you knew". The sequence numbers of the block manager's own log
// are not exposed.
//
// Cadence: the engine pushes after a step that changed the cached set or the
// running / waiting counts (at most every 20 ms), other load changes at most
// every 200 ms, at once when a long step starts, and whatever is unpublished
// before it idles; pushes between two Next calls coalesce into one update
// (events appended, latest load).
class StateSubscription {
 public:
  virtual ~StateSubscription() = default;
  // Waits up to `timeout` for an update. True with `*out` filled when there
  // was one; false on timeout, or (with Closed() true) once the engine stops
  // or Cancel was called.
  virtual bool Next(absl::Duration timeout, EngineStateUpdate* out) = 0;
  virtual bool Closed() const = 0;
  // Ends the subscription; a blocked Next returns false at once.
  virtual void Cancel() = 0;
};

// Feeds the subscriptions of one engine. It keeps the KV events not pushed
// yet and the load last pushed, and decides when a push is due.
class StatePublisher {
 public:
  // How soon a push goes out.
  enum class Urgency {
    // When the cadence above says so.
    kCadence,
    // Whatever changed since the last push (the loop is about to idle).
    kFlush,
    // At once (a long step starts).
    kNow,
  };

  // `max_pending_hashes` bounds each subscription (see StateSubscription).
  explicit StatePublisher(size_t max_pending_hashes);
  // Closes the subscriptions still open.
  ~StatePublisher();

  StatePublisher(const StatePublisher&) = delete;
  StatePublisher& operator=(const StatePublisher&) = delete;

  // A new subscription; the next Publish pushes its first update. Once
  // CloseAll ran, the subscription comes back closed.
  std::shared_ptr<StateSubscription> Subscribe();

  // Takes `events` (drained from the KV block manager since the previous
  // call; a leading AllBlocksCleared supersedes the events not pushed yet)
  // and pushes to every subscription when due. `load` is the loop's view now
  // (compared with the last push to see what changed); `published_load` is
  // called for the load to send and `snapshot` for the whole prefix cache as
  // events, each at most once and only when a push needs it.
  void Publish(std::vector<KvEvent> events, const EngineLoad& load, Urgency urgency,
               absl::FunctionRef<EngineLoad()> published_load,
               absl::FunctionRef<std::vector<KvEvent>()> snapshot);

  // Closes every subscription (Next returns false, Closed() true); later
  // subscriptions come back closed.
  void CloseAll();

 private:
  class Subscription;

  const size_t max_pending_hashes_;

  // Owned by the publishing thread.
  std::vector<KvEvent> unpublished_events_;
  EngineLoad last_published_load_;
  absl::Time last_publish_ = absl::InfinitePast();

  absl::Mutex mu_;
  std::vector<std::weak_ptr<Subscription>> subscriptions_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace tern::worker

#endif  // TERN_WORKER_ENGINE_STATE_PUBLISHER_H_
