#include "cli/model/synth.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <string_view>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/model/gguf_writer.h"
#include "common/status_macros.h"
#include "kernels/reference.h"
#include "nlohmann/json.hpp"

namespace tern::worker {
namespace {

using nlohmann::ordered_json;
namespace fs = std::filesystem;

// How the weights are built. A network of independent random weights gives
// nearly Gaussian logits over 128256 tokens whose top-2 gap is typically a
// fifth of their spread and often far less: greedy decoding would then hinge
// on rounding (llama.cpp's bf16 matmuls move logits by ~1%), so parity tests
// could not be meaningful, and sampling would be close to uniform noise. The
// checkpoint is therefore random but structured, like a trained model that
// copies from its context:
//  - Embeddings E: std kLogitScale / sqrt(hidden). Logits are E_v . h with h
//    normalized; an embedding that dominates h gives its own row a lead of
//    about sqrt(hidden) times the spread of the other logits.
//  - Attention copies (layer 0): for head h, o_proj's columns are
//    copy_gain * kHeadDecay^h * hidden * std_E / head_dim times the
//    transpose of the head's v_proj rows (o.v is then a scaled projection),
//    so each head adds the embeddings it attends to; decaying head gains
//    avoid exact ties between heads. Later layers have small random o_proj
//    (output rms ~block_gain * std_E): copying again in every layer blurs the
//    copies and, in deep models, collapses onto one token.
//  - Tied models copy (copy_gain kTiedCopyGain): the next token is a context
//    token picked by the rotary, position-dependent attention pattern.
//    Untied models predict successors (copy_gain kUntiedCopyGain, weak copies
//    so the current token dominates): lm_head row v is
//    E[(kPermMul * v + 1) mod vocab], so the top logit is the token whose
//    lm_head row is the current token's embedding.
//  - q and k: std kQkGain / sqrt(hidden), attention scores of std ~kQkGain^2.
//  - v, gate, up: std 1 / sqrt(fan_in).
//  - down_proj: MLP output rms ~block_gain * std_E; it perturbs the logits
//    without drowning the copied embeddings. block_gain is
//    kBlockGain * sqrt(2 / layers), so the random blocks of deep models add
//    up to the same total as a 2-layer one's.
//  - Norm weights: 1 +/- kNormSpread.
// Elements are uniform in [-a, a] (a = sqrt(3) * std), rounded to bf16.
// Measured on 16 random prompts x 32 greedy steps against llama.cpp (bf16):
// top1-top2 margins p5 / p10 / median: tiny 0.31 / 0.79 / 6.9 (4.9 distinct
// tokens per 32), tiny-untied 12.9 / 14.4 / 18.4 (32 distinct), while
// llama.cpp's bf16 margins differ from ours by at most 0.17 (p99 0.10).
// small (untied): predicts successor tokens like tiny-untied.
constexpr double kLogitScale = 4.0;
constexpr double kQkGain = 2.0;
constexpr double kTiedCopyGain = 2.0;
constexpr double kUntiedCopyGain = 0.3;
constexpr double kHeadDecay = 0.5;
constexpr double kBlockGain = 0.25;
constexpr double kNormSpread = 0.1;
constexpr uint64_t kPermMul = 7919;  // odd, prime to 3 and 167: a bijection mod 128256

using ElementFn = std::function<float(uint64_t)>;

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  ElementFn value;  // element (row-major index) -> value
  uint64_t bytes() const {
    uint64_t n = 2;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    return n;
  }
};

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t TensorKey(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ull;
  return Mix64(Mix64(seed) ^ h);
}

// Uniform in [-1, 1), a pure function of (key, index).
float UnitUniform(uint64_t key, uint64_t index) {
  const uint64_t r = Mix64(key + (index + 1) * 0x9e3779b97f4a7c15ull);
  return static_cast<float>(r >> 40) * 0x1.0p-23f - 1.0f;
}

ElementFn Random(uint64_t seed, const std::string& name, double std) {
  const uint64_t key = TensorKey(seed, name);
  const float amplitude = static_cast<float>(std::sqrt(3.0) * std);
  return [key, amplitude](uint64_t i) { return amplitude * UnitUniform(key, i); };
}

ElementFn NormWeight(uint64_t seed, const std::string& name) {
  const uint64_t key = TensorKey(seed, name);
  return [key](uint64_t i) { return 1.0f + static_cast<float>(kNormSpread) * UnitUniform(key, i); };
}

// Elements [begin, begin + out.size()) of a tensor, as BF16.
void GenerateBf16(const TensorSpec& spec, uint64_t begin, absl::Span<uint16_t> out) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = kernels::FloatToBf16(spec.value(begin + i));
}

