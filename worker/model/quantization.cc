#include "worker/model/quantization.h"

#include <algorithm>
#include <cmath>
#include <regex>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/reference.h"
#include "nlohmann/json.hpp"
#include "worker/model/model_config.h"

namespace tern::worker {
namespace {

using nlohmann::json;

absl::Status Unsupported(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("quantization_config: ", what));
}

std::string Str(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

absl::StatusOr<std::vector<std::string>> StringList(const json& obj, const char* key) {
  std::vector<std::string> out;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return out;
  if (!it->is_array()) return Unsupported(absl::StrCat("\"", key, "\" must be a list of strings"));
  for (const json& v : *it) {
    if (!v.is_string()) return Unsupported(absl::StrCat("\"", key, "\" must hold strings only"));
    out.push_back(v.get<std::string>());
  }
  return out;
}

// `*` matches any run of characters (ModelOpt's fnmatch-style patterns).
bool GlobMatch(const std::string& pattern, const std::string& name) {
  size_t p = 0, n = 0, star = std::string::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (p < pattern.size() && pattern[p] == name[n]) {
      ++p;
      ++n;
    } else if (star != std::string::npos) {
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

absl::StatusOr<QuantizationConfig> ParseModelOpt(const json& q) {
  QuantizationConfig out;
  out.layout = QuantLayout::kModelOpt;
  out.format = WeightFormat::kFp8;
  out.strategy = "tensor";
  const std::string algo = Str(q, "quant_algo");
  if (algo != "FP8") {
    return Unsupported(absl::StrCat("modelopt quant_algo \"", algo,
                                    "\" is not supported (FP8 with per-tensor scales only)"));
  }
  TERN_ASSIGN_OR_RETURN(out.ignore, StringList(q, "exclude_modules"));
  TERN_ASSIGN_OR_RETURN(std::vector<std::string> ignore, StringList(q, "ignore"));
  out.ignore.insert(out.ignore.end(), ignore.begin(), ignore.end());
  return out;
}

absl::StatusOr<QuantizationConfig> ParseCompressedTensors(const json& q) {
  QuantizationConfig out;
  out.layout = QuantLayout::kCompressedTensors;
  const std::string top_format = Str(q, "format");
  auto groups = q.find("config_groups");
  if (groups == q.end() || !groups->is_object() || groups->empty()) {
    return Unsupported("compressed-tensors needs a non-empty \"config_groups\" object");
  }
  bool first = true;
  for (const auto& [group_name, group] : groups->items()) {
    const std::string where = absl::StrCat("config_groups.", group_name);
    if (!group.is_object()) return Unsupported(where + " is not an object");
    auto weights = group.find("weights");
    if (weights == group.end() || !weights->is_object()) {
      return Unsupported(where + ".weights is missing (weight quantization is required)");
    }
    const json& w = *weights;
    const int bits = w.value("num_bits", 0);
    if (bits != 8) {
      return Unsupported(
          absl::StrCat(where, ".weights.num_bits ", bits, " is not supported (8 only)"));
    }
    const std::string type = Str(w, "type");
    const std::string strategy = Str(w, "strategy");
    if (strategy != "tensor" && strategy != "channel") {
      return Unsupported(absl::StrCat(where, ".weights.strategy \"", strategy,
                                      "\" is not supported (tensor or channel; group and "
                                      "block-wise scales are not)"));
    }
    if (!w.value("symmetric", true)) {
      return Unsupported(where + ".weights.symmetric false (zero points) is not supported");
    }
    if (w.value("dynamic", false)) {
      return Unsupported(where + ".weights.dynamic true is not supported");
    }
    auto acts = group.find("input_activations");
    if (acts != group.end() && acts->is_object()) {
      const int act_bits = acts->value("num_bits", 0);
      if (act_bits != 8) {
        return Unsupported(absl::StrCat(where, ".input_activations.num_bits ", act_bits,
                                        " is not supported (8-bit schemes only; the engine "
                                        "computes activations in f32)"));
      }
    }
    std::string format = Str(group, "format");
    if (format.empty()) format = top_format;
    WeightFormat wf;
    if (type == "float") {
      if (format != "float-quantized") {
        return Unsupported(absl::StrCat(where, ": FP8 weights in format \"", format,
                                        "\" are not supported (float-quantized only)"));
      }
      wf = WeightFormat::kFp8;
    } else if (type == "int") {
      if (format != "pack-quantized") {
        return Unsupported(absl::StrCat(where, ": int8 weights in format \"", format,
                                        "\" are not supported (pack-quantized only)"));
      }
      wf = WeightFormat::kInt8;
    } else {
      return Unsupported(absl::StrCat(where, ".weights.type \"", type, "\" is not supported"));
    }
    if (!first && (wf != out.format || strategy != out.strategy)) {
      return Unsupported("config groups with different weight schemes are not supported");
    }
    out.format = wf;
    out.strategy = strategy;
    first = false;
  }
  TERN_ASSIGN_OR_RETURN(out.ignore, StringList(q, "ignore"));
  return out;
}

}  // namespace

const char* WeightFormatName(WeightFormat format) {
  switch (format) {
    case WeightFormat::kBf16:
      return "bf16";
    case WeightFormat::kInt8:
      return "int8";
    case WeightFormat::kFp8:
      return "fp8";
  }
  return "?";
}

const char* QuantLayoutName(QuantLayout layout) {
  switch (layout) {
    case QuantLayout::kNone:
      return "none";
    case QuantLayout::kModelOpt:
      return "modelopt";
    case QuantLayout::kCompressedTensors:
      return "compressed-tensors";
  }
  return "?";
}

bool QuantizationConfig::Ignores(const std::string& name) const {
  for (const std::string& pattern : ignore) {
    if (pattern.rfind("re:", 0) == 0) {
      try {
        if (std::regex_match(name, std::regex(pattern.substr(3)))) return true;
      } catch (const std::regex_error&) {
        // An unusable pattern ignores nothing; the layer's stored dtype
        // decides how it loads anyway.
      }
    } else if (GlobMatch(pattern, name)) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<QuantizationConfig> ParseQuantizationConfig(
    const std::string& config_json, const std::string& hf_quant_config_json) {
  const json config = json::parse(config_json, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  auto qc = config.find("quantization_config");
  if (qc != config.end() && !qc->is_null()) {
    if (!qc->is_object()) return Unsupported("not a JSON object");
    const std::string method = Str(*qc, "quant_method");
    if (method == "modelopt") return ParseModelOpt(*qc);
    if (method == "compressed-tensors") return ParseCompressedTensors(*qc);
    if (method == "fp8") {
      return Unsupported(
          "quant_method \"fp8\" (block-wise FP8 scales) is not supported; use a ModelOpt or "
          "compressed-tensors FP8 checkpoint with per-tensor or per-channel scales");
    }
    return Unsupported(absl::StrCat("quant_method \"", method,
                                    "\" is not supported (modelopt FP8, compressed-tensors FP8 "
                                    "or int8 only)"));
  }
  if (!hf_quant_config_json.empty()) {
    const json hf = json::parse(hf_quant_config_json, nullptr, false);
    if (hf.is_discarded() || !hf.is_object() || !hf.contains("quantization") ||
        !hf["quantization"].is_object()) {
      return absl::InvalidArgumentError(
          "hf_quant_config.json: expected an object with a \"quantization\" object");
    }
    return ParseModelOpt(hf["quantization"]);
  }
  return QuantizationConfig{};
}

absl::StatusOr<QuantizationConfig> LoadQuantizationConfig(const std::string& dir) {
  TERN_ASSIGN_OR_RETURN(std::string config_text, ReadCheckpointFile(dir + "/config.json", 1 << 24));
  std::string hf_text;
  auto hf = ReadCheckpointFile(dir + "/hf_quant_config.json", 1 << 24);
  if (hf.ok()) {
    hf_text = std::move(hf).value();
  } else if (!absl::IsNotFound(hf.status())) {
    return hf.status();
  }
  return ParseQuantizationConfig(config_text, hf_text);
}

float Int8RowScale(float amax) {
  namespace k = ::tern::kernels;
  if (!(amax > 0.0f)) return 1.0f;
  uint16_t h = k::FloatToF16(amax / 127.0f);
  // Round up, so round(w / scale) never exceeds 127 in magnitude.
  if (k::F16ToFloat(h) < amax / 127.0f) ++h;
  return k::F16ToFloat(h);
}

void QuantizeRowsInt8(absl::Span<const uint16_t> bf16, int64_t rows, int64_t cols, uint8_t* codes,
                      float* scales) {
  namespace k = ::tern::kernels;
  const size_t n = static_cast<size_t>(cols);
  for (size_t r = 0; r < static_cast<size_t>(rows); ++r) {
    const uint16_t* row = bf16.data() + r * n;
    float amax = 0.0f;
    for (size_t c = 0; c < n; ++c) amax = std::max(amax, std::fabs(k::Bf16ToFloat(row[c])));
    const float scale = Int8RowScale(amax);
    scales[r] = scale;
    uint8_t* out = codes + r * n;
    for (size_t c = 0; c < n; ++c) {
      const float v = std::nearbyint(k::Bf16ToFloat(row[c]) / scale);
      out[c] = k::OffsetByteFromInt8(static_cast<int32_t>(std::clamp(v, -127.0f, 127.0f)));
    }
  }
}

absl::StatusOr<LmHeadFormat> ParseLmHeadFormat(const std::string& text) {
  if (text == "auto") return LmHeadFormat::kAuto;
  if (text == "as-stored") return LmHeadFormat::kAsStored;
  if (text == "int8") return LmHeadFormat::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("lm_head format '", text, "': expected auto, as-stored or int8"));
}

bool QuantizesLmHead(LmHeadFormat choice, WeightFormat linear_format, WeightFormat lm_head_format) {
  if (lm_head_format != WeightFormat::kBf16) return false;
  switch (choice) {
    case LmHeadFormat::kAuto:
      return linear_format != WeightFormat::kBf16;
    case LmHeadFormat::kAsStored:
      return false;
    case LmHeadFormat::kInt8:
      return true;
  }
  return false;
}

}  // namespace tern::worker
