#include "cli/model/gguf_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/reference.h"
#include "nlohmann/json.hpp"
#include "worker/model/model.h"
#include "worker/model/model_config.h"
#include "worker/model/safetensors.h"

namespace tern::worker {
namespace {

using nlohmann::json;

// GGUF value types.
enum : uint32_t {
  kGgufUint32 = 4,
  kGgufInt32 = 5,
  kGgufFloat32 = 6,
  kGgufBool = 7,
  kGgufString = 8,
  kGgufArray = 9,
};
constexpr uint32_t kGgufVersion = 3;
constexpr uint64_t kAlignment = 32;           // general.alignment default
constexpr uint32_t kFileTypeAllF32 = 0;       // llama_ftype LLAMA_FTYPE_ALL_F32
constexpr uint32_t kFileTypeMostlyBf16 = 32;  // llama_ftype LLAMA_FTYPE_MOSTLY_BF16
constexpr uint32_t kFileTypeMostlyQ8_0 = 7;   // llama_ftype LLAMA_FTYPE_MOSTLY_Q8_0
constexpr uint32_t kQuantizationVersion = 2;
constexpr uint64_t kQ8BlockSize = 32;  // QK8_0

// tokenizer.ggml.token_type values (llama_token_type).
constexpr int32_t kTokenNormal = 1;
constexpr int32_t kTokenControl = 3;
constexpr int32_t kTokenUserDefined = 4;
constexpr int32_t kTokenUnused = 5;

template <typename T>
void Append(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(value));  // little-endian host
}
void AppendString(std::string& out, const std::string& s) {
  Append<uint64_t>(out, s.size());
  out.append(s);
}

// Bytes of n elements (n a multiple of 32 for Q8_0: 32 int8 + an f16 scale).
uint64_t TensorBytes(uint64_t n, GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return 4 * n;
    case GgmlType::kF16:
    case GgmlType::kBF16:
      return 2 * n;
    case GgmlType::kQ8_0:
      return n / kQ8BlockSize * (2 + kQ8BlockSize);
  }
  return 0;
}
uint64_t PadTo(uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

}  // namespace

// ---- AtomicFileWriter ----

AtomicFileWriter::AtomicFileWriter(std::string path, std::FILE* file)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp"), file_(file) {}

absl::StatusOr<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Create(
    const std::string& path) {
  std::FILE* f = std::fopen((path + ".tmp").c_str(), "wb");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot create ", path, ".tmp"));
  std::setvbuf(f, nullptr, _IOFBF, 1 << 20);
  return std::unique_ptr<AtomicFileWriter>(new AtomicFileWriter(path, f));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (file_ != nullptr) {
    std::fclose(file_);
    std::remove(tmp_path_.c_str());
  }
}

