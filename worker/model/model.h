// A Llama 3.x model loaded from a Hugging Face directory: its config and its
// weights, checked against each other. Matrices stay BF16, read in place from
// the mmapped safetensors; the forward pass over them is the executor's
// (worker/model/executor.h).
//
// Thread safety: immutable after Load; any thread may read it.
#ifndef TERN_WORKER_MODEL_MODEL_H_
#define TERN_WORKER_MODEL_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/model/model_config.h"
#include "worker/model/safetensors.h"

namespace tern::worker {

class Model {
 public:
  // Reads config.json (+ generation_config.json) and the safetensors weights
  // of `dir`, checking every tensor's presence and shape against the config.
  // NotFound for missing files or tensors, InvalidArgument for bad configs,
  // malformed files or shape mismatches (the message names the tensor).
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& dir);

  const ModelConfig& config() const { return config_; }

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
  Model() = default;
  absl::Status LoadWeights();

  ModelConfig config_;
  std::unique_ptr<SafetensorsCheckpoint> checkpoint_;
  absl::Span<const uint16_t> embed_tokens_;
  absl::Span<const uint16_t> lm_head_;  // the embedding matrix when tied
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_;  // head_dim / 2 rotary frequencies
};

}  // namespace tern::worker

#endif  // TERN_WORKER_MODEL_MODEL_H_
