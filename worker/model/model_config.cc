#include "worker/model/model_config.h"

#include <fstream>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace tern::worker {
namespace {

using nlohmann::json;

// Upper bounds that keep a hostile config from asking for absurd allocations
// (the largest Llama 3.x, 405B, is well inside them).
constexpr int64_t kMaxHidden = 1 << 16;
constexpr int64_t kMaxIntermediate = 1 << 18;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxVocab = 1 << 22;
constexpr int64_t kMaxPositions = int64_t{1} << 24;

absl::Status FieldError(const std::string& file, const std::string& field,
                        const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": \"", field, "\" ", problem));
}

// An integer field in [min_value, max_value]; `fallback` when absent (nullopt:
// the field is required).
absl::StatusOr<int64_t> IntField(const json& obj, const std::string& file, const std::string& key,
                                 std::optional<int64_t> fallback, int64_t min_value,
                                 int64_t max_value) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (fallback.has_value()) return *fallback;
    return FieldError(file, key, "is missing");
  }
  if (!it->is_number_integer()) return FieldError(file, key, "must be an integer");
  int64_t v = 0;
  if (it->is_number_unsigned()) {
    const uint64_t u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return FieldError(file, key, "is out of range");
    }
    v = static_cast<int64_t>(u);
  } else {
    v = it->get<int64_t>();
  }
  if (v < min_value || v > max_value) {
    return FieldError(file, key,
                      absl::StrCat("must be in [", min_value, ", ", max_value, "], got ", v));
  }
  return v;
}

absl::StatusOr<double> NumberField(const json& obj, const std::string& file, const std::string& key,
                                   double fallback, double min_value, double max_value) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_number()) return FieldError(file, key, "must be a number");
  const double v = it->get<double>();
  if (!(v >= min_value && v <= max_value)) {
    return FieldError(file, key, absl::StrCat("must be in [", min_value, ", ", max_value, "]"));
  }
  return v;
}

absl::StatusOr<bool> BoolField(const json& obj, const std::string& file, const std::string& key,
                               bool fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return FieldError(file, key, "must be true or false");
  return it->get<bool>();
}

// eos_token_id: an int or a list of ints.
absl::StatusOr<std::vector<int32_t>> TokenIdList(const json& value, const std::string& file,
                                                 const std::string& key, int vocab_size) {
  std::vector<int32_t> ids;
  auto add = [&](const json& v) -> absl::Status {
    if (!v.is_number_integer()) return FieldError(file, key, "must hold integer token ids");
    const int64_t id = v.get<int64_t>();
    if (id < 0 || id >= vocab_size) {
      return FieldError(file, key, absl::StrCat("token id ", id, " is outside the vocabulary"));
    }
    ids.push_back(static_cast<int32_t>(id));
    return absl::OkStatus();
  };
  if (value.is_array()) {
    for (const json& v : value) TERN_RETURN_IF_ERROR(add(v));
  } else {
    TERN_RETURN_IF_ERROR(add(value));
  }
  return ids;
}