ModelConfig BaseConfig() {
  ModelConfig c;
  c.vocab_size = 128256;
  c.max_position_embeddings = 131072;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  c.rope_scaling.rope_type = "llama3";
  c.rope_scaling.factor = 32.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 8192;
  c.tie_word_embeddings = true;
  c.bos_token_id = 128000;
  c.eos_token_ids = {128001, 128008, 128009};
  c.generation.do_sample = true;
  c.generation.temperature = 0.6;
  c.generation.top_p = 0.9;
  return c;
}

void SetShape(ModelConfig& c, int hidden, int ffn, int layers, int heads, int kv_heads) {
  c.hidden_size = hidden;
  c.intermediate_size = ffn;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = hidden / heads;
}

std::vector<TensorSpec> TensorSpecs(const ModelConfig& c, uint64_t seed) {
  const int64_t d = c.hidden_size, ffn = c.intermediate_size, v = c.vocab_size;
  const int64_t q = c.q_dim(), kv = c.kv_dim(), hd = c.head_dim;
  const int64_t group = c.num_attention_heads / c.num_key_value_heads;
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(d));
  const double embed_std = kLogitScale * inv_sqrt_d;
  const double block_gain = kBlockGain * std::sqrt(2.0 / c.num_hidden_layers);
  std::vector<TensorSpec> specs;
  const std::string embed_name = "model.embed_tokens.weight";
  const ElementFn embed = Random(seed, embed_name, embed_std);
  specs.push_back({embed_name, {v, d}, embed});
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    const std::string v_name = p + "self_attn.v_proj.weight";
    const ElementFn v_proj = Random(seed, v_name, inv_sqrt_d);
    // o_proj[r, h * hd + j] = copy_scale * decay^h * v_proj[(h / group) * hd + j, r].
    const double copy_gain = c.tie_word_embeddings ? kTiedCopyGain : kUntiedCopyGain;
    const float copy_scale = static_cast<float>(copy_gain * d * embed_std / hd);
    ElementFn o_proj = [=](uint64_t e) {
      const uint64_t row = e / q, col = e % q;
      const uint64_t head = col / hd, j = col % hd;
      const float decay = static_cast<float>(std::pow(kHeadDecay, static_cast<double>(head)));
      return copy_scale * decay * v_proj(((head / group) * hd + j) * d + row);
    };
    if (i > 0) {
      // Later layers: a small random attention output (rms ~block_gain * std_E),
      // so the copies of layer 0 are not re-copied into a blur.
      o_proj = Random(seed, p + "self_attn.o_proj.weight",
                      block_gain * embed_std / std::sqrt(static_cast<double>(q)));
    }
    // silu(gate) * up has rms ~0.5 for unit-variance inputs.
    const double down_std = 2.0 * block_gain * embed_std / std::sqrt(static_cast<double>(ffn));
    specs.push_back({p + "input_layernorm.weight", {d}, NormWeight(seed, p + "input_layernorm")});
    specs.push_back({p + "self_attn.q_proj.weight",
                     {q, d},
                     Random(seed, p + "self_attn.q_proj.weight", kQkGain * inv_sqrt_d)});
    specs.push_back({p + "self_attn.k_proj.weight",
                     {kv, d},
                     Random(seed, p + "self_attn.k_proj.weight", kQkGain * inv_sqrt_d)});
    specs.push_back({v_name, {kv, d}, v_proj});
    specs.push_back({p + "self_attn.o_proj.weight", {d, q}, o_proj});
    specs.push_back({p + "post_attention_layernorm.weight",
                     {d},
                     NormWeight(seed, p + "post_attention_layernorm")});
    specs.push_back({p + "mlp.gate_proj.weight",
                     {ffn, d},
                     Random(seed, p + "mlp.gate_proj.weight", inv_sqrt_d)});
    specs.push_back(
        {p + "mlp.up_proj.weight", {ffn, d}, Random(seed, p + "mlp.up_proj.weight", inv_sqrt_d)});
    specs.push_back(
        {p + "mlp.down_proj.weight", {d, ffn}, Random(seed, p + "mlp.down_proj.weight", down_std)});
  }
  specs.push_back({"model.norm.weight", {d}, NormWeight(seed, "model.norm")});
  if (!c.tie_word_embeddings) {
    // lm_head[t] = E[(kPermMul * t + 1) mod vocab].
    specs.push_back({"lm_head.weight", {v, d}, [=](uint64_t e) {
                       const uint64_t row = e / d, col = e % d;
                       const uint64_t source = (kPermMul * row + 1) % static_cast<uint64_t>(v);
                       return embed(source * d + col);
                     }});
  }
  return specs;
}

