#include "worker/engine/sequence.h"

#include "absl/strings/str_cat.h"

namespace tern::worker {

absl::Status CheckSequenceSpec(const SequenceSpec& spec, int32_t vocab_size,
                               int32_t max_model_len) {
  if (spec.prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  for (const auto& [id, bias] : spec.logit_bias) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias names token id ", id, ", outside the vocabulary"));
    }
  }
  for (const std::vector<int32_t>* ids : {&spec.prompt, &spec.resume, &spec.stop_token_ids}) {
    for (int32_t id : *ids) {
      if (id < 0 || id >= vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab_size, ")"));
      }
    }
  }
  if (spec.max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be at least 1");
  if (static_cast<int32_t>(spec.resume.size()) >= spec.max_tokens) {
    return absl::InvalidArgumentError("resume_token_ids already use the whole max_tokens budget");
  }
  if (spec.top_logprobs < 0 || spec.top_logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat("top_logprobs must be in [0, ", kMaxTopLogprobs,
                                                   "], got ", spec.top_logprobs));
  }
  const int64_t total = static_cast<int64_t>(spec.prompt.size()) + spec.max_tokens;
  if (total > max_model_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("This model's maximum context length is ", max_model_len,
                     " tokens. However, you requested ", total, " tokens (", spec.prompt.size(),
                     " in the prompt, ", spec.max_tokens, " for the completion)."));
  }
  return absl::OkStatus();
}

}  // namespace tern::worker