absl::Status AtomicFileWriter::Write(const void* data, size_t size) {
  if (file_ == nullptr) return absl::FailedPreconditionError("file already committed");
  if (size > 0 && std::fwrite(data, 1, size, file_) != size) {
    return absl::InternalError(absl::StrCat("write to ", tmp_path_, " failed"));
  }
  bytes_written_ += size;
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  if (file_ == nullptr) return absl::FailedPreconditionError("file already committed");
  const bool flushed = std::fflush(file_) == 0 && ::fsync(fileno(file_)) == 0;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed || std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    std::remove(tmp_path_.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", path_));
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& content) {
  TERN_ASSIGN_OR_RETURN(auto file, AtomicFileWriter::Create(path));
  TERN_RETURN_IF_ERROR(file->Write(content.data(), content.size()));
  return file->Commit();
}

// ---- GgufWriter ----

void GgufWriter::Key(const std::string& key, uint32_t value_type) {
  AppendString(metadata_, key);
  Append<uint32_t>(metadata_, value_type);
  ++metadata_count_;
}

void GgufWriter::AddString(const std::string& key, const std::string& value) {
  Key(key, kGgufString);
  AppendString(metadata_, value);
}
void GgufWriter::AddUint32(const std::string& key, uint32_t value) {
  Key(key, kGgufUint32);
  Append<uint32_t>(metadata_, value);
}
void GgufWriter::AddFloat32(const std::string& key, float value) {
  Key(key, kGgufFloat32);
  Append<float>(metadata_, value);
}
void GgufWriter::AddBool(const std::string& key, bool value) {
  Key(key, kGgufBool);
  Append<uint8_t>(metadata_, value ? 1 : 0);
}
void GgufWriter::AddStringArray(const std::string& key, const std::vector<std::string>& values) {
  Key(key, kGgufArray);
  Append<uint32_t>(metadata_, kGgufString);
  Append<uint64_t>(metadata_, values.size());
  for (const std::string& v : values) AppendString(metadata_, v);
}
void GgufWriter::AddInt32Array(const std::string& key, const std::vector<int32_t>& values) {
  Key(key, kGgufArray);
  Append<uint32_t>(metadata_, kGgufInt32);
  Append<uint64_t>(metadata_, values.size());
  for (int32_t v : values) Append<int32_t>(metadata_, v);
}

void GgufWriter::AddTensor(const std::string& name, std::vector<uint64_t> dims, GgmlType type,
                           TensorData write) {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;
  tensors_.push_back(Tensor{name, std::move(dims), type, std::move(write), TensorBytes(n, type)});
}

absl::Status GgufWriter::WriteFile(const std::string& path,
                                   const std::function<void(size_t, size_t)>& progress) const {
  std::string header;
  header.append("GGUF");
  Append<uint32_t>(header, kGgufVersion);
  Append<uint64_t>(header, tensors_.size());
  Append<uint64_t>(header, metadata_count_);
  header.append(metadata_);
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    AppendString(header, t.name);
    Append<uint32_t>(header, static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) Append<uint64_t>(header, d);
    Append<uint32_t>(header, static_cast<uint32_t>(t.type));
    Append<uint64_t>(header, offset);
    offset += PadTo(t.size_bytes);
  }
  header.resize(PadTo(header.size()), '\0');

  TERN_ASSIGN_OR_RETURN(auto file, AtomicFileWriter::Create(path));
  TERN_RETURN_IF_ERROR(file->Write(header.data(), header.size()));
  static const char kZeros[kAlignment] = {};
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const Tensor& t = tensors_[i];
    const uint64_t before = file->bytes_written();
    TERN_RETURN_IF_ERROR(t.write(*file));
    if (file->bytes_written() - before != t.size_bytes) {
      return absl::InternalError(absl::StrCat("tensor ", t.name, " wrote ",
                                              file->bytes_written() - before, " bytes, expected ",
                                              t.size_bytes));
    }
    TERN_RETURN_IF_ERROR(file->Write(kZeros, PadTo(t.size_bytes) - t.size_bytes));
    if (progress) progress(i + 1, tensors_.size());
  }
  return file->Commit();
}

// ---- Hugging Face Llama -> GGUF ----

namespace {

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  bool add_bos = false;
  std::string chat_template;
};