// Reports at most every 5% of the total bytes.
class Progress {
 public:
  Progress(const std::function<void(const std::string&)>& sink, uint64_t total)
      : sink_(sink), total_(total) {}
  void Advance(uint64_t bytes, const std::string& what) {
    done_ += bytes;
    const int pct = total_ == 0 ? 100 : static_cast<int>(done_ * 100 / total_);
    if (sink_ && (pct / 5 != last_ / 5 || done_ == total_)) {
      sink_(absl::StrFormat("safetensors %3d%% (%s)", pct, what));
    }
    last_ = pct;
  }

 private:
  const std::function<void(const std::string&)>& sink_;
  uint64_t total_;
  uint64_t done_ = 0;
  int last_ = 0;
};

absl::Status WriteShard(const std::string& path, const std::vector<const TensorSpec*>& tensors,
                        Progress& progress) {
  ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const TensorSpec* t : tensors) {
    header[t->name] = {
        {"dtype", "BF16"}, {"shape", t->shape}, {"data_offsets", {offset, offset + t->bytes()}}};
    offset += t->bytes();
  }
  std::string header_text = header.dump();
  header_text.resize((header_text.size() + 7) / 8 * 8, ' ');  // 8-byte aligned data
  TERN_ASSIGN_OR_RETURN(auto file, AtomicFileWriter::Create(path));
  const uint64_t header_len = header_text.size();
  TERN_RETURN_IF_ERROR(file->Write(&header_len, 8));
  TERN_RETURN_IF_ERROR(file->Write(header_text.data(), header_text.size()));
  std::vector<uint16_t> buffer(size_t{1} << 20);
  for (const TensorSpec* t : tensors) {
    const uint64_t n = t->bytes() / 2;
    for (uint64_t begin = 0; begin < n; begin += buffer.size()) {
      const size_t count = static_cast<size_t>(std::min<uint64_t>(buffer.size(), n - begin));
      GenerateBf16(*t, begin, absl::MakeSpan(buffer.data(), count));
      TERN_RETURN_IF_ERROR(file->Write(buffer.data(), count * 2));
    }
    progress.Advance(t->bytes(), t->name);
  }
  return file->Commit();
}

absl::Status WriteTokenizerFiles(const SynthOptions& options, const ModelConfig& config,
                                 const std::string& out_dir) {
  TERN_ASSIGN_OR_RETURN(
      std::string tokenizer,
      ReadCheckpointFile(options.tokenizer_dir + "/tokenizer.json", size_t{256} << 20));
  // Plain json: ordered_json inserts in linear time per key (quadratic here).
  const nlohmann::json tok = nlohmann::json::parse(tokenizer, nullptr, false);
  if (tok.is_discarded() || !tok.is_object() || !tok.contains("model") ||
      !tok["model"].is_object() || !tok["model"].contains("vocab") ||
      !tok["model"]["vocab"].is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: not a BPE tokenizer");
  }
  int64_t max_id = -1;
  for (const auto& [text, id] : tok["model"]["vocab"].items()) {
    if (id.is_number_integer()) max_id = std::max<int64_t>(max_id, id.get<int64_t>());
  }
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
    for (const auto& added : tok["added_tokens"]) {
      if (added.is_object() && added.contains("id") && added["id"].is_number_integer()) {
        max_id = std::max<int64_t>(max_id, added["id"].get<int64_t>());
      }
    }
  }
  if (max_id >= config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json has token id ", max_id,
                                                   " but the model vocabulary is ",
                                                   config.vocab_size));
  }
  TERN_ASSIGN_OR_RETURN(std::string tok_config_text,
                        ReadCheckpointFile(options.tokenizer_dir + "/tokenizer_config.json"));
  ordered_json tok_config = ordered_json::parse(tok_config_text, nullptr, false);
  if (tok_config.is_discarded() || !tok_config.is_object()) {
    return absl::InvalidArgumentError("tokenizer_config.json: not a JSON object");
  }
  if (!options.chat_template.empty()) tok_config["chat_template"] = options.chat_template;
  TERN_RETURN_IF_ERROR(WriteFileAtomically(out_dir + "/tokenizer.json", tokenizer));
  return WriteFileAtomically(out_dir + "/tokenizer_config.json", tok_config.dump(2) + "\n");
}

// Removes weight files a previous run may have left with other sharding.
void RemoveStaleWeights(const std::string& out_dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(out_dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool shard = name.rfind("model-", 0) == 0 && name.find("-of-") != std::string::npos &&
                       name.size() > 12 && name.substr(name.size() - 12) == ".safetensors";
    if (shard || name == "model.safetensors" || name == "model.safetensors.index.json" ||
        name == "model.gguf" || name == "hf_quant_config.json") {
      fs::remove(entry.path(), ec);
    }
  }
}

}  // namespace

std::vector<std::string> SynthPresetNames() { return {"tiny", "tiny-untied", "small", "1b"}; }

