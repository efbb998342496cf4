// Next-token selection from a logits vector: penalties, greedy or seeded
// sampling with temperature, top-k, top-p and min-p.
//
// Order (as vLLM applies them): repetition penalty (Hugging Face style, over
// prompt and output tokens: positive logits divided, negative multiplied),
// frequency and presence penalties (over output tokens only: logit -=
// frequency * count + presence * [count > 0]); then greedy (temperature 0:
// the highest logit, lowest id on ties) or temperature scaling, top-k, top-p,
// min-p and one draw.
//
// The draw uses a counter-based generator: the uniform number for a token is
// a pure function of (seed, position), so the same seed and position always
// choose the same way however sequences are batched and whichever worker
// resumes the sequence.
//
// Pure functions; thread-safe.
#ifndef TERN_WORKER_SAMPLER_H_
#define TERN_WORKER_SAMPLER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace tern::worker {

struct SamplingOptions {
  float temperature = 1.0f;         // 0 (or below 1e-5): greedy
  float top_p = 1.0f;               // (0, 1]
  int top_k = 0;                    // 0: off
  float min_p = 0.0f;               // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; 1: off
  float presence_penalty = 0.0f;    // [-2, 2] as OpenAI
  float frequency_penalty = 0.0f;   // [-2, 2]
  uint64_t seed = 0;
};

// InvalidArgument naming the first option out of range.
absl::Status ValidateSamplingOptions(const SamplingOptions& options);

// Chooses the token at `position` (the index it will take in the sequence).
// `prompt_and_generated` holds the sequence so far; its entries from index
// `num_prompt_tokens` on are output tokens (presence/frequency penalties count
// only those). `logits` (vocab_size entries) is modified: penalties and
// temperature are applied in place. Token ids outside the vocabulary in
// `prompt_and_generated` are ignored. Options are clamped to valid ranges.
int32_t SampleToken(std::vector<float>& logits, const SamplingOptions& options,
                    absl::Span<const int32_t> prompt_and_generated, int64_t position,
                    size_t num_prompt_tokens = 0);

// The uniform number in [0, 1) the sampler draws for (seed, position).
double SamplerUniform(uint64_t seed, int64_t position);

}  // namespace tern::worker

#endif  // TERN_WORKER_SAMPLER_H_
