// The model the gateway serves, as read from its Hugging Face directory:
// tokenizer.json, tokenizer_config.json (chat_template, bos/eos tokens) and,
// when present, generation_config.json (default sampling values, as vLLM's
// --generation-config auto applies them).
//
// Immutable after loading; every member may be used from any thread.
#ifndef TERN_GATEWAY_OPENAI_SERVED_MODEL_H_
#define TERN_GATEWAY_OPENAI_SERVED_MODEL_H_

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "gateway/chat_template/chat_template.h"
#include "gateway/tokenizer/tokenizer.h"

namespace tern::gateway {

// Sampling defaults from generation_config.json; empty fields fall back to OpenAI's.
struct SamplingDefaults {
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int32_t> top_k;
  std::optional<double> min_p;
  std::optional<double> repetition_penalty;
};

struct TokenizerConfig {
  std::string chat_template;  // empty: the model has none
  std::string bos_token;
  std::string eos_token;
};

struct ServedModel {
  std::string name;  // what clients put in "model"
  std::unique_ptr<Tokenizer> tokenizer;
  std::optional<ChatTemplate> chat_template;
  std::string bos_token;
  std::string eos_token;
  SamplingDefaults sampling_defaults;
  // Responses' system_fingerprint: "fp_" and 12 hex digits of a hash of
  // tern's version and commit, the served name and the chat template.
  std::string system_fingerprint;
};

// Reads tokenizer_config.json's fields. The chat template may be a string or
// a list of {name, template} (the one named "default", else the first);
// bos/eos tokens may be strings or {"content": ...} objects.
absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(const nlohmann::json& config);
// Reads generation_config.json's sampling fields, ignoring invalid values.
SamplingDefaults ParseGenerationConfig(const nlohmann::json& config);

// Loads `dir`. `served_name` empty: the directory's base name. NOT_FOUND
// when tokenizer.json or tokenizer_config.json is missing; INVALID_ARGUMENT
// when a file or the chat template does not parse.
absl::StatusOr<std::unique_ptr<ServedModel>> LoadServedModel(const std::string& dir,
                                                             const std::string& served_name);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_SERVED_MODEL_H_
