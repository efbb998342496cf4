#include "cli/model/synth.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numbers>
#include <set>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/reference.h"
#include "nlohmann/json.hpp"
#include "worker/model/model_config.h"
#include "worker/model/safetensors.h"

namespace tern::worker {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A small GGUF v3 reader for checking what the writer produced.
struct Gguf {
  using Value = std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<std::string>,
                             std::vector<int64_t>>;
  struct Tensor {
    std::vector<uint64_t> dims;
    uint32_t type;
    uint64_t offset;
  };
  uint32_t version = 0;
  std::map<std::string, Value> kv;
  std::map<std::string, Tensor> tensors;
  std::string bytes;
  size_t data_start = 0;

  const char* TensorData(const std::string& name) const {
    return bytes.data() + data_start + tensors.at(name).offset;
  }
  std::string Str(const std::string& key) const { return std::get<std::string>(kv.at(key)); }
  uint64_t U(const std::string& key) const { return std::get<uint64_t>(kv.at(key)); }
};

Gguf ReadGguf(const fs::path& path) {
  Gguf g;
  g.bytes = Slurp(path);
  size_t pos = 0;
  auto take = [&](auto& v) {
    std::memcpy(&v, g.bytes.data() + pos, sizeof(v));
    pos += sizeof(v);
  };
  auto str = [&] {
    uint64_t n;
    take(n);
    std::string s = g.bytes.substr(pos, n);
    pos += n;
    return s;
  };
  std::function<Gguf::Value(uint32_t)> value = [&](uint32_t type) -> Gguf::Value {
    switch (type) {
      case 4: {
        uint32_t v;
        take(v);
        return uint64_t{v};
      }
      case 5: {
        int32_t v;
        take(v);
        return int64_t{v};
      }
      case 6: {
        float v;
        take(v);
        return double{v};
      }
      case 7: {
        uint8_t v;
        take(v);
        return v != 0;
      }
      case 8:
        return str();
      case 9: {
        uint32_t item;
        uint64_t n;
        take(item);
        take(n);
        if (item == 8) {
          std::vector<std::string> out;
          for (uint64_t i = 0; i < n; ++i) out.push_back(str());
          return out;
        }
        std::vector<int64_t> out;
        for (uint64_t i = 0; i < n; ++i) {
          int32_t v;
          take(v);
          out.push_back(v);
        }
        return out;
      }
    }
    ADD_FAILURE() << "unexpected GGUF type " << type;
    return uint64_t{0};
  };
  char magic[4];
  take(magic);
  EXPECT_EQ(std::string(magic, 4), "GGUF");
  take(g.version);
  uint64_t n_tensors, n_kv;
  take(n_tensors);
  take(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = str();
    uint32_t type;
    take(type);
    g.kv[key] = value(type);
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    std::string name = str();
    uint32_t n_dims;
    take(n_dims);
    Gguf::Tensor t;
    t.dims.resize(n_dims);
    for (auto& d : t.dims) take(d);
    take(t.type);
    take(t.offset);
    g.tensors[name] = t;
  }
  g.data_start = (pos + 31) / 32 * 32;
  return g;
}

class SynthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("tern-synth-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(root_ / "tok");
    std::ofstream(root_ / "tok" / "tokenizer.json")
        << R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b",["ab","b"]]},)"
        << R"("added_tokens":[{"id":128000,"content":"<|begin_of_text|>","special":true},)"
        << R"({"id":128009,"content":"<|eot_id|>","special":true}],)"
        << R"("post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":)"
        << R"({"id":"<|begin_of_text|>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}]}})";
    std::ofstream(root_ / "tok" / "tokenizer_config.json")
        << R"({"bos_token":"<|begin_of_text|>","eos_token":"<|eot_id|>",)"
        << R"("chat_template":"old template","model_max_length":131072})";
  }
  void TearDown() override { fs::remove_all(root_); }

  SynthOptions Options(const std::string& preset) {
    SynthOptions o;
    o.preset = preset;
    o.seed = 11;
    o.tokenizer_dir = (root_ / "tok").string();
    o.chat_template = "{{ bos_token }}new template";
    return o;
  }

  fs::path root_;
};