absl::Status ParseRopeScaling(const json& cfg, ModelConfig& out) {
  auto it = cfg.find("rope_scaling");
  if (it == cfg.end() || it->is_null()) return absl::OkStatus();
  const std::string file = "config.json";
  if (!it->is_object()) return FieldError(file, "rope_scaling", "must be an object or null");
  const json& rs = *it;
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    auto t = rs.find(key);
    if (t != rs.end() && t->is_string()) {
      type = t->get<std::string>();
      break;
    }
  }
  if (type.empty()) return FieldError(file, "rope_scaling.rope_type", "is missing");
  if (type == "default") return absl::OkStatus();
  if (type != "llama3") {
    return FieldError(file, "rope_scaling.rope_type",
                      absl::StrCat("\"", type, "\" is not supported (default or llama3 only)"));
  }
  RopeScalingConfig& r = out.rope_scaling;
  r.rope_type = "llama3";
  TERN_ASSIGN_OR_RETURN(r.factor, NumberField(rs, file, "factor", -1.0, 1.0, 1e6));
  if (r.factor < 1.0) return FieldError(file, "rope_scaling.factor", "is missing");
  TERN_ASSIGN_OR_RETURN(r.low_freq_factor,
                        NumberField(rs, file, "low_freq_factor", 1.0, 1e-6, 1e6));
  TERN_ASSIGN_OR_RETURN(r.high_freq_factor,
                        NumberField(rs, file, "high_freq_factor", 4.0, 1e-6, 1e6));
  TERN_ASSIGN_OR_RETURN(
      r.original_max_position_embeddings,
      IntField(rs, file, "original_max_position_embeddings", 8192, 1, kMaxPositions));
  if (r.high_freq_factor <= r.low_freq_factor) {
    return FieldError(file, "rope_scaling.high_freq_factor", "must exceed low_freq_factor");
  }
  return absl::OkStatus();
}

absl::Status ParseGenerationConfig(const json& gen, ModelConfig& out) {
  const std::string file = "generation_config.json";
  if (!gen.is_object()) return absl::InvalidArgumentError(file + ": not a JSON object");
  auto eos = gen.find("eos_token_id");
  if (eos != gen.end() && !eos->is_null()) {
    TERN_ASSIGN_OR_RETURN(out.eos_token_ids,
                          TokenIdList(*eos, file, "eos_token_id", out.vocab_size));
  }
  auto bos = gen.find("bos_token_id");
  if (bos != gen.end() && !bos->is_null()) {
    TERN_ASSIGN_OR_RETURN(int64_t id,
                          IntField(gen, file, "bos_token_id", std::nullopt, 0, out.vocab_size - 1));
    out.bos_token_id = static_cast<int32_t>(id);
  }
  GenerationDefaults& g = out.generation;
  TERN_ASSIGN_OR_RETURN(g.do_sample, BoolField(gen, file, "do_sample", false));
  TERN_ASSIGN_OR_RETURN(g.temperature, NumberField(gen, file, "temperature", 1.0, 0.0, 1e4));
  TERN_ASSIGN_OR_RETURN(g.top_p, NumberField(gen, file, "top_p", 1.0, 0.0, 1.0));
  TERN_ASSIGN_OR_RETURN(int64_t top_k, IntField(gen, file, "top_k", 0, 0, kMaxVocab));
  g.top_k = static_cast<int>(top_k);
  return absl::OkStatus();
}

absl::StatusOr<json> ParseJsonObject(const std::string& text, const std::string& file) {
  json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return absl::InvalidArgumentError(file + ": not valid JSON");
  if (!parsed.is_object()) return absl::InvalidArgumentError(file + ": not a JSON object");
  return parsed;
}

}  // namespace

