#include "cli/model/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <regex>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "kernels/reference.h"
#include "nlohmann/json.hpp"
#include "worker/model/model_config.h"
#include "worker/model/safetensors.h"

namespace tern::worker {
namespace {

using nlohmann::ordered_json;
namespace fs = std::filesystem;
namespace k = ::tern::kernels;

// One tensor of the output file: its header entry and the callback that
// writes exactly `bytes` bytes of data.
struct OutTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
  std::function<absl::Status(AtomicFileWriter&)> write;
};

// A quantized matrix: codes (offset int8 bytes or E4M3 bytes) and scales.
struct Quantized {
  std::vector<uint8_t> codes;
  std::vector<float> scales;  // one per row, or one
};

Quantized QuantizeMatrix(absl::Span<const uint16_t> w, int64_t rows, int64_t cols,
                         const QuantizeOptions& o) {
  Quantized q;
  q.codes.resize(static_cast<size_t>(rows * cols));
  const bool per_row = o.format == WeightFormat::kInt8 || o.per_channel;
  auto amax_of = [&](size_t begin, size_t count) {
    float amax = 0.0f;
    for (size_t i = begin; i < begin + count; ++i) {
      amax = std::max(amax, std::fabs(k::Bf16ToFloat(w[i])));
    }
    return amax;
  };
  const size_t n = static_cast<size_t>(cols);
  float tensor_scale = 0.0f;
  if (!per_row) {
    const float amax = amax_of(0, w.size());
    tensor_scale = amax > 0.0f ? amax / k::kFp8E4M3Max : 1.0f;
    q.scales.push_back(tensor_scale);
  }
  for (size_t r = 0; r < static_cast<size_t>(rows); ++r) {
    const uint16_t* row = w.data() + r * n;
    uint8_t* out = q.codes.data() + r * n;
    if (o.format == WeightFormat::kInt8) {
      q.scales.push_back(0.0f);
      QuantizeRowsInt8(w.subspan(r * n, n), 1, cols, out, &q.scales.back());
      continue;
    }
    float scale = tensor_scale;
    if (per_row) {
      const float amax = amax_of(r * n, n);
      scale = amax > 0.0f ? amax / k::kFp8E4M3Max : 1.0f;
      q.scales.push_back(scale);
    }
    for (size_t c = 0; c < n; ++c) out[c] = k::FloatToFp8E4M3(k::Bf16ToFloat(row[c]) / scale);
  }
  return q;
}

// "model.layers.N.<module>.weight" of the seven linear layers, else nullopt.
bool IsLinearWeight(const std::string& name, std::string* module) {
  static const std::regex kLinear(
      R"((model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj))\.weight)");
  std::smatch m;
  if (!std::regex_match(name, m, kLinear)) return false;
  *module = m[1].str();
  return true;
}

// Sort key: layer number, then name, so progress follows the layers.
std::pair<int64_t, std::string> OrderKey(const std::string& name) {
  static const std::regex kLayer(R"(model\.layers\.(\d+)\..*)");
  std::smatch m;
  if (std::regex_match(name, m, kLayer)) return {std::stoll(m[1].str()), name};
  return {name.rfind("model.embed", 0) == 0 ? -1 : INT64_MAX, name};
}

ordered_json QuantizationConfigJson(const QuantizeOptions& o) {
  if (o.layout == QuantLayout::kModelOpt) {
    return {{"quant_method", "modelopt"},
            {"quant_algo", "FP8"},
            {"kv_cache_quant_algo", nullptr},
            {"exclude_modules", {"lm_head"}}};
  }
  const bool fp8 = o.format == WeightFormat::kFp8;
  const char* format = fp8 ? "float-quantized" : "pack-quantized";
  ordered_json weights = {
      {"num_bits", 8},         {"type", fp8 ? "float" : "int"},
      {"symmetric", true},     {"strategy", (!fp8 || o.per_channel) ? "channel" : "tensor"},
      {"group_size", nullptr}, {"block_structure", nullptr},
      {"dynamic", false},      {"actorder", nullptr},
      {"observer", "minmax"},  {"observer_kwargs", ordered_json::object()}};
  ordered_json group = {{"targets", {"Linear"}},
                        {"weights", weights},
                        {"input_activations", nullptr},
                        {"output_activations", nullptr},
                        {"format", format}};
  return {{"quant_method", "compressed-tensors"},
          {"format", format},
          {"config_groups", {{"group_0", group}}},
          {"ignore", {"lm_head"}},
          {"kv_cache_scheme", nullptr},
          {"quantization_status", "compressed"}};
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<OutTensor>& tensors) {
  ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const OutTensor& t : tensors) {
    header[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes}}};
    offset += t.bytes;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');  // 8-byte aligned data
  TERN_ASSIGN_OR_RETURN(auto file, AtomicFileWriter::Create(path));
  const uint64_t len = text.size();
  TERN_RETURN_IF_ERROR(file->Write(&len, 8));
  TERN_RETURN_IF_ERROR(file->Write(text.data(), text.size()));
  for (const OutTensor& t : tensors) {
    const uint64_t before = file->bytes_written();
    TERN_RETURN_IF_ERROR(t.write(*file));
    if (file->bytes_written() - before != t.bytes) {
      return absl::InternalError(absl::StrCat("tensor ", t.name, " wrote the wrong size"));
    }
  }
  return file->Commit();
}

