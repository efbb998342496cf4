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

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/executor.h"
#include "worker/kv_events.h"
#include "worker/model.h"
#include "worker/sampler.h"

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

// The log-probability of one sampled token and its most likely alternatives,
// highest first (ties: lower id first).
struct TokenLogprobs {
  int32_t token_id = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;
};

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

// Load plus the KV events since the previous update of one subscription.
struct EngineStateUpdate {
  EngineLoad load;
  std::vector<KvEvent> events;
};

// One WatchState subscriber's feed. Its first update starts with
// AllBlocksCleared followed by the whole prefix cache as BlockStored events,
// so applying every update's events in order to an empty set gives exactly the
// worker's cached block hashes; event sequence numbers keep increasing across
// updates (a gap means the subscriber must resync by subscribing again). The
// engine publishes after every step that changed load or the cache.
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

struct EngineLoad {
  int32_t running = 0;
  int32_t waiting = 0;
  uint64_t steps = 0;
  int64_t total_kv_blocks = 0;
  int64_t free_kv_blocks = 0;
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

class Engine {
 public:
  // `model` must outlive the engine. Creates the executor (weights laid out,
  // KV pool allocated, rank threads started) and starts the loop thread.
  // Errors from Executor::Create, INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const Model* model,
                                                        EngineOptions options);
  // Ends every sequence with kCancelled and joins the loop thread.
  ~Engine();

  // Queues a sequence. INVALID_ARGUMENT for an empty or too long prompt,
  // token ids out of the vocabulary or bad budgets; RESOURCE_EXHAUSTED when
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

  void Loop();
  // Runs one token (or the whole prompt) of `seq`; returns false when it ended.
  bool Step(Sequence& seq);
  void Finish(Sequence& seq, FinishReason reason, int32_t stop_token, absl::Status error);

  const Model* const model_;
  const EngineOptions options_;

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<Sequence>> waiting_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  int32_t running_count_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> prompt_tokens_{0};
  std::atomic<uint64_t> generation_tokens_{0};
  std::array<std::atomic<uint64_t>, 4> finished_{};

  // Owned by the loop thread.
  std::vector<std::unique_ptr<Sequence>> running_;
  std::thread loop_;
};

}  // namespace tern::worker

#endif  // TERN_WORKER_ENGINE_H_
