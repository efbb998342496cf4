// The worker's engine loop: one thread owns the model's sequences and their
// KV caches; each step runs one forward pass per running sequence (the whole
// prompt on its first step, then one token), samples, and hands the token to
// the sequence's sink at once. Up to max_num_seqs sequences run interleaved;
// more wait in FIFO order.
//
// Thread contract: Submit, Load and the handles' Cancel may be called from any
// thread; sinks are called on the engine thread only and must not block.
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
};

// One delivery to a sequence's sink.
struct StreamEvent {
  std::vector<int32_t> tokens;
  // Set on the first event: the seed in effect.
  bool has_seed = false;
  uint64_t seed = 0;
  // Set on the last event.
  bool finished = false;
  FinishReason finish_reason = FinishReason::kStop;
  int32_t stop_token_id = -1;  // the EOS/stop token that ended it, if any
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  absl::Status error;  // set when finish_reason is kError
};

using StreamSink = std::function<void(StreamEvent)>;

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
};

struct EngineLoad {
  int32_t running = 0;
  int32_t waiting = 0;
  uint64_t steps = 0;
  // Totals since start.
  uint64_t prompt_tokens = 0;
  uint64_t generation_tokens = 0;
  // Finished sequences, indexed by FinishReason.
  std::array<uint64_t, 4> finished = {};
};

class Engine {
 public:
  // `model` must outlive the engine. Starts the loop thread.
  Engine(const Model* model, EngineOptions options);
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
