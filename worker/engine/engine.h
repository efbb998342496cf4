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
// Step durations: the engine learns how long a step of n tokens takes
// (worker/engine/step_time_model.h) and publishes it with its load, so a
// router can tell a long step from a hang. Before serving, Create runs two
// warm-up steps on scratch KV blocks (1 token, and min(32,
// max_num_batched_tokens) tokens, both producing logits), so there is an
// estimate from this machine before the first real step; on a
// Llama-3.2-1B-sized model on 2 cores they add about a second to start-up.
// When a step expected to last kLongStep or more starts, the engine pushes
// a state update at once with step_running set and the step's expected
// duration; the update after the step clears it, as usual.
//
// Thread contract: Create, Submit, Load, WatchState and the handles' Cancel
// may be called from any thread; sinks are called on the engine thread only
// and must not block.
#ifndef TERN_WORKER_ENGINE_ENGINE_H_
#define TERN_WORKER_ENGINE_ENGINE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "structured/constraint.h"
#include "worker/engine/kv_block_manager.h"
#include "worker/engine/kv_events.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/sequence.h"
#include "worker/engine/serving_engine.h"
#include "worker/engine/state_publisher.h"
#include "worker/engine/step_time_model.h"
#include "worker/model/executor.h"
#include "worker/model/model.h"
#include "worker/model/sampler.h"

namespace tern::worker {

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
  // Compiles sequences' output constraints against the model's vocabulary;
  // null: a constrained sequence is INVALID_ARGUMENT.
  std::shared_ptr<structured::ConstraintCache> constraints;
  // Told about steps and finished sequences; may be null. Must outlive the engine.
  EngineObserver* observer = nullptr;
  // Tests only: called on the engine thread right before every executor
  // step (warm-up steps included) with the step's token count, inside the
  // step's measured duration; a test sleeps in it to stand in for a slow
  // model.
  std::function<void(int64_t tokens)> before_step_for_testing;
};

class Engine final : public ServingEngine {
 public:
  // Steps expected to take this long or more are announced when they start.
  static constexpr absl::Duration kLongStep = absl::Milliseconds(200);

  // `model` must outlive the engine. Creates the executor (weights laid out,
  // KV pool allocated, rank threads started), runs the warm-up steps and
  // starts the loop thread. Errors from Executor::Create and from the
  // warm-up steps, INVALID_ARGUMENT for bad options.
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
  absl::StatusOr<std::shared_ptr<SequenceHandle>> Submit(SequenceSpec spec,
                                                         StreamSink sink) override;

  // Stops taking new sequences; running and queued ones finish.
  void Drain() override;
  EngineLoad Load() const override;
  const EngineOptions& options() const { return options_; }
  // Blocks in the KV pool and their size, for Info.
  int32_t num_kv_blocks() const;
  int32_t kv_block_size() const;
  int32_t tp() const;
  // Weight bytes one decode step reads (Executor::decode_weight_bytes).
  int64_t decode_weight_bytes() const;
  // The decode GEMV's streaming settings (Executor::gemv_tuning).
  const std::string& gemv_tuning() const;

  // A new subscription to load and KV events (see StateSubscription).
  std::shared_ptr<StateSubscription> WatchState() override;
  // Kind "native"; vocabulary and EOS ids from the model's config.
  EngineInfo Info() const override;

 private:
  struct Sequence;

  Engine(const Model* model, EngineOptions options, std::unique_ptr<Executor> executor,
         std::unique_ptr<KvBlockManager> kv, StepTimeModel step_times);

  void Loop();
  // Moves submitted sequences into the scheduler and ends cancelled ones.
  void TakeSubmittedAndCancelled();
  // Plans, runs and samples one step; false when there was nothing to compute.
  bool RunStep();
  // Samples the next token of `seq` from its raw logits row and emits it;
  // may end the sequence.
  void SampleAndEmit(Sequence& seq, absl::Span<const float> raw_logits);
  // Masks `logits` to the tokens `seq`'s output constraint allows (EOS and
  // stop ids only where the output may end and `may_stop`). False when no
  // token can continue the output, which ends the sequence with an error.
  bool ApplyConstraint(Sequence& seq, std::vector<float>& logits, bool may_stop);
  // Tells the observer, if any, how `seq` went.
  void ReportFinished(const Sequence& seq, FinishReason reason) const;
  // Sends the last event and forgets the sequence (scheduler and KV included).
  void Finish(Sequence& seq, FinishReason reason, int32_t stop_token, absl::Status error);
  // The last event of a sequence, usage filled.
  StreamEvent LastEvent(Sequence& seq, FinishReason reason) const;
  EngineLoad CurrentLoad() const;
  // Refreshes what Load() returns, and hands the KV events and the load to
  // the publisher, which pushes them as `urgency` and its cadence say.
  void DeliverFinalEvents();
  void PublishState(StatePublisher::Urgency urgency);

  const Model* const model_;
  const EngineOptions options_;

  // Owned by the loop thread after construction.
  const std::unique_ptr<Executor> executor_;
  const std::unique_ptr<KvBlockManager> kv_;
  std::unique_ptr<Scheduler> scheduler_;
  absl::flat_hash_map<KvSequenceId, std::unique_ptr<Sequence>> live_;
  // Last events of sequences that ended in this loop iteration, delivered
  // after the state push that shows them gone (DeliverFinalEvents), so a
  // router never hears a request end before the load that no longer counts it.
  std::vector<std::pair<StreamSink, StreamEvent>> final_events_;
  std::vector<float> logits_;
  // One sequence's logits as its draw changes them (SampleAndEmit).
  std::vector<float> sample_logits_;
  // Scratch for constrained sequences' allowed tokens.
  structured::TokenMask constraint_mask_;
  StepTimeModel step_times_;
  // Set while the executor runs a step, with that step's expected duration.
  bool step_running_ = false;
  absl::Duration running_step_expected_;

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

  StatePublisher publisher_;

  std::thread loop_;
};

}  // namespace tern::worker

#endif  // TERN_WORKER_ENGINE_ENGINE_H_
