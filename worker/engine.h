// The worker's engine loop (DESIGN.md section 3): scheduler -> executor ->
// sampler, step after step. One thread owns the sequences, the KV block
// manager and the executor. Each step the scheduler picks what to compute
// within max_num_batched_tokens: one token for every decoding sequence, then
// prefill chunks of admitted ones (FCFS), so a long prompt never stalls the
// running streams; it admits waiting sequences while max_num_seqs and free
// KV blocks allow, reusing cached prefix blocks; when blocks run out it
// preempts the most recently admitted sequence (its blocks are freed and it
// is recomputed later, first in line). The executor runs the batch; each
// sequence that completed its tokens samples one, which reaches the
// sequence's sink at once.
//
// Thread contract: Create, Submit, Load, WatchState and the handles' Cancel
// may be called from any thread; sinks are called on the engine thread only
// and must not block.
#ifndef TERN_WORKER_ENGINE_H_
#define TERN_WORKER_ENGINE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/executor.h"
#include "worker/kv_block_manager.h"
#include "worker/kv_events.h"
#include "worker/model.h"
#include "worker/sampler.h"
#include "worker/scheduler.h"

namespace tern::worker {

enum class FinishReason { kStop, kLength, kCancelled, kError };

// What one sequence asks for; plain values, no protobuf.
struct SequenceSpec {
  std::string request_id;
  std::vector<int32_t> prompt;
  // Tokens a previous worker already produced; they extend the prompt and
  // count against max_tokens, and are not emitted again.
  std::vector<int32_t> resume;
  SamplingOptions sampling;
  bool has_seed = false;
  int32_t max_tokens = 16;
  int32_t min_tokens = 0;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  // Added to the logits of these token ids before sampling (OpenAI logit_bias).
  std::vector<std::pair<int32_t, float>> logit_bias;
  // Report each sampled token's log-probability (from the model's
  // distribution before penalties, temperature and truncation, as vLLM's
  // default) and the `top_logprobs` most likely alternatives (0..20).
  bool logprobs = false;
  int32_t top_logprobs = 0;
};

// TokenLogprobs (the sampled token's log-probability and its top
// alternatives) is defined in worker/sampler.h.

// One delivery to a sequence's sink.
struct StreamEvent {
  std::vector<int32_t> tokens;
  // One entry per token when the spec asked for logprobs.
  std::vector<TokenLogprobs> logprobs;
  // Set on the first event: the seed in effect.
  bool has_seed = false;
  uint64_t seed = 0;
  // Set on the last event.
  bool finished = false;
  FinishReason finish_reason = FinishReason::kStop;
  int32_t stop_token_id = -1;  // the EOS/stop token that ended it, if any
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  // Prompt tokens (resumed ones included) whose KV came from the prefix
  // cache when the sequence was first admitted.
  int32_t cached_prompt_tokens = 0;
  absl::Status error;  // set when finish_reason is kError
};

using StreamSink = std::function<void(StreamEvent)>;

struct EngineLoad {
  int32_t running = 0;
  int32_t waiting = 0;
  uint64_t steps = 0;
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
  // Finished sequences, indexed by FinishReason.
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
// every 200 ms, and whatever is unpublished before it idles; pushes between
// two Next calls coalesce into one update (events appended, latest load).
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

// Lets the submitter stop a sequence; it ends at the next step with kCancelled.
class SequenceHandle {
 public:
  void Cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  std::atomic<bool> cancelled_{false};
};

struct EngineOptions {
  int32_t max_num_seqs = 8;
  // Waiting sequences beyond max_num_seqs before Submit says RESOURCE_EXHAUSTED.
  int32_t max_queue = 256;
  // Longest prompt + output in tokens.
  int32_t max_model_len = 8192;
  // Tokens computed per step (decodes plus prefill chunks).
  int32_t max_num_batched_tokens = 256;
  bool enable_prefix_caching = true;
  // Executor settings: tp, cpus, block_size, kv_cache_bytes. Its
  // max_batch_tokens is set from max_num_batched_tokens.
  ExecutorOptions executor;
};

class Engine {
 public:
  // `model` must outlive the engine. Creates the executor (weights laid out,
  // KV pool allocated, rank threads started) and starts the loop thread.
  // Errors from Executor::Create, INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const Model* model, EngineOptions options);
  // Ends every sequence with kCancelled, closes the subscriptions and joins
  // the loop thread.
  ~Engine();

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a sequence. INVALID_ARGUMENT for an empty or too long prompt (past
  // max_model_len or the whole KV pool), token ids out of the vocabulary,
  // top_logprobs outside [0, 20] or bad budgets; RESOURCE_EXHAUSTED when
  // the queue is full; UNAVAILABLE once draining or stopping.
  absl::StatusOr<std::shared_ptr<SequenceHandle>> Submit(SequenceSpec spec, StreamSink sink);

  // Stops taking new sequences; running and queued ones finish.
  void Drain();
  EngineLoad Load() const;
  const EngineOptions& options() const { return options_; }
  // Blocks in the KV pool and their size, for Info.
  int32_t num_kv_blocks() const;
  int32_t kv_block_size() const;
  int32_t tp() const;

  // A new subscription to load and KV events (see StateSubscription).
  std::shared_ptr<StateSubscription> WatchState();

 private:
  struct Sequence;
  class Subscription;

  Engine(const Model* model, EngineOptions options, std::unique_ptr<Executor> executor,
         std::unique_ptr<KvBlockManager> kv);

  void Loop();
  // Moves submitted sequences into the scheduler and ends cancelled ones.
  void TakeSubmittedAndCancelled();
  // Plans, runs and samples one step; false when there was nothing to compute.
  bool RunStep();
  // Samples the next token of `seq` from its raw logits row and emits it;
  // may end the sequence.
  void SampleAndEmit(Sequence& seq, absl::Span<const float> raw_logits);
  // Sends the last event and forgets the sequence (scheduler and KV included).
  void Finish(Sequence& seq, FinishReason reason, int32_t stop_token, absl::Status error);
  // The last event of a sequence, usage filled.
  StreamEvent LastEvent(Sequence& seq, FinishReason reason) const;
  EngineLoad CurrentLoad() const;
  // Refreshes what Load() returns, and pushes KV events and load to the
  // subscriptions when due (see engine.cc); `force` pushes whatever is
  // unpublished (before idling).
  void PublishState(bool force);
  void CloseSubscriptions();

  const Model* const model_;
  const EngineOptions options_;

  // Owned by the loop thread after construction.
  const std::unique_ptr<Executor> executor_;
  const std::unique_ptr<KvBlockManager> kv_;
  std::unique_ptr<Scheduler> scheduler_;
  absl::flat_hash_map<KvSequenceId, std::unique_ptr<Sequence>> live_;
  std::vector<float> logits_;
  std::vector<KvEvent> unpublished_events_;
  EngineLoad last_published_load_;
  absl::Time last_publish_ = absl::InfinitePast();

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<Sequence>> submitted_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool new_subscribers_ ABSL_GUARDED_BY(mu_) = false;
  KvSequenceId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // The loop's view after its latest step (counters below excluded).
  EngineLoad load_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> prompt_tokens_{0};
  std::atomic<uint64_t> generation_tokens_{0};
  std::array<std::atomic<uint64_t>, 4> finished_{};

  absl::Mutex subscriptions_mu_;
  std::vector<std::weak_ptr<Subscription>> subscriptions_ ABSL_GUARDED_BY(subscriptions_mu_);

  std::thread loop_;
};

}  // namespace tern::worker

#endif  // TERN_WORKER_ENGINE_H_