TEST_F(SynthTest, WritesTheHuggingFaceLayout) {
  std::vector<std::string> progress;
  SynthOptions o = Options("tiny");
  o.progress = [&](const std::string& line) { progress.push_back(line); };
  const fs::path dir = root_ / "m";
  ASSERT_TRUE(WriteSyntheticCheckpoint(o, dir.string()).ok());
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors",
                        "tokenizer.json", "tokenizer_config.json", "model.gguf"}) {
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  }
  for (const auto& entry : fs::directory_iterator(dir)) {
    EXPECT_NE(entry.path().extension(), ".tmp") << "temporary file left: " << entry.path();
  }
  auto config = LoadModelConfig(dir.string());
  ASSERT_TRUE(config.ok()) << config.status();
  auto preset = SynthPresetConfig("tiny");
  ASSERT_TRUE(preset.ok());
  EXPECT_EQ(config->hidden_size, preset->hidden_size);
  EXPECT_EQ(config->num_key_value_heads, 2);
  EXPECT_EQ(config->vocab_size, 128256);
  EXPECT_EQ(config->eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
  EXPECT_DOUBLE_EQ(config->generation.temperature, 0.6);
  EXPECT_TRUE(config->generation.do_sample);
  const auto raw = nlohmann::json::parse(Slurp(dir / "config.json"));
  EXPECT_EQ(raw["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(raw["rope_scaling"]["rope_type"], "llama3");
  EXPECT_EQ(raw["torch_dtype"], "bfloat16");
  EXPECT_EQ(Slurp(dir / "tokenizer.json"), Slurp(root_ / "tok" / "tokenizer.json"));
  const auto tok_config = nlohmann::json::parse(Slurp(dir / "tokenizer_config.json"));
  EXPECT_EQ(tok_config["chat_template"], "{{ bos_token }}new template");
  EXPECT_EQ(tok_config["model_max_length"], 131072);
  auto ckpt = SafetensorsCheckpoint::OpenDir(dir.string());
  ASSERT_TRUE(ckpt.ok());
  EXPECT_EQ((*ckpt)->TensorNames().size(), 2u + 9u * 2u);  // embed, norm, 9 per layer
  EXPECT_FALSE((*ckpt)->Contains("lm_head.weight"));
  ASSERT_FALSE(progress.empty());
  EXPECT_THAT(progress.back(), HasSubstr("wrote"));
}

TEST_F(SynthTest, WeightsAreDeterministicPerSeed) {
  SynthOptions o = Options("tiny");
  o.write_gguf = false;
  ASSERT_TRUE(WriteSyntheticCheckpoint(o, (root_ / "a").string()).ok());
  ASSERT_TRUE(WriteSyntheticCheckpoint(o, (root_ / "b").string()).ok());
  o.seed = 12;
  ASSERT_TRUE(WriteSyntheticCheckpoint(o, (root_ / "c").string()).ok());
  const std::string a = Slurp(root_ / "a" / "model.safetensors");
  EXPECT_EQ(a, Slurp(root_ / "b" / "model.safetensors"));
  EXPECT_NE(a, Slurp(root_ / "c" / "model.safetensors"));
}

TEST_F(SynthTest, ShardsAboveTheLimitAndReplacesStaleFiles) {
  SynthOptions o = Options("tiny");
  o.write_gguf = false;
  o.max_shard_bytes = 150000;  // embeddings alone, then about half a layer per shard
  const fs::path dir = root_ / "sharded";
  ASSERT_TRUE(WriteSyntheticCheckpoint(o, dir.string()).ok());
  const auto index = nlohmann::json::parse(Slurp(dir / "model.safetensors.index.json"));
  std::set<std::string> files;
  uint64_t shard_bytes = 0;
  for (const auto& [name, file] : index["weight_map"].items())
    files.insert(file.get<std::string>());
  for (const std::string& f : files) {
    EXPECT_THAT(f, ::testing::MatchesRegex("model-0000[0-9]-of-0000[0-9].safetensors"));
    shard_bytes += fs::file_size(dir / f);
  }
  EXPECT_GE(files.size(), 3u);
  EXPECT_EQ(index["weight_map"].size(), 20u);
  EXPECT_LT(index["metadata"]["total_size"].get<uint64_t>(), shard_bytes);
  ASSERT_TRUE(SafetensorsCheckpoint::OpenDir(dir.string()).ok());
  // Rewriting unsharded into the same folder leaves no index behind.
  o.max_shard_bytes = uint64_t{1} << 40;
  ASSERT_TRUE(WriteSyntheticCheckpoint(o, dir.string()).ok());
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / *files.begin()));
}

