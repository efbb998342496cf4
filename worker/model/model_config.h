// The hyperparameters of a Llama 3.x checkpoint, read from a Hugging Face
// model directory's config.json and generation_config.json.
//
// Parsing is strict: a field that is missing (and has no Hugging Face default),
// of the wrong type or out of range, an unsupported model_type, activation or
// rope type, or inconsistent head counts give InvalidArgument naming the field.
// Unreadable files give NotFound. ModelConfig is a plain value; functions here
// are thread-safe.
#ifndef TERN_WORKER_MODEL_MODEL_CONFIG_H_
#define TERN_WORKER_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern::worker {

// config.json "rope_scaling". rope_type is "default" (no scaling) or "llama3".
struct RopeScalingConfig {
  std::string rope_type = "default";
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

// Sampling defaults from generation_config.json (absent fields keep these).
struct GenerationDefaults {
  bool do_sample = false;
  double temperature = 1.0;
  double top_p = 1.0;
  int top_k = 0;
};

struct ModelConfig {
  std::string model_type = "llama";
  std::string architecture = "LlamaForCausalLM";
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;
  int vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 500000.0;
  RopeScalingConfig rope_scaling;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "bfloat16";
  int32_t bos_token_id = -1;           // -1: none
  std::vector<int32_t> eos_token_ids;  // generation_config.json first, else config.json
  GenerationDefaults generation;

  int q_dim() const { return num_attention_heads * head_dim; }
  int kv_dim() const { return num_key_value_heads * head_dim; }
  bool llama3_rope() const { return rope_scaling.rope_type == "llama3"; }
};

// Parses config.json text and, when non-empty, generation_config.json text.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& config_json,
                                             const std::string& generation_config_json);

// Reads dir/config.json and dir/generation_config.json (the latter optional).
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

// Reads a whole file of a checkpoint directory (NotFound when unreadable;
// InvalidArgument above `max_bytes`).
absl::StatusOr<std::string> ReadCheckpointFile(const std::string& path,
                                               size_t max_bytes = size_t{1} << 30);

// Checks the invariants ParseModelConfig enforces on an already built config.
absl::Status ValidateModelConfig(const ModelConfig& config);

// config.json / generation_config.json text in the Hugging Face layout
// (what transformers writes for LlamaForCausalLM), pretty-printed.
std::string ModelConfigToJson(const ModelConfig& config);
std::string GenerationConfigToJson(const ModelConfig& config);

}  // namespace tern::worker

#endif  // TERN_WORKER_MODEL_MODEL_CONFIG_H_