// A special token named in tokenizer_config.json: a string or {"content": ...}.
std::string TokenText(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

// Whether the post-processor's single-sequence template starts with `bos`.
bool TemplateAddsBos(const json& processor, const std::string& bos) {
  if (!processor.is_object()) return false;
  if (processor.value("type", "") == "Sequence" && processor.contains("processors") &&
      processor["processors"].is_array()) {
    for (const json& p : processor["processors"]) {
      if (TemplateAddsBos(p, bos)) return true;
    }
    return false;
  }
  if (processor.value("type", "") != "TemplateProcessing") return false;
  auto single = processor.find("single");
  if (single == processor.end() || !single->is_array() || single->empty()) return false;
  const json& first = (*single)[0];
  return first.is_object() && first.contains("SpecialToken") && first["SpecialToken"].is_object() &&
         first["SpecialToken"].value("id", "") == bos;
}

absl::StatusOr<Vocab> LoadVocab(const std::string& dir, int vocab_size) {
  TERN_ASSIGN_OR_RETURN(std::string tok_text,
                        ReadCheckpointFile(dir + "/tokenizer.json", size_t{256} << 20));
  json tok = json::parse(tok_text, nullptr, false);
  if (tok.is_discarded() || !tok.is_object() || !tok.contains("model") ||
      !tok["model"].is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: not a tokenizer object");
  }
  const json& model = tok["model"];
  if (model.value("type", "") != "BPE" || !model.contains("vocab") || !model["vocab"].is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: only BPE tokenizers are supported");
  }
  Vocab v;
  v.tokens.assign(vocab_size, "");
  v.types.assign(vocab_size, 0);
  auto set = [&](int64_t id, const std::string& text, int32_t type) -> absl::Status {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: token id ", id, " exceeds vocab_size ", vocab_size));
    }
    v.tokens[id] = text;
    v.types[id] = type;
    return absl::OkStatus();
  };
  for (const auto& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) return absl::InvalidArgumentError("tokenizer.json: bad vocab id");
    TERN_RETURN_IF_ERROR(set(id.get<int64_t>(), text, kTokenNormal));
  }
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
    for (const json& added : tok["added_tokens"]) {
      if (!added.is_object() || !added.contains("id") || !added["id"].is_number_integer() ||
          !added.contains("content") || !added["content"].is_string()) {
        return absl::InvalidArgumentError("tokenizer.json: malformed added_tokens entry");
      }
      const std::string text = added["content"].get<std::string>();
      const bool looks_special = text.size() >= 4 && text.rfind("<|", 0) == 0 &&
                                 text.compare(text.size() - 2, 2, "|>") == 0;
      const bool special = added.value("special", false) || looks_special;
      TERN_RETURN_IF_ERROR(
          set(added["id"].get<int64_t>(), text, special ? kTokenControl : kTokenUserDefined));
    }
  }
  for (int i = 0; i < vocab_size; ++i) {
    if (v.types[i] == 0) {
      v.tokens[i] = absl::StrCat("[PAD", i, "]");
      v.types[i] = kTokenUnused;
    }
  }
  if (model.contains("merges") && model["merges"].is_array()) {
    v.merges.reserve(model["merges"].size());
    for (const json& m : model["merges"]) {
      if (m.is_string()) {
        v.merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        v.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
      } else {
        return absl::InvalidArgumentError("tokenizer.json: malformed merge");
      }
    }
  }
  TERN_ASSIGN_OR_RETURN(std::string cfg_text,
                        ReadCheckpointFile(dir + "/tokenizer_config.json", size_t{64} << 20));
  json cfg = json::parse(cfg_text, nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object()) {
    return absl::InvalidArgumentError("tokenizer_config.json: not a JSON object");
  }
  const std::string bos = TokenText(cfg, "bos_token");
  const std::string eos = TokenText(cfg, "eos_token");
  for (int i = 0; i < vocab_size; ++i) {
    if (!bos.empty() && v.tokens[i] == bos && v.bos_id < 0) v.bos_id = i;
    if (!eos.empty() && v.tokens[i] == eos && v.eos_id < 0) v.eos_id = i;
  }
  if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) {
    v.add_bos = cfg["add_bos_token"].get<bool>();
  } else if (tok.contains("post_processor")) {
    v.add_bos = TemplateAddsBos(tok["post_processor"], bos);
  }
  if (cfg.contains("chat_template") && cfg["chat_template"].is_string()) {
    v.chat_template = cfg["chat_template"].get<std::string>();
  }
  return v;
}

// Per-pair frequency divisors for llama3 rope scaling, as convert_hf_to_gguf
// computes them (1 for high frequencies, factor for low, a smooth ramp).
std::vector<float> Llama3RopeFactors(const ModelConfig& c) {
  const RopeScalingConfig& r = c.rope_scaling;
  const double old_ctx = static_cast<double>(r.original_max_position_embeddings);
  const double low_wavelen = old_ctx / r.low_freq_factor;
  const double high_wavelen = old_ctx / r.high_freq_factor;
  std::vector<float> factors;
  for (int i = 0; i < c.head_dim / 2; ++i) {
    const float freq =
        static_cast<float>(1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / c.head_dim));
    const double wavelen = 2.0 * std::numbers::pi / freq;
    double f;
    if (wavelen < high_wavelen) {
      f = 1.0;
    } else if (wavelen > low_wavelen) {
      f = r.factor;
    } else {
      const double smooth =
          (old_ctx / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      f = 1.0 / ((1.0 - smooth) / r.factor + smooth);
    }
    factors.push_back(static_cast<float>(f));
  }
  return factors;
}

// Writes BF16 rows as they are, or widened (exactly) to F32.
absl::Status WriteRows(AtomicFileWriter& f, const uint16_t* data, size_t n, GgmlType type) {
  if (type == GgmlType::kBF16) return f.Write(data, n * 2);
  std::vector<float> wide(std::min<size_t>(n, size_t{1} << 20));
  for (size_t begin = 0; begin < n; begin += wide.size()) {
    const size_t count = std::min(wide.size(), n - begin);
    for (size_t i = 0; i < count; ++i) wide[i] = kernels::Bf16ToFloat(data[begin + i]);
    TERN_RETURN_IF_ERROR(f.Write(wide.data(), count * 4));
  }
  return absl::OkStatus();
}

