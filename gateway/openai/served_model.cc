#include "gateway/openai/served_model.h"

#include <xxhash.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/config.h"
#include "common/process_metrics.h"
#include "common/status_macros.h"

namespace tern::gateway {
namespace {

using Json = nlohmann::json;

absl::StatusOr<Json> ReadJsonFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  std::stringstream text;
  text << in.rdbuf();
  try {
    return Json::parse(text.str());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", e.what()));
  }
}

// A special token as tokenizer_config.json writes it: "<s>" or {"content": "<s>", ...}.
std::string TokenText(const Json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    const auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  return "";
}

std::optional<double> Number(const Json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

}  // namespace

absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(const nlohmann::json& config) {
  if (!config.is_object())
    return absl::InvalidArgumentError("tokenizer_config.json: expected an object");
  TokenizerConfig result;
  result.bos_token = TokenText(config, "bos_token");
  result.eos_token = TokenText(config, "eos_token");
  const auto tmpl = config.find("chat_template");
  if (tmpl == config.end() || tmpl->is_null()) return result;
  if (tmpl->is_string()) {
    result.chat_template = tmpl->get<std::string>();
  } else if (tmpl->is_array()) {
    const Json* chosen = nullptr;
    for (const Json& entry : *tmpl) {
      if (!entry.is_object() || !entry.contains("template") || !entry["template"].is_string()) {
        return absl::InvalidArgumentError(
            "tokenizer_config.json: chat_template entries need a 'template' string");
      }
      if (chosen == nullptr || (entry.contains("name") && entry["name"] == "default"))
        chosen = &entry;
    }
    if (chosen != nullptr) result.chat_template = (*chosen)["template"].get<std::string>();
  } else {
    return absl::InvalidArgumentError(
        "tokenizer_config.json: chat_template must be a string or a list");
  }
  return result;
}

SamplingDefaults ParseGenerationConfig(const nlohmann::json& config) {
  SamplingDefaults defaults;
  if (!config.is_object()) return defaults;
  if (auto v = Number(config, "temperature"); v && *v >= 0 && *v <= 2) defaults.temperature = v;
  if (auto v = Number(config, "top_p"); v && *v > 0 && *v <= 1) defaults.top_p = v;
  if (auto v = Number(config, "top_k"); v && *v >= 0 && *v <= 1e9)
    defaults.top_k = static_cast<int32_t>(*v);
  if (auto v = Number(config, "min_p"); v && *v >= 0 && *v <= 1) defaults.min_p = v;
  if (auto v = Number(config, "repetition_penalty"); v && *v > 0) defaults.repetition_penalty = v;
  return defaults;
}

absl::StatusOr<std::unique_ptr<ServedModel>> LoadServedModel(const std::string& dir,
                                                             const std::string& served_name) {
  const std::filesystem::path root(dir);
  auto model = std::make_unique<ServedModel>();
  model->name = served_name;
  if (model->name.empty()) model->name = DefaultServedModelName(dir);
  if (model->name.empty())
    return absl::InvalidArgumentError(absl::StrCat("cannot derive a model name from ", dir));

  TERN_ASSIGN_OR_RETURN(model->tokenizer, Tokenizer::FromFile((root / "tokenizer.json").string()));
  TERN_ASSIGN_OR_RETURN(const Json config_json, ReadJsonFile(root / "tokenizer_config.json"));
  TERN_ASSIGN_OR_RETURN(const TokenizerConfig config, ParseTokenizerConfig(config_json));
  model->bos_token = config.bos_token;
  model->eos_token = config.eos_token;
  if (!config.chat_template.empty()) {
    absl::StatusOr<ChatTemplate> compiled = ChatTemplate::Compile(config.chat_template);
    if (!compiled.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chat template of ", dir, " does not compile: ", compiled.status().message()));
    }
    model->chat_template.emplace(std::move(compiled).value());
  }
  const std::filesystem::path generation = root / "generation_config.json";
  if (std::filesystem::exists(generation)) {
    TERN_ASSIGN_OR_RETURN(const Json generation_json, ReadJsonFile(generation));
    model->sampling_defaults = ParseGenerationConfig(generation_json);
  }
  // Changes with tern's version, the served name and the prompt format.
  const std::string identity = absl::StrCat(TernVersion(), "\n", TernCommit(), "\n", model->name,
                                            "\n", config.chat_template);
  model->system_fingerprint =
      absl::StrFormat("fp_%012x", XXH64(identity.data(), identity.size(), 0) & 0xffffffffffffULL);
  return model;
}

}  // namespace tern::gateway
