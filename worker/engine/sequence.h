// The plain values an engine and its callers exchange for one sequence:
// what it asks for (SequenceSpec), what it streams back (StreamEvent), the
// handle that cancels it, and what an EngineObserver hears about steps and
// finished sequences. Shared by every engine kind (serving_engine.h).
#ifndef TERN_WORKER_ENGINE_SEQUENCE_H_
#define TERN_WORKER_ENGINE_SEQUENCE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "structured/constraint.h"
#include "worker/model/sampler.h"

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
  // What the output must match (structured outputs); kind kNone: free text.
  // A constrained sequence ends (kStop) once its output is a whole match
  // that nothing may extend, and ignore_eos does not apply to it.
  structured::ConstraintSpec constraint;
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

// Lets the submitter stop a sequence; it ends at the next step with kCancelled.
// An engine that must act on a cancel at once (rather than notice it at its
// next step) sets a hook when it creates the handle; the hook runs once, on
// the thread that cancels first, and must not block.
class SequenceHandle {
 public:
  SequenceHandle() = default;
  explicit SequenceHandle(std::function<void()> on_cancel) : on_cancel_(std::move(on_cancel)) {}

  void Cancel() {
    if (!cancelled_.exchange(true) && on_cancel_) on_cancel_();
  }
  bool cancelled() const { return cancelled_.load(); }

 private:
  std::atomic<bool> cancelled_{false};
  const std::function<void()> on_cancel_;
};

// What the engine tells an EngineObserver.
struct StepReport {
  absl::Duration duration;  // the executor's step, sampling excluded
  int32_t sequences = 0;    // in the batch
  int64_t tokens = 0;       // computed (decodes plus prefill chunks)
};

struct SequenceReport {
  FinishReason reason = FinishReason::kStop;
  // Submit -> first scheduled (-> the end, when it never was).
  absl::Duration queue_time;
  // Submit -> first token; unset when it produced none.
  std::optional<absl::Duration> time_to_first_token;
  // Submit -> the end.
  absl::Duration e2e;
  int32_t prompt_tokens = 0;
  int32_t generation_tokens = 0;  // produced here (resumed tokens excluded)
};

// Hears about steps and sequences as they happen, for metrics
// (worker/worker_metrics.h). Called on the engine thread: implementations
// must be quick, must not block and must not call back into the engine.
class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  virtual void OnStep(const StepReport& step) = 0;
  // The time since the sequence's previous token, for each token after its first.
  virtual void OnInterTokenLatency(absl::Duration gap) = 0;
  virtual void OnSequenceFinished(const SequenceReport& sequence) = 0;
  // The time a constrained sequence's token mask took (filled and applied),
  // once per sampled token.
  virtual void OnConstraintMask(absl::Duration duration) { (void)duration; }
};

// What every engine checks before it takes a sequence: a non-empty prompt,
// token ids (prompt, resumed, stop and logit_bias ones) inside the
// vocabulary, max_tokens at least 1 and above the resumed tokens,
// top_logprobs in [0, kMaxTopLogprobs], prompt + max_tokens within
// max_model_len. INVALID_ARGUMENT naming what is wrong (the context-length
// message is the one OpenAI clients know from vLLM).
absl::Status CheckSequenceSpec(const SequenceSpec& spec, int32_t vocab_size, int32_t max_model_len);

}  // namespace tern::worker

#endif  // TERN_WORKER_ENGINE_SEQUENCE_H_