GgufWriter::TensorData WriteMatrix(absl::Span<const uint16_t> data, GgmlType type) {
  return [data, type](AtomicFileWriter& f) { return WriteRows(f, data.data(), data.size(), type); };
}

// Rope row order: Hugging Face q/k rows hold each head as [first halves |
// second halves] (rotate-half); GGML's rope pairs adjacent elements. Row
// (h, i, j) of the output, j in {0, 1}, is row h*head_dim + j*head_dim/2 + i
// of the input.
std::vector<size_t> RopeRowOrder(int heads, int head_dim) {
  std::vector<size_t> order;
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < half; ++i) {
      for (int j = 0; j < 2; ++j) order.push_back(static_cast<size_t>(h) * head_dim + j * half + i);
    }
  }
  return order;
}

// The GGUF type a linear layer is written in: bf16 matrices as requested;
// int8 ones as Q8_0 holding the very same values (one f16 scale per 32
// weights: the row's scale, which the quantizer makes exactly representable
// in f16, repeated in each block; the codes as they are); FP8 ones
// dequantized to F32 (E4M3 value x scale, rounded once to f32), so llama.cpp
// computes them in f32 as our kernels do.
GgmlType LinearGgmlType(const LinearWeight& w, GgmlType bf16_type) {
  switch (w.format) {
    case WeightFormat::kBf16:
      return bf16_type;
    case WeightFormat::kInt8:
      return GgmlType::kQ8_0;
    case WeightFormat::kFp8:
      return GgmlType::kF32;
  }
  return bf16_type;
}

absl::Status CheckQ8Representable(const LinearWeight& w, const std::string& name) {
  if (w.cols % kQ8BlockSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ", w.cols, " columns are not a multiple of the Q8_0 block of 32"));
  }
  for (size_t r = 0; r < w.row_scales.size(); ++r) {
    const float s = w.row_scales[r];
    if (kernels::F16ToFloat(kernels::FloatToF16(s)) != s) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": row ", r, " scale ", s,
          " is not exactly representable in f16, so Q8_0 cannot hold these int8 weights exactly"));
    }
  }
  return absl::OkStatus();
}

// Writes the rows of `w` (in `order`, or in order when empty) as `type`.
GgufWriter::TensorData WriteLinear(const LinearWeight* w, GgmlType type,
                                   std::vector<size_t> order) {
  return [w, type, order = std::move(order)](AtomicFileWriter& f) -> absl::Status {
    const size_t rows = static_cast<size_t>(w->rows), cols = static_cast<size_t>(w->cols);
    std::vector<float> wide;
    std::vector<uint8_t> blocks;
    for (size_t i = 0; i < rows; ++i) {
      const size_t r = order.empty() ? i : order[i];
      if (w->format != WeightFormat::kBf16 && type != GgmlType::kQ8_0) {
        // Dequantized: code x scale, rounded once to f32.
        const float s = w->row_scales[r];
        const uint8_t* q = w->bytes.data() + r * cols;
        wide.resize(cols);
        for (size_t c = 0; c < cols; ++c) {
          wide[c] = (w->format == WeightFormat::kInt8
                         ? static_cast<float>(kernels::Int8FromOffsetByte(q[c]))
                         : kernels::Fp8E4M3ToFloat(q[c])) *
                    s;
        }
        TERN_RETURN_IF_ERROR(f.Write(wide.data(), cols * 4));
        continue;
      }
      switch (w->format) {
        case WeightFormat::kBf16:
          TERN_RETURN_IF_ERROR(WriteRows(f, w->bf16.data() + r * cols, cols, type));
          break;
        case WeightFormat::kInt8: {
          const uint16_t d = kernels::FloatToF16(w->row_scales[r]);
          const uint8_t* q = w->bytes.data() + r * cols;
          blocks.resize(cols / kQ8BlockSize * (2 + kQ8BlockSize));
          uint8_t* out = blocks.data();
          for (size_t c = 0; c < cols; c += kQ8BlockSize) {
            std::memcpy(out, &d, 2);
            for (size_t j = 0; j < kQ8BlockSize; ++j) {
              out[2 + j] = static_cast<uint8_t>(kernels::Int8FromOffsetByte(q[c + j]));
            }
            out += 2 + kQ8BlockSize;
          }
          TERN_RETURN_IF_ERROR(f.Write(blocks.data(), blocks.size()));
          break;
        }
        case WeightFormat::kFp8:
          return absl::InvalidArgumentError("FP8 weights have no Q8_0 form");
      }
    }
    return absl::OkStatus();
  };
}

