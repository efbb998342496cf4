// Weight-only quantization of a bf16 Llama checkpoint into a layout other
// runtimes load (worker/model/quantization.h reads all of them back):
//  - int8: compressed-tensors "pack-quantized", num_bits 8, symmetric,
//    strategy "channel" (what vLLM loads as W8A16): per linear layer
//    `weight_packed` I32 [rows, cols / 4] (the bytes q + 128, four to a
//    little-endian int32), `weight_scale` F32 [rows, 1], `weight_shape` I64
//    [2]. Row scales are max|row| / 127 rounded up to the next value exactly
//    representable in f16, so a GGUF Q8_0 file (f16 block scales) can hold the
//    very same weights; q = round(w / scale) in [-127, 127].
//  - fp8, compressed-tensors "float-quantized" (type float, num_bits 8,
//    strategy "channel" or "tensor", no input_activations: vLLM's W8A16 FP8):
//    `weight` F8_E4M3 and `weight_scale` F32 [rows, 1] or [1].
//  - fp8, ModelOpt ("quant_method": "modelopt", "quant_algo": "FP8", and
//    hf_quant_config.json), per tensor: `weight` F8_E4M3, `weight_scale` F32
//    []. No `input_scale` is written: it needs activation calibration, so the
//    result is for weight-only readers such as tern (vLLM's ModelOpt path
//    wants calibrated input scales; use compressed-tensors for vLLM).
// FP8 scales are max|w| / 448 (per row or per tensor), values rounded to the
// nearest E4M3. Embeddings, lm_head and norms stay bf16 (listed in "ignore" /
// "exclude_modules" where the layout names them). config.json gains
// "quantization_config"; generation_config.json and the tokenizer files are
// copied.
//
// Errors: NotFound / InvalidArgument for a missing, malformed or already
// quantized input; InvalidArgument for unsupported options; Internal for
// I/O. Thread-compatible.
#ifndef TERN_CLI_MODEL_QUANTIZE_H_
#define TERN_CLI_MODEL_QUANTIZE_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "cli/model/gguf_writer.h"
#include "worker/model/quantization.h"

namespace tern::worker {

struct QuantizeOptions {
  WeightFormat format = WeightFormat::kInt8;  // kInt8 or kFp8
  // fp8 only: kCompressedTensors (either strategy) or kModelOpt (per tensor).
  QuantLayout layout = QuantLayout::kCompressedTensors;
  bool per_channel = true;  // fp8: one scale per row, else one per tensor
  // Also write model.gguf (worker/model's GGUF converter; bf16 matrices are
  // written as `gguf_weight_type`).
  bool write_gguf = false;
  GgmlType gguf_weight_type = GgmlType::kF32;
  // Progress lines (one per layer), when set.
  std::function<void(const std::string&)> progress;
};

// Reads the bf16 checkpoint in `in_dir` and writes the quantized one into
// `out_dir` (created if missing; must differ from in_dir).
absl::Status QuantizeCheckpoint(const std::string& in_dir, const std::string& out_dir,
                                const QuantizeOptions& options);

}  // namespace tern::worker

#endif  // TERN_CLI_MODEL_QUANTIZE_H_
