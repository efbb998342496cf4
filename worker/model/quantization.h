// The weight quantization a checkpoint declares, from config.json's
// "quantization_config" or ModelOpt's hf_quant_config.json, reduced to what
// the native engine computes with: weight-only 8-bit linear layers (int8 or
// FP8 E4M3, one scale per output row or per tensor), everything else bf16.
//
// Accepted:
//  - ModelOpt FP8 ("quant_method": "modelopt", "quant_algo": "FP8", or
//    hf_quant_config.json {"quantization": {"quant_algo": "FP8"}}): per-tensor
//    weight scales; "exclude_modules" (or "ignore") patterns with `*`.
//  - compressed-tensors ("quant_method": "compressed-tensors") with weights of
//    num_bits 8, symmetric, static, strategy "tensor" or "channel":
//    type "float" in format "float-quantized" (FP8), or type "int" in format
//    "pack-quantized" (int8, what vLLM loads as W8A16); an "ignore" list of
//    module names or "re:" regular expressions.
// Activation quantization (ModelOpt's input_scale, compressed-tensors'
// input_activations, static or dynamic) and KV-cache schemes are not applied:
// the engine keeps activations and the KV cache in f32, so it computes what
// the weights define, more precisely than an 8-bit-activation runtime.
// Everything else (other methods or algorithms, group or block-wise scales,
// asymmetric weights, other bit widths, "int-quantized") is InvalidArgument
// naming the field and value.
//
// Thread safety: plain values; functions are pure.
#ifndef TERN_WORKER_MODEL_QUANTIZATION_H_
#define TERN_WORKER_MODEL_QUANTIZATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tern::worker {

// How a linear layer's weights are stored and computed.
enum class WeightFormat {
  kBf16,  // bf16 (F16 / F32 checkpoints are converted to bf16 at load)
  kInt8,  // int8 offset bytes (q + 128) x per-row f32 scale
  kFp8,   // FP8 E4M3 bytes x per-row f32 scale
};
const char* WeightFormatName(WeightFormat format);  // "bf16", "int8", "fp8"

enum class QuantLayout { kNone, kModelOpt, kCompressedTensors };
const char* QuantLayoutName(QuantLayout layout);  // "none", "modelopt", "compressed-tensors"

struct QuantizationConfig {
  QuantLayout layout = QuantLayout::kNone;
  WeightFormat format = WeightFormat::kBf16;  // of the quantized linear layers
  // "tensor" or "channel" (compressed-tensors' strategy; "tensor" for ModelOpt).
  std::string strategy;
  // Modules left unquantized: exact names, `*` globs (ModelOpt) or "re:"
  // regular expressions (compressed-tensors), as the checkpoint lists them.
  std::vector<std::string> ignore;

  // Whether the linear module `name` (e.g. "model.layers.0.mlp.up_proj") is
  // listed as unquantized.
  bool Ignores(const std::string& name) const;
};

// Parses the config.json text's "quantization_config" when present, else
// `hf_quant_config_json` (empty when the file is absent); kNone when neither
// declares quantization.
absl::StatusOr<QuantizationConfig> ParseQuantizationConfig(const std::string& config_json,
                                                           const std::string& hf_quant_config_json);

// Reads dir/config.json and dir/hf_quant_config.json (optional).
absl::StatusOr<QuantizationConfig> LoadQuantizationConfig(const std::string& dir);

// The int8 scale for a row whose largest magnitude is `amax`: the smallest
// f16-representable value >= amax / 127 (1 for an all-zero row), so a GGUF
// Q8_0 block (f16 scale) can hold the row's codes exactly.
float Int8RowScale(float amax);

// Per-row symmetric int8 quantization of `rows` x `cols` bf16 values:
// scales[r] = Int8RowScale(max |row r|), codes = round(w / scale) in
// [-127, 127], stored as offset bytes (q + 128), rows * cols of them.
void QuantizeRowsInt8(absl::Span<const uint16_t> bf16, int64_t rows, int64_t cols, uint8_t* codes,
                      float* scales);

// How the engine holds the lm_head (the output projection to the
// vocabulary). Checkpoints in every 8-bit layout leave it in bf16, and on a
// small model it is a large share of the bytes a decode step reads (a
// quarter of Llama 3.2 1B's bf16 weights).
enum class LmHeadFormat {
  kAuto,      // kInt8 when the model's linear layers are 8-bit and its lm_head bf16
  kAsStored,  // the checkpoint's matrix, read in place
  kInt8,      // a bf16 lm_head quantized at load with QuantizeRowsInt8
};
// "auto", "as-stored", "int8"; InvalidArgument naming the choices otherwise.
absl::StatusOr<LmHeadFormat> ParseLmHeadFormat(const std::string& text);
// Whether a bf16 lm_head is quantized to int8 at load, given the model's
// linear-layer format (WeightFormat::kBf16 when none is quantized) and the
// lm_head's stored format.
bool QuantizesLmHead(LmHeadFormat choice, WeightFormat linear_format, WeightFormat lm_head_format);

}  // namespace tern::worker

#endif  // TERN_WORKER_MODEL_QUANTIZATION_H_
