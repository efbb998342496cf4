// Test support: a second Llama forward pass, one sequence at a time, that the
// serving path (worker/model/executor.h, the engine, the Worker service) is
// checked against. It reads the same loaded weights (worker::Model) but
// shares no code with the executor: contiguous f32 KV per sequence instead
// of paged blocks, no tensor parallelism, tokens in chunks of 64.
//
// The math follows Hugging Face transformers' LlamaForCausalLM: RMSNorm in
// f32, rotate-half RoPE with the llama3 frequency rescaling, grouped-query
// causal attention with an f32 softmax, SwiGLU MLP, residuals, final norm and
// lm_head (or the tied embedding matrix), on the process's kernels
// (kernels/dispatch.h).
//
// Thread safety: ReferenceForward may run concurrently from several threads
// on one model as long as each uses its own KvCache.
#ifndef TERN_TESTS_TESTING_REFERENCE_FORWARD_H_
#define TERN_TESTS_TESTING_REFERENCE_FORWARD_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "worker/model/model.h"
#include "worker/model/model_config.h"

namespace tern::testing {

// The key/value cache of one sequence: per layer, f32 keys and values of
// `kv_dim` floats per position, rotary embedding already applied to the keys.
// Storage grows with the sequence up to `capacity_tokens` (no up-front
// allocation of the whole capacity). Not thread-safe: one sequence, one owner.
class KvCache {
 public:
  KvCache(const worker::ModelConfig& config, int capacity_tokens);

  // Positions filled so far.
  int size() const { return size_; }
  int capacity() const { return capacity_; }
  int num_layers() const { return static_cast<int>(keys_.size()); }
  int kv_dim() const { return kv_dim_; }

  // Drops positions >= n (no-op when n >= size()); n < 0 is treated as 0.
  void Truncate(int n);

  // Adds n positions (contents unspecified until written). OutOfRange when
  // size() + n would exceed capacity(); the cache is then unchanged.
  absl::Status Extend(int n);

  // The kv_dim() floats of `layer` at `position` (< size()).
  float* keys(int layer, int position) { return keys_[layer].data() + Offset(position); }
  float* values(int layer, int position) { return values_[layer].data() + Offset(position); }
  const float* keys(int layer, int position) const {
    return keys_[layer].data() + Offset(position);
  }
  const float* values(int layer, int position) const {
    return values_[layer].data() + Offset(position);
  }

 private:
  size_t Offset(int position) const { return static_cast<size_t>(position) * kv_dim_; }

  int kv_dim_;
  int capacity_;
  int size_ = 0;
  std::vector<std::vector<float>> keys_;  // [layer][position * kv_dim + i]
  std::vector<std::vector<float>> values_;
};

// Appends `tokens` to `cache` at positions cache.size()... and, when
// `logits_last` is not null, stores the vocab_size logits that follow the
// last token. InvalidArgument for an empty list, a token id outside the
// vocabulary or a cache built for another model shape; OutOfRange when the
// cache lacks room. On error the cache is unchanged.
absl::Status ReferenceForward(const worker::Model& model, absl::Span<const int32_t> tokens,
                              KvCache& cache, std::vector<float>* logits_last);

}  // namespace tern::testing

#endif  // TERN_TESTS_TESTING_REFERENCE_FORWARD_H_