// The per-pair llama3 frequency divisors, as convert_hf_to_gguf defines them.
std::vector<float> ExpectedRopeFactors(const ModelConfig& c) {
  std::vector<float> out;
  for (int i = 0; i < c.head_dim / 2; ++i) {
    const double freq = std::pow(c.rope_theta, -2.0 * i / c.head_dim);
    const double wavelen = 2 * std::numbers::pi / freq;
    if (wavelen < 8192.0 / 4.0) {
      out.push_back(1.0f);
    } else if (wavelen > 8192.0) {
      out.push_back(static_cast<float>(c.rope_scaling.factor));
    } else {
      const double smooth = (8192.0 / wavelen - 1.0) / 3.0;
      out.push_back(static_cast<float>(1.0 / ((1 - smooth) / c.rope_scaling.factor + smooth)));
    }
  }
  return out;
}

TEST_F(SynthTest, GgufFollowsLlamaCppConventions) {
  for (const char* preset : {"tiny", "tiny-untied"}) {
    const fs::path dir = root_ / preset;
    ASSERT_TRUE(WriteSyntheticCheckpoint(Options(preset), dir.string()).ok());
    const ModelConfig c = *SynthPresetConfig(preset);
    const Gguf g = ReadGguf(dir / "model.gguf");
    EXPECT_EQ(g.version, 3u);
    EXPECT_EQ(g.Str("general.architecture"), "llama");
    EXPECT_EQ(g.U("general.file_type"), 32u);
    EXPECT_EQ(g.U("llama.block_count"), static_cast<uint64_t>(c.num_hidden_layers));
    EXPECT_EQ(g.U("llama.embedding_length"), static_cast<uint64_t>(c.hidden_size));
    EXPECT_EQ(g.U("llama.feed_forward_length"), static_cast<uint64_t>(c.intermediate_size));
    EXPECT_EQ(g.U("llama.attention.head_count"), static_cast<uint64_t>(c.num_attention_heads));
    EXPECT_EQ(g.U("llama.attention.head_count_kv"), static_cast<uint64_t>(c.num_key_value_heads));
    EXPECT_EQ(g.U("llama.rope.dimension_count"), static_cast<uint64_t>(c.head_dim));
    EXPECT_EQ(g.U("llama.context_length"), 131072u);
    EXPECT_EQ(std::get<double>(g.kv.at("llama.rope.freq_base")), 500000.0);
    EXPECT_FLOAT_EQ(std::get<double>(g.kv.at("llama.attention.layer_norm_rms_epsilon")), 1e-5f);
    EXPECT_EQ(g.Str("tokenizer.ggml.model"), "gpt2");
    EXPECT_EQ(g.Str("tokenizer.ggml.pre"), "llama-bpe");
    EXPECT_EQ(g.Str("tokenizer.chat_template"), "{{ bos_token }}new template");
    const auto& tokens = std::get<std::vector<std::string>>(g.kv.at("tokenizer.ggml.tokens"));
    const auto& types = std::get<std::vector<int64_t>>(g.kv.at("tokenizer.ggml.token_type"));
    ASSERT_EQ(tokens.size(), 128256u);
    ASSERT_EQ(types.size(), 128256u);
    EXPECT_EQ(tokens[2], "ab");
    EXPECT_EQ(types[2], 1);  // normal
    EXPECT_EQ(tokens[128000], "<|begin_of_text|>");
    EXPECT_EQ(types[128000], 3);  // control
    EXPECT_EQ(tokens[500], "[PAD500]");
    EXPECT_EQ(types[500], 5);  // unused
    EXPECT_EQ(std::get<std::vector<std::string>>(g.kv.at("tokenizer.ggml.merges")),
              (std::vector<std::string>{"a b", "ab b"}));
    EXPECT_EQ(g.U("tokenizer.ggml.bos_token_id"), 128000u);
    EXPECT_EQ(g.U("tokenizer.ggml.eos_token_id"), 128009u);
    EXPECT_TRUE(std::get<bool>(g.kv.at("tokenizer.ggml.add_bos_token")));

    EXPECT_EQ(g.tensors.size(), 3u + 9u * c.num_hidden_layers + (c.tie_word_embeddings ? 0 : 1));
    EXPECT_EQ(g.tensors.count("output.weight"), c.tie_word_embeddings ? 0u : 1u);
    const auto& embd = g.tensors.at("token_embd.weight");
    EXPECT_EQ(embd.dims, (std::vector<uint64_t>{128, 128256}));
    EXPECT_EQ(embd.type, 30u);
    EXPECT_EQ(g.tensors.at("blk.0.attn_norm.weight").type, 0u);
    EXPECT_EQ(g.tensors.at("blk.0.ffn_down.weight").dims,
              (std::vector<uint64_t>{static_cast<uint64_t>(c.intermediate_size), 128}));
    for (const auto& [name, t] : g.tensors) EXPECT_EQ(t.offset % 32, 0u) << name;

    const auto& freqs = g.tensors.at("rope_freqs.weight");
    ASSERT_EQ(freqs.dims, (std::vector<uint64_t>{static_cast<uint64_t>(c.head_dim / 2)}));
    const auto expected = ExpectedRopeFactors(c);
    for (size_t i = 0; i < expected.size(); ++i) {
      float v;
      std::memcpy(&v, g.TensorData("rope_freqs.weight") + 4 * i, 4);
      EXPECT_NEAR(v, expected[i], 1e-4 * expected[i]) << i;
    }

    // Same weights: embeddings byte-identical; q/k rows interleaved per head.
    auto ckpt = SafetensorsCheckpoint::OpenDir(dir.string());
    ASSERT_TRUE(ckpt.ok());
    const auto hf_embed = (*(*ckpt)->Info("model.embed_tokens.weight"))->bf16;
    EXPECT_EQ(std::memcmp(g.TensorData("token_embd.weight"), hf_embed.data(), hf_embed.size() * 2),
              0);
    const int hd = c.head_dim, half = hd / 2, d = c.hidden_size;
    for (const auto& [hf, gg, heads] : std::vector<std::tuple<std::string, std::string, int>>{
             {"model.layers.1.self_attn.q_proj.weight", "blk.1.attn_q.weight",
              c.num_attention_heads},
             {"model.layers.1.self_attn.k_proj.weight", "blk.1.attn_k.weight",
              c.num_key_value_heads}}) {
      const auto rows = (*(*ckpt)->Info(hf))->bf16;
      const char* out = g.TensorData(gg);
      for (int h = 0; h < heads; ++h) {
        for (int i = 0; i < half; ++i) {
          for (int j = 0; j < 2; ++j) {
            const size_t gguf_row = h * hd + 2 * i + j, hf_row = h * hd + j * half + i;
            ASSERT_EQ(std::memcmp(out + gguf_row * d * 2, rows.data() + hf_row * d, d * 2), 0)
                << gg << " row " << gguf_row;
          }
        }
      }
    }
    const float norm0 = kernels::Bf16ToFloat((*(*ckpt)->Info("model.norm.weight"))->bf16[0]);
    float gguf_norm0;
    std::memcpy(&gguf_norm0, g.TensorData("output_norm.weight"), 4);
    EXPECT_EQ(gguf_norm0, norm0);
  }
}

