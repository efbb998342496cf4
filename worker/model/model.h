// A Llama 3.x model loaded from a Hugging Face directory: its config and its
// weights, checked against each other. Matrices stay as stored (bf16, or the
// 8-bit formats of worker/model/quantization.h), read in place from the
// mmapped safetensors; the forward pass over them is the executor's
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
#include "worker/model/quantization.h"
#include "worker/model/safetensors.h"

namespace tern::worker {

// One linear layer's weight matrix [rows = out features, cols = in features],
// one output feature per row as Hugging Face stores it.
struct LinearWeight {
  WeightFormat format = WeightFormat::kBf16;
  int64_t rows = 0, cols = 0;
  absl::Span<const uint16_t> bf16;  // kBf16: rows * cols values
  // kInt8 (offset bytes, q + 128) / kFp8 (E4M3): rows * cols bytes, in place.
  absl::Span<const uint8_t> bytes;
  // kInt8 / kFp8: the dequantization scale of each row (a per-tensor scale
  // repeated), so every shard of rows carries its own.
  std::vector<float> row_scales;

  size_t element_bytes() const { return format == WeightFormat::kBf16 ? 2 : 1; }
  // The matrix as stored: bf16 values or 8-bit codes.
  const void* data() const {
    return format == WeightFormat::kBf16 ? static_cast<const void*>(bf16.data())
                                         : static_cast<const void*>(bytes.data());
  }
  int64_t stored_bytes() const {
    return rows * cols * static_cast<int64_t>(element_bytes()) +
           static_cast<int64_t>(row_scales.size() * sizeof(float));
  }
};

class Model {
 public:
  // Reads config.json (+ generation_config.json, hf_quant_config.json) and
  // the safetensors weights of `dir`, checking every tensor's presence, dtype
  // and shape against the config. A linear layer loads in the format its
  // tensors hold: `<name>.weight` BF16/F16/F32, `<name>.weight` F8_E4M3 with
  // `<name>.weight_scale` (one value, or one per row: [rows] / [rows, 1]), or
  // compressed-tensors' `<name>.weight_packed` I32 [rows, cols / 4] with
  // `weight_scale` and `weight_shape`; 8-bit tensors need a quantization
  // config declaring that format and not listing the module as unquantized
  // ("ignore" / "exclude_modules"). NotFound for missing files or tensors,
  // InvalidArgument for bad configs, unsupported schemes, malformed files or
  // shape / dtype mismatches (the message names the tensor).
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& dir);

  const ModelConfig& config() const { return config_; }

  const QuantizationConfig& quantization() const { return quantization_; }
  // The format of the quantized linear layers, or kBf16 when none is.
  WeightFormat weight_format() const { return weight_format_; }
  // Bytes of weights one decode step streams: every linear matrix with its
  // scales, the lm_head as stored, and the norms (the embedding row is
  // negligible). The executor's figure counts its own lm_head format.
  int64_t decode_weight_bytes() const { return decode_weight_bytes_; }

  // The weights, for executors that lay out their own shards. Matrices are
  // the checkpoint's tensors in place (the Hugging Face [out, in] layout: one
  // output feature per row); norms are widened to f32.
  struct Layer {
    std::vector<float> input_norm;
    std::vector<float> post_attention_norm;
    LinearWeight q, k, v, o, gate, up, down;
    // The same matrices' bf16 values when they are stored in bf16; empty for
    // an 8-bit one.
    absl::Span<const uint16_t> q_proj, k_proj, v_proj, o_proj;
    absl::Span<const uint16_t> gate_proj, up_proj, down_proj;
  };
  const Layer& layer(int i) const { return layers_[i]; }
  absl::Span<const uint16_t> embed_tokens() const { return embed_tokens_; }
  // lm_head (bf16, or 8-bit when the checkpoint holds it so), or the
  // embedding matrix (bf16) when tied.
  const LinearWeight& lm_head() const { return lm_head_; }
  absl::Span<const float> final_norm() const { return final_norm_; }
  // The head_dim / 2 rotary frequencies (llama3 scaling applied).
  absl::Span<const float> inv_freq() const { return inv_freq_; }

 private:
  Model() = default;
  absl::Status LoadWeights();
  absl::StatusOr<LinearWeight> LoadLinear(const std::string& name, int64_t rows, int64_t cols);

  ModelConfig config_;
  QuantizationConfig quantization_;
  WeightFormat weight_format_ = WeightFormat::kBf16;
  int64_t decode_weight_bytes_ = 0;
  std::unique_ptr<SafetensorsCheckpoint> checkpoint_;
  absl::Span<const uint16_t> embed_tokens_;
  LinearWeight lm_head_;  // the embedding matrix when tied
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_;  // head_dim / 2 rotary frequencies
};

}  // namespace tern::worker

#endif  // TERN_WORKER_MODEL_MODEL_H_