GgufWriter::TensorData WriteF32(std::vector<float> values) {
  return [values = std::move(values)](AtomicFileWriter& f) {
    return f.Write(values.data(), values.size() * 4);
  };
}

std::vector<float> WidenBf16(absl::Span<const uint16_t> data) {
  std::vector<float> out(data.size());
  for (size_t i = 0; i < data.size(); ++i) out[i] = kernels::Bf16ToFloat(data[i]);
  return out;
}

}  // namespace

absl::Status ConvertCheckpointToGguf(const std::string& model_dir, const std::string& out_path,
                                     const std::function<void(const std::string&)>& progress,
                                     GgmlType weight_type) {
  if (weight_type != GgmlType::kBF16 && weight_type != GgmlType::kF32) {
    return absl::InvalidArgumentError("GGUF weights must be BF16 or F32");
  }
  const GgmlType wt = weight_type;
  TERN_ASSIGN_OR_RETURN(ModelConfig c, LoadModelConfig(model_dir));
  TERN_ASSIGN_OR_RETURN(auto ckpt, SafetensorsCheckpoint::OpenDir(model_dir));
  // The linear layers in whatever format the checkpoint holds them.
  TERN_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(model_dir));
  TERN_ASSIGN_OR_RETURN(Vocab vocab, LoadVocab(model_dir, c.vocab_size));

  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddString("general.type", "model");
  const size_t slash = model_dir.find_last_of('/');
  w.AddString("general.name", slash == std::string::npos ? model_dir : model_dir.substr(slash + 1));
  w.AddUint32("llama.block_count", c.num_hidden_layers);
  w.AddUint32("llama.context_length", static_cast<uint32_t>(c.max_position_embeddings));
  w.AddUint32("llama.embedding_length", c.hidden_size);
  w.AddUint32("llama.feed_forward_length", c.intermediate_size);
  w.AddUint32("llama.attention.head_count", c.num_attention_heads);
  w.AddUint32("llama.attention.head_count_kv", c.num_key_value_heads);
  w.AddFloat32("llama.rope.freq_base", static_cast<float>(c.rope_theta));
  w.AddFloat32("llama.attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  w.AddUint32("llama.attention.key_length", c.head_dim);
  w.AddUint32("llama.attention.value_length", c.head_dim);
  w.AddUint32("general.file_type", model->weight_format() == WeightFormat::kInt8
                                       ? kFileTypeMostlyQ8_0
                                   : wt == GgmlType::kBF16 ? kFileTypeMostlyBf16
                                                           : kFileTypeAllF32);
  w.AddUint32("llama.vocab_size", c.vocab_size);
  w.AddUint32("llama.rope.dimension_count", c.head_dim);
  w.AddString("tokenizer.ggml.model", "gpt2");
  w.AddString("tokenizer.ggml.pre", "llama-bpe");
  w.AddStringArray("tokenizer.ggml.tokens", vocab.tokens);
  w.AddInt32Array("tokenizer.ggml.token_type", vocab.types);
  w.AddStringArray("tokenizer.ggml.merges", vocab.merges);
  if (vocab.bos_id >= 0) w.AddUint32("tokenizer.ggml.bos_token_id", vocab.bos_id);
  if (vocab.eos_id >= 0) w.AddUint32("tokenizer.ggml.eos_token_id", vocab.eos_id);
  w.AddBool("tokenizer.ggml.add_bos_token", vocab.add_bos);
  if (!vocab.chat_template.empty()) w.AddString("tokenizer.chat_template", vocab.chat_template);
  w.AddUint32("general.quantization_version", kQuantizationVersion);

  const uint64_t d = c.hidden_size, vocab_size = c.vocab_size;
  auto get = [&](const std::string& name, std::vector<int64_t> shape) {
    return ckpt->GetBf16(name, shape);
  };
  if (c.llama3_rope()) {
    w.AddTensor("rope_freqs.weight", {static_cast<uint64_t>(c.head_dim / 2)}, GgmlType::kF32,
                WriteF32(Llama3RopeFactors(c)));
  }
  TERN_ASSIGN_OR_RETURN(auto embed,
                        get("model.embed_tokens.weight", {c.vocab_size, c.hidden_size}));
  w.AddTensor("token_embd.weight", {d, vocab_size}, wt, WriteMatrix(embed, wt));
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string hf = absl::StrCat("model.layers.", i, ".");
    const std::string gg = absl::StrCat("blk.", i, ".");
    TERN_ASSIGN_OR_RETURN(auto attn_norm, get(hf + "input_layernorm.weight", {c.hidden_size}));
    TERN_ASSIGN_OR_RETURN(auto ffn_norm,
                          get(hf + "post_attention_layernorm.weight", {c.hidden_size}));
    const Model::Layer& l = model->layer(i);
    const std::vector<size_t> q_order = RopeRowOrder(c.num_attention_heads, c.head_dim);
    const std::vector<size_t> k_order = RopeRowOrder(c.num_key_value_heads, c.head_dim);
    const struct {
      const char* name;
      const LinearWeight* weight;
      const std::vector<size_t>* order;
    } linears[] = {{"attn_q", &l.q, &q_order},     {"attn_k", &l.k, &k_order},
                   {"attn_v", &l.v, nullptr},      {"attn_output", &l.o, nullptr},
                   {"ffn_gate", &l.gate, nullptr}, {"ffn_up", &l.up, nullptr},
                   {"ffn_down", &l.down, nullptr}};
    w.AddTensor(gg + "attn_norm.weight", {d}, GgmlType::kF32, WriteF32(WidenBf16(attn_norm)));
    for (const auto& lin : linears) {
      const std::string name = gg + lin.name + ".weight";
      const GgmlType type = LinearGgmlType(*lin.weight, wt);
      if (type == GgmlType::kQ8_0) TERN_RETURN_IF_ERROR(CheckQ8Representable(*lin.weight, name));
      w.AddTensor(
          name, {static_cast<uint64_t>(lin.weight->cols), static_cast<uint64_t>(lin.weight->rows)},
          type,
          WriteLinear(lin.weight, type, lin.order != nullptr ? *lin.order : std::vector<size_t>()));
      if (std::string(lin.name) == "attn_output") {
        w.AddTensor(gg + "ffn_norm.weight", {d}, GgmlType::kF32, WriteF32(WidenBf16(ffn_norm)));
      }
    }
  }
  TERN_ASSIGN_OR_RETURN(auto out_norm, get("model.norm.weight", {c.hidden_size}));
  w.AddTensor("output_norm.weight", {d}, GgmlType::kF32, WriteF32(WidenBf16(out_norm)));
  // The lm_head as the engine computes with it by default
  // (LmHeadFormat::kAuto): an 8-bit model's bf16 lm_head quantized to int8,
  // written as Q8_0 in an int8 model's file and dequantized to F32 in an FP8
  // model's (as its linear layers are), so llama.cpp reads the same values.
  const LinearWeight& head = model->lm_head();
  LinearWeight quantized_head;
  std::vector<uint8_t> head_codes;
  if (QuantizesLmHead(LmHeadFormat::kAuto, model->weight_format(), head.format)) {
    quantized_head.format = WeightFormat::kInt8;
    quantized_head.rows = head.rows;
    quantized_head.cols = head.cols;
    head_codes.resize(static_cast<size_t>(head.rows * head.cols));
    quantized_head.row_scales.resize(static_cast<size_t>(head.rows));
    QuantizeRowsInt8(head.bf16, head.rows, head.cols, head_codes.data(),
                     quantized_head.row_scales.data());
    quantized_head.bytes = head_codes;
    const GgmlType type =
        model->weight_format() == WeightFormat::kInt8 ? GgmlType::kQ8_0 : GgmlType::kF32;
    if (type == GgmlType::kQ8_0) {
      TERN_RETURN_IF_ERROR(CheckQ8Representable(quantized_head, "output.weight"));
    }
    w.AddTensor("output.weight", {d, vocab_size}, type, WriteLinear(&quantized_head, type, {}));
  } else if (!c.tie_word_embeddings) {
    w.AddTensor("output.weight", {d, vocab_size}, LinearGgmlType(head, wt),
                WriteLinear(&head, LinearGgmlType(head, wt), {}));
  }
  const size_t slash_out = out_path.find_last_of('/');
  const std::string shown =
      slash_out == std::string::npos ? out_path : out_path.substr(slash_out + 1);
  return w.WriteFile(out_path, [&](size_t done, size_t total) {
    // About every 10%.
    if (progress && (done * 10 / total != (done - 1) * 10 / total || done == total)) {
      progress(absl::StrCat(shown, " ", done * 100 / total, "% (", done, "/", total, " tensors)"));
    }
  });
}

}  // namespace tern::worker