TEST_F(SynthTest, F32GgufWidensTheSameWeights) {
  SynthOptions o = Options("tiny");
  o.gguf_weight_type = GgmlType::kF32;
  const fs::path dir = root_ / "f32";
  ASSERT_TRUE(WriteSyntheticCheckpoint(o, dir.string()).ok());
  const Gguf g = ReadGguf(dir / "model.gguf");
  EXPECT_EQ(g.U("general.file_type"), 0u);
  EXPECT_EQ(g.tensors.at("blk.0.ffn_up.weight").type, 0u);
  auto ckpt = SafetensorsCheckpoint::OpenDir(dir.string());
  ASSERT_TRUE(ckpt.ok());
  const auto up = (*(*ckpt)->Info("model.layers.0.mlp.up_proj.weight"))->bf16;
  for (size_t i = 0; i < up.size(); i += 97) {
    float v;
    std::memcpy(&v, g.TensorData("blk.0.ffn_up.weight") + 4 * i, 4);
    ASSERT_EQ(v, kernels::Bf16ToFloat(up[i]));
  }
}

TEST_F(SynthTest, PresetsHaveTheDocumentedShapes) {
  EXPECT_EQ(SynthPresetNames(), (std::vector<std::string>{"tiny", "tiny-untied", "small", "1b"}));
  auto one_b = SynthPresetConfig("1b");
  ASSERT_TRUE(one_b.ok());
  EXPECT_EQ(one_b->hidden_size, 2048);
  EXPECT_EQ(one_b->num_hidden_layers, 16);
  EXPECT_EQ(one_b->num_attention_heads, 32);
  EXPECT_EQ(one_b->num_key_value_heads, 8);
  EXPECT_EQ(one_b->head_dim, 64);
  EXPECT_EQ(one_b->intermediate_size, 8192);
  EXPECT_TRUE(one_b->tie_word_embeddings);
  EXPECT_DOUBLE_EQ(one_b->rope_scaling.factor, 32.0);
  auto small = SynthPresetConfig("small");
  ASSERT_TRUE(small.ok());
  const int64_t d = small->hidden_size;
  const int64_t embeddings = int64_t{small->vocab_size} * d * (small->tie_word_embeddings ? 1 : 2);
  const int64_t params =
      embeddings +
      small->num_hidden_layers * (d * (small->q_dim() * 2 + small->kv_dim() * 2) +
                                  3 * d * small->intermediate_size + 2 * d) +
      d;
  EXPECT_GT(params, 90'000'000);
  EXPECT_LT(params, 115'000'000);
  auto untied = SynthPresetConfig("tiny-untied");
  ASSERT_TRUE(untied.ok());
  EXPECT_FALSE(untied->tie_word_embeddings);
  EXPECT_EQ(untied->num_key_value_heads, untied->num_attention_heads);
  EXPECT_DOUBLE_EQ(untied->rope_scaling.factor, 8.0);
}

TEST_F(SynthTest, ReportsBadInputs) {
  EXPECT_EQ(WriteSyntheticCheckpoint(Options("huge"), (root_ / "x").string()).code(),
            absl::StatusCode::kInvalidArgument);
  SynthOptions o = Options("tiny");
  o.tokenizer_dir = (root_ / "missing").string();
  EXPECT_EQ(WriteSyntheticCheckpoint(o, (root_ / "y").string()).code(),
            absl::StatusCode::kNotFound);
  std::ofstream(root_ / "tok" / "tokenizer.json")
      << R"({"model":{"type":"BPE","vocab":{"a":200000},"merges":[]}})";
  EXPECT_THAT(
      std::string(WriteSyntheticCheckpoint(Options("tiny"), (root_ / "z").string()).message()),
      HasSubstr("200000"));
}

}  // namespace
}  // namespace tern::worker