absl::StatusOr<std::string> ReadCheckpointFile(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  if (static_cast<uint64_t>(size) > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is larger than ", max_bytes, " bytes"));
  }
  std::string text(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(text.data(), size)) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  return text;
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& config_json,
                                             const std::string& generation_config_json) {
  const std::string file = "config.json";
  TERN_ASSIGN_OR_RETURN(json cfg, ParseJsonObject(config_json, file));
  ModelConfig c;
  auto model_type = cfg.find("model_type");
  if (model_type == cfg.end() || !model_type->is_string()) {
    return FieldError(file, "model_type", "is missing");
  }
  c.model_type = model_type->get<std::string>();
  if (c.model_type != "llama") {
    return FieldError(file, "model_type",
                      absl::StrCat("\"", c.model_type, "\" is not supported (llama only)"));
  }
  auto archs = cfg.find("architectures");
  if (archs != cfg.end() && archs->is_array() && !archs->empty() && (*archs)[0].is_string()) {
    c.architecture = (*archs)[0].get<std::string>();
  }
  auto act = cfg.find("hidden_act");
  if (act != cfg.end() && !(act->is_string() && act->get<std::string>() == "silu")) {
    return FieldError(file, "hidden_act", "must be \"silu\"");
  }
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    TERN_ASSIGN_OR_RETURN(bool bias, BoolField(cfg, file, key, false));
    if (bias) return FieldError(file, key, "must be false (biases are not supported)");
  }
  TERN_ASSIGN_OR_RETURN(int64_t hidden,
                        IntField(cfg, file, "hidden_size", std::nullopt, 1, kMaxHidden));
  TERN_ASSIGN_OR_RETURN(
      int64_t inter, IntField(cfg, file, "intermediate_size", std::nullopt, 1, kMaxIntermediate));
  TERN_ASSIGN_OR_RETURN(int64_t layers,
                        IntField(cfg, file, "num_hidden_layers", std::nullopt, 1, kMaxLayers));
  TERN_ASSIGN_OR_RETURN(int64_t heads,
                        IntField(cfg, file, "num_attention_heads", std::nullopt, 1, kMaxHeads));
  TERN_ASSIGN_OR_RETURN(int64_t kv_heads,
                        IntField(cfg, file, "num_key_value_heads", heads, 1, kMaxHeads));
  TERN_ASSIGN_OR_RETURN(int64_t vocab,
                        IntField(cfg, file, "vocab_size", std::nullopt, 1, kMaxVocab));
  if (hidden % heads != 0 && cfg.find("head_dim") == cfg.end()) {
    return FieldError(file, "num_attention_heads",
                      absl::StrCat("(", heads, ") must divide hidden_size (", hidden, ")"));
  }
  TERN_ASSIGN_OR_RETURN(int64_t head_dim, IntField(cfg, file, "head_dim", hidden / heads, 2, 1024));
  TERN_ASSIGN_OR_RETURN(c.max_position_embeddings,
                        IntField(cfg, file, "max_position_embeddings", 2048, 1, kMaxPositions));
  c.hidden_size = static_cast<int>(hidden);
  c.intermediate_size = static_cast<int>(inter);
  c.num_hidden_layers = static_cast<int>(layers);
  c.num_attention_heads = static_cast<int>(heads);
  c.num_key_value_heads = static_cast<int>(kv_heads);
  c.head_dim = static_cast<int>(head_dim);
  c.vocab_size = static_cast<int>(vocab);
  TERN_ASSIGN_OR_RETURN(c.rms_norm_eps, NumberField(cfg, file, "rms_norm_eps", 1e-6, 0.0, 1.0));
  TERN_ASSIGN_OR_RETURN(c.rope_theta, NumberField(cfg, file, "rope_theta", 10000.0, 1.0, 1e12));
  TERN_RETURN_IF_ERROR(ParseRopeScaling(cfg, c));
  TERN_ASSIGN_OR_RETURN(c.tie_word_embeddings, BoolField(cfg, file, "tie_word_embeddings", false));
  auto dtype = cfg.find("torch_dtype");
  if (dtype == cfg.end()) dtype = cfg.find("dtype");
  if (dtype != cfg.end() && dtype->is_string()) c.torch_dtype = dtype->get<std::string>();
  auto bos = cfg.find("bos_token_id");
  if (bos != cfg.end() && !bos->is_null()) {
    TERN_ASSIGN_OR_RETURN(int64_t id,
                          IntField(cfg, file, "bos_token_id", std::nullopt, 0, vocab - 1));
    c.bos_token_id = static_cast<int32_t>(id);
  }
  auto eos = cfg.find("eos_token_id");
  if (eos != cfg.end() && !eos->is_null()) {
    TERN_ASSIGN_OR_RETURN(c.eos_token_ids, TokenIdList(*eos, file, "eos_token_id", c.vocab_size));
  }
  if (!generation_config_json.empty()) {
    TERN_ASSIGN_OR_RETURN(json gen,
                          ParseJsonObject(generation_config_json, "generation_config.json"));
    TERN_RETURN_IF_ERROR(ParseGenerationConfig(gen, c));
  }
  TERN_RETURN_IF_ERROR(ValidateModelConfig(c));
  return c;
}