absl::StatusOr<ModelConfig> SynthPresetConfig(const std::string& preset) {
  ModelConfig c = BaseConfig();
  if (preset == "tiny") {
    // Llama 3.2 style: tied embeddings, grouped-query attention.
    SetShape(c, /*hidden=*/128, /*ffn=*/256, /*layers=*/2, /*heads=*/4, /*kv_heads=*/2);
  } else if (preset == "tiny-untied") {
    // Llama 3.1 style: separate lm_head, rope factor 8; multi-head attention.
    SetShape(c, 128, 384, 3, 4, 4);
    c.tie_word_embeddings = false;
    c.rope_scaling.factor = 8.0;
  } else if (preset == "small") {
    // ~111M parameters, 98M of them in the untied embeddings and lm_head.
    // Untied (like Llama 3.1 8B) so the demo predicts a new token each step
    // instead of copying the prompt back.
    SetShape(c, 384, 1024, 8, 6, 2);
    c.tie_word_embeddings = false;
    c.rope_scaling.factor = 8.0;
  } else if (preset == "1b") {
    // Llama-3.2-1B shapes.
    SetShape(c, 2048, 8192, 16, 32, 8);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown preset \"", preset, "\" (tiny, tiny-untied, small, 1b)"));
  }
  TERN_RETURN_IF_ERROR(ValidateModelConfig(c));
  return c;
}

absl::Status WriteSyntheticCheckpoint(const SynthOptions& options, const std::string& out_dir) {
  if (options.dtype != WeightFormat::kBf16) {
    // The bf16 checkpoint first (in a scratch folder inside out_dir), then
    // its quantization into out_dir.
    TERN_ASSIGN_OR_RETURN(ModelConfig config, SynthPresetConfig(options.preset));
    (void)config;  // the preset is checked before anything is written
    const std::string scratch = out_dir + "/.bf16-source";
    SynthOptions bf16 = options;
    bf16.dtype = WeightFormat::kBf16;
    bf16.write_gguf = false;
    bf16.max_shard_bytes = std::numeric_limits<uint64_t>::max();
    TERN_RETURN_IF_ERROR(WriteSyntheticCheckpoint(bf16, scratch));
    QuantizeOptions q = options.quantize;
    q.format = options.dtype;
    q.write_gguf = options.write_gguf;
    q.gguf_weight_type = options.gguf_weight_type;
    q.progress = options.progress;
    RemoveStaleWeights(out_dir);
    const absl::Status status = QuantizeCheckpoint(scratch, out_dir, q);
    std::error_code ec;
    fs::remove_all(scratch, ec);
    return status;
  }
  TERN_ASSIGN_OR_RETURN(ModelConfig config, SynthPresetConfig(options.preset));
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  RemoveStaleWeights(out_dir);

  TERN_RETURN_IF_ERROR(WriteTokenizerFiles(options, config, out_dir));
  TERN_RETURN_IF_ERROR(WriteFileAtomically(out_dir + "/config.json", ModelConfigToJson(config)));
  TERN_RETURN_IF_ERROR(
      WriteFileAtomically(out_dir + "/generation_config.json", GenerationConfigToJson(config)));

  // Plan shards: tensors in order, a new shard when the next would overflow.
  const std::vector<TensorSpec> specs = TensorSpecs(config, options.seed);
  std::vector<std::vector<const TensorSpec*>> shards(1);
  uint64_t shard_bytes = 0, total_bytes = 0;
  for (const TensorSpec& t : specs) {
    if (!shards.back().empty() && shard_bytes + t.bytes() > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&t);
    shard_bytes += t.bytes();
    total_bytes += t.bytes();
  }
  Progress progress(options.progress, total_bytes);
  if (shards.size() == 1) {
    TERN_RETURN_IF_ERROR(WriteShard(out_dir + "/model.safetensors", shards[0], progress));
  } else {
    ordered_json weight_map;
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string name =
          absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
      TERN_RETURN_IF_ERROR(WriteShard(out_dir + "/" + name, shards[i], progress));
      for (const TensorSpec* t : shards[i]) weight_map[t->name] = name;
    }
    ordered_json index;
    index["metadata"] = {{"total_size", total_bytes}};
    index["weight_map"] = weight_map;
    TERN_RETURN_IF_ERROR(
        WriteFileAtomically(out_dir + "/model.safetensors.index.json", index.dump(2) + "\n"));
  }
  if (options.write_gguf) {
    TERN_RETURN_IF_ERROR(ConvertCheckpointToGguf(out_dir, out_dir + "/model.gguf", options.progress,
                                                 options.gguf_weight_type));
  }
  if (options.progress) options.progress(absl::StrCat("wrote ", out_dir));
  return absl::OkStatus();
}

}  // namespace tern::worker
