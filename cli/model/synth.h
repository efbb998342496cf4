// Synthetic Llama-3-architecture checkpoints for demos and tests, written in
// the exact Hugging Face layout (config.json, generation_config.json, BF16
// safetensors, single or sharded with an index, tokenizer.json,
// tokenizer_config.json) plus, optionally, model.gguf with the same weights
// for llama.cpp.
//
// Weights are a pure function of (preset, seed): each element comes from a
// counter-based generator keyed by the seed, the tensor name and the element
// index, so output files are byte-identical across runs and machines.
//
// Every file is written under a temporary name and renamed into place.
// Errors: InvalidArgument (unknown preset, bad tokenizer files), NotFound
// (missing tokenizer files), Internal (I/O). Thread-compatible.
#ifndef TERN_CLI_MODEL_SYNTH_H_
#define TERN_CLI_MODEL_SYNTH_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli/model/gguf_writer.h"
#include "cli/model/quantize.h"
#include "worker/model/model_config.h"
#include "worker/model/quantization.h"

namespace tern::worker {

struct SynthOptions {
  // tiny | tiny-untied | small | 1b (see SynthPresetNames()).
  std::string preset = "tiny";
  uint64_t seed = 0;
  // Folder holding tokenizer.json and tokenizer_config.json (the Llama 3.1
  // tokenizer: vocabulary of 128256 ids).
  std::string tokenizer_dir;
  // Chat template text written into tokenizer_config.json (and the GGUF);
  // empty keeps the template already in tokenizer_config.json.
  std::string chat_template;
  bool write_gguf = true;
  // GGUF matrix type: BF16 (as convert_hf_to_gguf --outtype bf16), or F32.
  GgmlType gguf_weight_type = GgmlType::kBF16;
  // Safetensors shard limit: above it the weights are split into
  // model-0000k-of-0000N.safetensors with model.safetensors.index.json.
  uint64_t max_shard_bytes = 2'000'000'000;
  // Linear-layer weights: kBf16, or kInt8 / kFp8: the bf16 weights quantized
  // as cli/model/quantize.h writes them (the layout and scale granularity
  // from `quantize`; its progress and GGUF fields are set from the above).
  WeightFormat dtype = WeightFormat::kBf16;
  QuantizeOptions quantize;
  // Progress lines (per tensor group / file), when set.
  std::function<void(const std::string&)> progress;
};

// The names accepted by SynthOptions::preset.
std::vector<std::string> SynthPresetNames();

// The config.json hyperparameters of a preset; InvalidArgument if unknown.
absl::StatusOr<ModelConfig> SynthPresetConfig(const std::string& preset);

// Writes the checkpoint into `out_dir` (created if missing).
absl::Status WriteSyntheticCheckpoint(const SynthOptions& options, const std::string& out_dir);

}  // namespace tern::worker

#endif  // TERN_CLI_MODEL_SYNTH_H_
