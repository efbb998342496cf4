// A Llama 3.x model loaded from a Hugging Face directory, and its forward pass
// on CPU (the best kernels this CPU runs, kernels/dispatch.h).
//
// The math follows Hugging Face transformers' LlamaForCausalLM: RMSNorm in
// f32, rotate-half RoPE with the llama3 frequency rescaling, grouped-query
// causal attention with an f32 softmax, SwiGLU MLP, residuals, final norm and
// lm_head (or the tied embedding matrix). Weights stay BF16 (read in place
// from the mmapped safetensors); activations, accumulation and the KV cache
// are f32.
//
// Thread safety: immutable after Load. Forward is const and may run
// concurrently from several threads as long as each uses its own KvCache.
#ifndef TERN_WORKER_MODEL_H_
#define TERN_WORKER_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/dispatch.h"
#include "worker/kv_cache.h"
#include "worker/model_config.h"
#include "worker/safetensors.h"

namespace tern::worker {

class Model {
 public:
  // Reads config.json (+ generation_config.json) and the safetensors weights
  // of `dir`, checking every tensor's presence and shape against the config.
  // NotFound for missing files or tensors, InvalidArgument for bad configs,
  // malformed files or shape mismatches (the message names the tensor).
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& dir);

  const ModelConfig& config() const { return config_; }

  // Appends `tokens` to `cache` at positions cache.size()... and, when
  // `logits_last` is not null, stores the vocab_size logits that follow the
  // last token. InvalidArgument for an empty list or a token id outside the
  // vocabulary; OutOfRange when the cache lacks room. On error the cache is
  // unchanged.
  absl::Status Forward(absl::Span<const int32_t> tokens, KvCache& cache,
                       std::vector<float>* logits_last) const;

  // A cache sized for this model.
  KvCache NewCache(int capacity_tokens) const { return KvCache(config_, capacity_tokens); }

  // The weights, for executors that lay out their own shards. Matrices are
  // the checkpoint's bf16 tensors in place (the Hugging Face [out, in]
  // layout: one output feature per row); norms are widened to f32.
  struct Layer {
    std::vector<float> input_norm;
    std::vector<float> post_attention_norm;
    absl::Span<const uint16_t> q_proj, k_proj, v_proj, o_proj;
    absl::Span<const uint16_t> gate_proj, up_proj, down_proj;
  };
  const Layer& layer(int i) const { return layers_[i]; }
  absl::Span<const uint16_t> embed_tokens() const { return embed_tokens_; }
  // lm_head.weight, or the embedding matrix when tied.
  absl::Span<const uint16_t> lm_head() const { return lm_head_; }
  absl::Span<const float> final_norm() const { return final_norm_; }
  // The head_dim / 2 rotary frequencies (llama3 scaling applied).
  absl::Span<const float> inv_freq() const { return inv_freq_; }

 private:
  struct Scratch;

  Model() = default;
  absl::Status LoadWeights();
  // Runs one chunk of tokens through all layers; positions start at `start`.
  void ForwardChunk(absl::Span<const int32_t> tokens, int start, KvCache& cache, Scratch& s) const;
  void Attention(int layer, int position, const float* q, KvCache& cache, float* out,
                 std::vector<float>& scores) const;

  ModelConfig config_;
  // The process's kernel level (kernels/dispatch.h), fixed at load.
  const kernels::KernelSet* kernels_ = &kernels::ActiveKernels();
  std::unique_ptr<SafetensorsCheckpoint> checkpoint_;
  absl::Span<const uint16_t> embed_tokens_;
  absl::Span<const uint16_t> lm_head_;  // the embedding matrix when tied
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_;  // head_dim / 2 rotary frequencies
};

}  // namespace tern::worker

#endif  // TERN_WORKER_MODEL_H_
