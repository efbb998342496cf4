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

#include <string>
#include <vector>

#include "absl/status/statusor.h"

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

}  // namespace tern::worker

#endif  // TERN_WORKER_MODEL_QUANTIZATION_H_
