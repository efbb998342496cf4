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
// resumes the sequence. Truncation orders the candidates by probability,
// highest first, lower id first on ties: top-k keeps the first k, top-p the
// shortest prefix holding top_p of their mass, min-p those at least min_p
// times the most likely one. The kept prefix is found by radix selection over
// the probabilities' float bits, not by sorting, and the draw walks the kept
// ids in id order: a flat distribution over 128K ids costs no more than a
// peaked one.
//
// Logprobs (ComputeLogprobs) come from the log-softmax of the RAW logits the
// model produced: before logit bias, min-token masks, penalties, temperature
// and truncation, as vLLM reports them by default. They describe the model's
// distribution, not the filtered one the token was drawn from.
//
// Pure functions; thread-safe.
#ifndef TERN_WORKER_MODEL_SAMPLER_H_
#define TERN_WORKER_MODEL_SAMPLER_H_

#include <cstdint>
#include <utility>
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

// The log-probability of one sampled token and its most likely alternatives,
// highest first (ties: lower id first).
struct TokenLogprobs {
  int32_t token_id = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;
};

// Most alternatives ComputeLogprobs reports (as OpenAI's top_logprobs).
inline constexpr int kMaxTopLogprobs = 20;

// log_softmax(raw_logits)[token] and the `top_n` (clamped to [0, 20]) most
// likely ids with their log-probabilities, highest first, lower id first on
// ties. The normaliser is a float64 log-sum-exp; one pass keeps the top-n in a
// bounded heap (O(vocab log top_n)). NaN logits are never in the top list.
// `token` must index `raw_logits`.
TokenLogprobs ComputeLogprobs(absl::Span<const float> raw_logits, int32_t token, int top_n);

// InvalidArgument naming the first option out of range.
absl::Status ValidateSamplingOptions(const SamplingOptions& options);

// Chooses the token at `position` (the index it will take in the sequence).
// `prompt_and_generated` holds the sequence so far; its entries from index
// `num_prompt_tokens` on are output tokens (presence/frequency penalties count
// only those). `logits` (vocab_size entries) is scratch afterwards: penalties
// and temperature are applied in place, and a draw without truncation writes
// the probabilities over them. Token ids outside the vocabulary in
// `prompt_and_generated` are ignored. Options are clamped to valid ranges.
int32_t SampleToken(std::vector<float>& logits, const SamplingOptions& options,
                    absl::Span<const int32_t> prompt_and_generated, int64_t position,
                    size_t num_prompt_tokens = 0);

// The uniform number in [0, 1) the sampler draws for (seed, position).
double SamplerUniform(uint64_t seed, int64_t position);

}  // namespace tern::worker

#endif  // TERN_WORKER_MODEL_SAMPLER_H_