absl::Status CopyAuxiliaryFiles(const std::string& in_dir, const std::string& out_dir) {
  for (const char* name : {"generation_config.json", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "chat_template.jinja"}) {
    const fs::path src = fs::path(in_dir) / name;
    std::error_code ec;
    if (!fs::exists(src, ec)) continue;
    fs::copy_file(src, fs::path(out_dir) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot copy ", name, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status QuantizeCheckpoint(const std::string& in_dir, const std::string& out_dir,
                                const QuantizeOptions& options) {
  const QuantizeOptions& o = options;
  if (o.format != WeightFormat::kInt8 && o.format != WeightFormat::kFp8) {
    return absl::InvalidArgumentError("quantize: the format must be int8 or fp8");
  }
  if (o.layout == QuantLayout::kModelOpt && (o.format != WeightFormat::kFp8 || o.per_channel)) {
    return absl::InvalidArgumentError(
        "quantize: the ModelOpt layout is written for FP8 with per-tensor scales only");
  }
  if (o.layout == QuantLayout::kNone) {
    return absl::InvalidArgumentError("quantize: a layout is required");
  }
  std::error_code ec;
  if (fs::equivalent(in_dir, out_dir, ec)) {
    return absl::InvalidArgumentError("quantize: the output directory must differ from the input");
  }
  TERN_ASSIGN_OR_RETURN(std::string config_text,
                        ReadCheckpointFile(in_dir + "/config.json", 1 << 24));
  TERN_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(in_dir));
  TERN_ASSIGN_OR_RETURN(QuantizationConfig existing, LoadQuantizationConfig(in_dir));
  if (existing.layout != QuantLayout::kNone) {
    return absl::InvalidArgumentError(absl::StrCat("quantize: ", in_dir, " is already quantized (",
                                                   QuantLayoutName(existing.layout), ")"));
  }
  TERN_ASSIGN_OR_RETURN(auto ckpt, SafetensorsCheckpoint::OpenDir(in_dir));
  if (o.format == WeightFormat::kInt8 &&
      (config.hidden_size % 4 != 0 || config.intermediate_size % 4 != 0 ||
       config.q_dim() % 4 != 0)) {
    return absl::InvalidArgumentError("quantize: int8 packing needs dimensions divisible by 4");
  }

  std::vector<std::string> names = ckpt->TensorNames();
  std::sort(names.begin(), names.end(),
            [](const std::string& a, const std::string& b) { return OrderKey(a) < OrderKey(b); });
  // Quantized matrices wait here between their codes and their scales.
  auto pending = std::make_shared<std::map<std::string, Quantized>>();
  size_t linear_count = 0;
  std::string module;
  for (const std::string& name : names) linear_count += IsLinearWeight(name, &module) ? 1 : 0;
  auto done = std::make_shared<size_t>(0);

  std::vector<OutTensor> out;
  for (const std::string& name : names) {
    TERN_ASSIGN_OR_RETURN(const TensorInfo* info, ckpt->Info(name));
    if (info->bf16.empty() && !info->raw.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("quantize: tensor ", name, " is ",
                                                     TensorDTypeName(info->stored_dtype),
                                                     "; the input must be a bf16 checkpoint"));
    }
    const absl::Span<const uint16_t> values = info->bf16;
    if (!IsLinearWeight(name, &module) || info->shape.size() != 2) {
      out.push_back({name, "BF16", info->shape, values.size() * 2, [values](AtomicFileWriter& f) {
                       return f.Write(values.data(), values.size() * 2);
                     }});
      continue;
    }
    const int64_t rows = info->shape[0], cols = info->shape[1];
    const uint64_t elements = static_cast<uint64_t>(rows * cols);
    auto quantize = [=, &o](AtomicFileWriter& f) -> absl::Status {
      Quantized q = QuantizeMatrix(values, rows, cols, o);
      TERN_RETURN_IF_ERROR(f.Write(q.codes.data(), q.codes.size()));
      (*pending)[module] = std::move(q);
      ++*done;
      if (o.progress) {
        o.progress(absl::StrFormat("[%d/%d] %s %s [%d, %d]", *done, linear_count,
                                   WeightFormatName(o.format), module, rows, cols));
      }
      return absl::OkStatus();
    };
    const bool per_row = o.format == WeightFormat::kInt8 || o.per_channel;
    const int64_t scale_count = per_row ? rows : 1;
    std::vector<int64_t> scale_shape = {rows, 1};
    if (!per_row) {
      scale_shape =
          o.layout == QuantLayout::kModelOpt ? std::vector<int64_t>{} : std::vector<int64_t>{1};
    }
    auto write_scales = [pending, module](AtomicFileWriter& f) -> absl::Status {
      auto it = pending->find(module);
      if (it == pending->end()) return absl::InternalError("scales written before their weights");
      const absl::Status s = f.Write(it->second.scales.data(), it->second.scales.size() * 4);
      pending->erase(it);
      return s;
    };
    if (o.format == WeightFormat::kInt8) {
      out.push_back({module + ".weight_packed", "I32", {rows, cols / 4}, elements, quantize});
      out.push_back({module + ".weight_scale", "F32", scale_shape,
                     static_cast<uint64_t>(scale_count) * 4, write_scales});
      const int64_t shape[2] = {rows, cols};
      out.push_back({module + ".weight_shape", "I64", {2}, 16, [shape](AtomicFileWriter& f) {
                       return f.Write(shape, sizeof(shape));
                     }});
    } else {
      out.push_back({module + ".weight", "F8_E4M3", {rows, cols}, elements, quantize});
      out.push_back({module + ".weight_scale", "F32", scale_shape,
                     static_cast<uint64_t>(scale_count) * 4, write_scales});
    }
  }

  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  for (const char* stale : {"model.safetensors.index.json", "model.gguf", "hf_quant_config.json"}) {
    fs::remove(fs::path(out_dir) / stale, ec);
  }
  TERN_RETURN_IF_ERROR(CopyAuxiliaryFiles(in_dir, out_dir));
  ordered_json cfg = ordered_json::parse(config_text, nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  cfg["quantization_config"] = QuantizationConfigJson(o);
  TERN_RETURN_IF_ERROR(WriteFileAtomically(out_dir + "/config.json", cfg.dump(2) + "\n"));
  if (o.layout == QuantLayout::kModelOpt) {
    const ordered_json hf = {{"producer", {{"name", "tern"}}},
                             {"quantization",
                              {{"quant_algo", "FP8"},
                               {"kv_cache_quant_algo", nullptr},
                               {"exclude_modules", {"lm_head"}}}}};
    TERN_RETURN_IF_ERROR(WriteFileAtomically(out_dir + "/hf_quant_config.json", hf.dump(2) + "\n"));
  }
  TERN_RETURN_IF_ERROR(WriteSafetensors(out_dir + "/model.safetensors", out));
  if (o.progress) o.progress(absl::StrCat("wrote ", out_dir, "/model.safetensors"));
  if (o.write_gguf) {
    TERN_RETURN_IF_ERROR(
        ConvertCheckpointToGguf(out_dir, out_dir + "/model.gguf", o.progress, o.gguf_weight_type));
  }
  return absl::OkStatus();
}

}  // namespace tern::worker