absl::Status ValidateModelConfig(const ModelConfig& c) {
  const std::string file = "config.json";
  if (c.model_type != "llama") return FieldError(file, "model_type", "must be \"llama\"");
  if (c.hidden_size <= 0 || c.intermediate_size <= 0 || c.num_hidden_layers <= 0 ||
      c.vocab_size <= 0 || c.max_position_embeddings <= 0) {
    return absl::InvalidArgumentError("config.json: sizes must be positive");
  }
  if (c.num_attention_heads <= 0 || c.num_key_value_heads <= 0) {
    return FieldError(file, "num_attention_heads", "and num_key_value_heads must be positive");
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return FieldError(
        file, "num_key_value_heads",
        absl::StrCat("(", c.num_key_value_heads, ") must divide num_attention_heads (",
                     c.num_attention_heads, ")"));
  }
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) {
    return FieldError(file, "head_dim", "must be positive and even (rotary pairs)");
  }
  if (!(c.rms_norm_eps > 0.0)) return FieldError(file, "rms_norm_eps", "must be positive");
  if (!(c.rope_theta > 1.0)) return FieldError(file, "rope_theta", "must exceed 1");
  if (c.rope_scaling.rope_type != "default" && c.rope_scaling.rope_type != "llama3") {
    return FieldError(file, "rope_scaling.rope_type", "must be default or llama3");
  }
  for (int32_t id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) return FieldError(file, "eos_token_id", "is out of range");
  }
  if (c.bos_token_id >= c.vocab_size) return FieldError(file, "bos_token_id", "is out of range");
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  TERN_ASSIGN_OR_RETURN(std::string config_text, ReadCheckpointFile(dir + "/config.json", 1 << 24));
  std::string generation_text;
  auto gen = ReadCheckpointFile(dir + "/generation_config.json", 1 << 24);
  if (gen.ok()) {
    generation_text = std::move(gen).value();
  } else if (!absl::IsNotFound(gen.status())) {
    return gen.status();
  }
  return ParseModelConfig(config_text, generation_text);
}

namespace {

json EosJson(const std::vector<int32_t>& ids) {
  if (ids.size() == 1) return ids[0];
  return ids;
}

}  // namespace

std::string ModelConfigToJson(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {c.architecture};
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (!c.eos_token_ids.empty()) j["eos_token_id"] = EosJson(c.eos_token_ids);
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.hidden_size;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = c.intermediate_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["mlp_bias"] = false;
  j["model_type"] = c.model_type;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["pretraining_tp"] = 1;
  j["rms_norm_eps"] = c.rms_norm_eps;
  if (c.llama3_rope()) {
    j["rope_scaling"] = {
        {"factor", c.rope_scaling.factor},
        {"high_freq_factor", c.rope_scaling.high_freq_factor},
        {"low_freq_factor", c.rope_scaling.low_freq_factor},
        {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings},
        {"rope_type", "llama3"}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["rope_theta"] = c.rope_theta;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = c.torch_dtype;
  j["transformers_version"] = "4.45.0";
  j["use_cache"] = true;
  j["vocab_size"] = c.vocab_size;
  return j.dump(2) + "\n";
}

std::string GenerationConfigToJson(const ModelConfig& c) {
  nlohmann::ordered_json j;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  j["do_sample"] = c.generation.do_sample;
  if (!c.eos_token_ids.empty()) j["eos_token_id"] = EosJson(c.eos_token_ids);
  j["temperature"] = c.generation.temperature;
  j["top_p"] = c.generation.top_p;
  j["transformers_version"] = "4.45.0";
  return j.dump(2) + "\n";
}

}  // namespace tern::worker
