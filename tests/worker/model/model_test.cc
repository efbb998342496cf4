#include "worker/model/model.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <thread>
#include <vector>

#include "cli/model/synth.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/dispatch.h"
#include "kernels/reference.h"
#include "nlohmann/json.hpp"
#include "tests/testing/reference_forward.h"
#include "worker/model/safetensors.h"

namespace tern::worker {
namespace {

using testing::KvCache;
using testing::ReferenceForward;

using ::testing::HasSubstr;
namespace fs = std::filesystem;

// A minimal tokenizer (the ids synthesis checks must fit the vocabulary).
void WriteFakeTokenizer(const fs::path& dir) {
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json")
      << R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]},)"
      << R"("added_tokens":[{"id":128000,"content":"<|begin_of_text|>","special":true},)"
      << R"({"id":128009,"content":"<|eot_id|>","special":true}]})";
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token":"<|begin_of_text|>","eos_token":"<|eot_id|>","chat_template":"x"})";
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class ModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(fs::temp_directory_path() / ("tern-model-" + std::to_string(::getpid())));
    WriteFakeTokenizer(*root_ / "tok");
    for (const char* preset : {"tiny", "tiny-untied"}) {
      SynthOptions o;
      o.preset = preset;
      o.seed = 3;
      o.tokenizer_dir = (*root_ / "tok").string();
      o.write_gguf = false;
      ASSERT_TRUE(WriteSyntheticCheckpoint(o, (*root_ / preset).string()).ok());
    }
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
  }
  static std::string Dir(const std::string& name) { return (*root_ / name).string(); }

  // Copies a checkpoint's JSON files to a new directory.
  static fs::path CopyConfigs(const std::string& from, const std::string& to) {
    const fs::path dst = *root_ / to;
    fs::create_directories(dst);
    for (const char* f :
         {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"}) {
      fs::copy_file(fs::path(Dir(from)) / f, dst / f, fs::copy_options::overwrite_existing);
    }
    return dst;
  }

  static std::unique_ptr<Model> MustLoad(const std::string& dir) {
    auto model = Model::Load(dir);
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? std::move(model).value() : nullptr;
  }

  static std::vector<float> Logits(const Model& model, const std::vector<int32_t>& tokens) {
    KvCache cache(model.config(), 256);
    std::vector<float> logits;
    EXPECT_TRUE(ReferenceForward(model, tokens, cache, &logits).ok());
    return logits;
  }

  static float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float m = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
  }

  static fs::path* root_;
};
fs::path* ModelTest::root_ = nullptr;

const std::vector<int32_t> kPrompt = {128000, 791, 4062, 14198, 39935, 35308, 927, 279, 16053};

TEST_F(ModelTest, LoadsAndRunsForward) {
  auto model = MustLoad(Dir("tiny"));
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->config().hidden_size, 128);
  EXPECT_TRUE(model->config().tie_word_embeddings);
  KvCache cache(model->config(), 64);
  std::vector<float> logits;
  ASSERT_TRUE(ReferenceForward(*model, kPrompt, cache, &logits).ok());
  EXPECT_EQ(cache.size(), static_cast<int>(kPrompt.size()));
  ASSERT_EQ(logits.size(), 128256u);
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

// An independent, plain double-precision Llama forward pass over the same
// tensors (Hugging Face formulas written out directly). With
// `round_matmul_inputs`, every matmul's input is first rounded to bf16, as
// kernels that multiply in bf16 do (kernels::RoundsActivations).
std::vector<double> NaiveForward(const std::string& dir, const std::vector<int32_t>& tokens,
                                 bool round_matmul_inputs) {
  auto config = LoadModelConfig(dir);
  auto ckpt = SafetensorsCheckpoint::OpenDir(dir);
  EXPECT_TRUE(config.ok() && ckpt.ok());
  const ModelConfig& c = *config;
  auto w = [&](const std::string& name) {
    std::vector<double> out;
    for (uint16_t v : (*(*ckpt)->Info(name))->bf16) out.push_back(kernels::Bf16ToFloat(v));
    return out;
  };
  const int d = c.hidden_size, hd = c.head_dim, nh = c.num_attention_heads;
  const int nkv = c.num_key_value_heads, ffn = c.intermediate_size, n = tokens.size();
  auto matvec = [&](const std::vector<double>& m, std::vector<double> x, int rows) {
    if (round_matmul_inputs) {
      for (double& v : x) v = kernels::Bf16ToFloat(kernels::FloatToBf16(static_cast<float>(v)));
    }
    std::vector<double> y(rows, 0.0);
    const size_t cols = x.size();
    for (int r = 0; r < rows; ++r)
      for (size_t k = 0; k < cols; ++k) y[r] += m[r * cols + k] * x[k];
    return y;
  };
  auto rmsnorm = [&](const std::vector<double>& x, const std::vector<double>& g) {
    double ms = 0;
    for (double v : x) ms += v * v;
    ms = 1.0 / std::sqrt(ms / x.size() + c.rms_norm_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * ms * g[i];
    return y;
  };
  std::vector<double> inv_freq(hd / 2);
  for (int i = 0; i < hd / 2; ++i) {
    double f = std::pow(c.rope_theta, -2.0 * i / hd);
    const double wavelen = 2 * std::numbers::pi / f, old = 8192.0;
    if (wavelen > old / 1.0) {
      f /= c.rope_scaling.factor;
    } else if (wavelen >= old / 4.0) {
      const double smooth = (old / wavelen - 1.0) / 3.0;
      f = (1 - smooth) * f / c.rope_scaling.factor + smooth * f;
    }
    inv_freq[i] = f;
  }
  auto rope = [&](std::vector<double>& v, int heads, int pos) {
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        const double a = v[h * hd + i], b = v[h * hd + i + hd / 2];
        const double cs = std::cos(pos * inv_freq[i]), sn = std::sin(pos * inv_freq[i]);
        v[h * hd + i] = a * cs - b * sn;
        v[h * hd + i + hd / 2] = b * cs + a * sn;
      }
  };
  const auto embed = w("model.embed_tokens.weight");
  std::vector<std::vector<double>> x(n);
  for (int t = 0; t < n; ++t)
    x[t].assign(embed.begin() + tokens[t] * d, embed.begin() + (tokens[t] + 1) * d);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto wq = w(p + "self_attn.q_proj.weight"), wk = w(p + "self_attn.k_proj.weight");
    const auto wv = w(p + "self_attn.v_proj.weight"), wo = w(p + "self_attn.o_proj.weight");
    std::vector<std::vector<double>> q(n), k(n), v(n);
    for (int t = 0; t < n; ++t) {
      const auto h = rmsnorm(x[t], w(p + "input_layernorm.weight"));
      q[t] = matvec(wq, h, nh * hd);
      k[t] = matvec(wk, h, nkv * hd);
      v[t] = matvec(wv, h, nkv * hd);
      rope(q[t], nh, t);
      rope(k[t], nkv, t);
    }
    for (int t = 0; t < n; ++t) {
      std::vector<double> attn(nh * hd, 0.0);
      for (int h = 0; h < nh; ++h) {
        const int kvh = h / (nh / nkv);
        std::vector<double> s(t + 1);
        double mx = -1e300, z = 0;
        for (int j = 0; j <= t; ++j) {
          s[j] = 0;
          for (int i = 0; i < hd; ++i) s[j] += q[t][h * hd + i] * k[j][kvh * hd + i];
          s[j] /= std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        for (double& e : s) z += (e = std::exp(e - mx));
        for (int j = 0; j <= t; ++j)
          for (int i = 0; i < hd; ++i) attn[h * hd + i] += s[j] / z * v[j][kvh * hd + i];
      }
      const auto o = matvec(wo, attn, d);
      for (int i = 0; i < d; ++i) x[t][i] += o[i];
      const auto h = rmsnorm(x[t], w(p + "post_attention_layernorm.weight"));
      const auto g = matvec(w(p + "mlp.gate_proj.weight"), h, ffn);
      const auto u = matvec(w(p + "mlp.up_proj.weight"), h, ffn);
      std::vector<double> a(ffn);
      for (int i = 0; i < ffn; ++i) a[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const auto down = matvec(w(p + "mlp.down_proj.weight"), a, d);
      for (int i = 0; i < d; ++i) x[t][i] += down[i];
    }
  }
  const auto h = rmsnorm(x[n - 1], w("model.norm.weight"));
  return matvec(c.tie_word_embeddings ? embed : w("lm_head.weight"), h, c.vocab_size);
}

TEST_F(ModelTest, MatchesNaiveDoublePrecisionForward) {
  for (const char* preset : {"tiny", "tiny-untied"}) {
    auto model = MustLoad(Dir(preset));
    ASSERT_NE(model, nullptr);
    const std::vector<int32_t> prompt = {128000, 5, 77777, 5, 42, 128009};
    const auto ours = Logits(*model, prompt);
    const auto expected =
        NaiveForward(Dir(preset), prompt, kernels::RoundsActivations(kernels::ActiveKernels().isa));
    double max_diff = 0, max_abs = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
      max_diff = std::max(max_diff, std::fabs(ours[i] - expected[i]));
      max_abs = std::max(max_abs, std::fabs(expected[i]));
    }
    EXPECT_LT(max_diff, 1e-4 * max_abs) << preset << " max |logit| " << max_abs;
  }
}

TEST_F(ModelTest, IncrementalForwardEqualsFullPrompt) {
  auto model = MustLoad(Dir("tiny"));
  ASSERT_NE(model, nullptr);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 41; ++i) prompt.push_back((i * 7919 + 13) % 128000);  // > 2 chunks
  const auto full = Logits(*model, prompt);
  KvCache one_by_one(model->config(), 64);
  std::vector<float> logits;
  for (int32_t t : prompt) ASSERT_TRUE(ReferenceForward(*model, {t}, one_by_one, &logits).ok());
  EXPECT_LE(MaxAbsDiff(full, logits), 1e-4f);
  KvCache mixed(model->config(), 64);
  ASSERT_TRUE(
      ReferenceForward(*model, absl::MakeConstSpan(prompt).subspan(0, 7), mixed, nullptr).ok());
  ASSERT_TRUE(
      ReferenceForward(*model, absl::MakeConstSpan(prompt).subspan(7, 20), mixed, nullptr).ok());
  ASSERT_TRUE(
      ReferenceForward(*model, absl::MakeConstSpan(prompt).subspan(27), mixed, &logits).ok());
  EXPECT_EQ(mixed.size(), 41);
  EXPECT_LE(MaxAbsDiff(full, logits), 1e-4f);
}

TEST_F(ModelTest, TruncateThenReplayGivesTheSameLogits) {
  auto model = MustLoad(Dir("tiny-untied"));
  ASSERT_NE(model, nullptr);
  const auto full = Logits(*model, kPrompt);
  KvCache cache(model->config(), 64);
  std::vector<int32_t> detour = kPrompt;
  detour[5] = 1000;
  detour[6] = 2000;
  ASSERT_TRUE(ReferenceForward(*model, detour, cache, nullptr).ok());
  cache.Truncate(5);
  EXPECT_EQ(cache.size(), 5);
  std::vector<float> logits;
  ASSERT_TRUE(
      ReferenceForward(*model, absl::MakeConstSpan(kPrompt).subspan(5), cache, &logits).ok());
  EXPECT_LE(MaxAbsDiff(full, logits), 1e-4f);
}

TEST_F(ModelTest, ShardedCheckpointEqualsSingleFile) {
  SynthOptions o;
  o.preset = "tiny";
  o.seed = 3;
  o.tokenizer_dir = (*root_ / "tok").string();
  o.write_gguf = false;
  o.max_shard_bytes = 5 << 20;  // embeddings (32 MiB) alone, then the layers
  const std::string sharded = (*root_ / "tiny-sharded").string();
  ASSERT_TRUE(WriteSyntheticCheckpoint(o, sharded).ok());
  ASSERT_TRUE(fs::exists(sharded + "/model.safetensors.index.json"));
  ASSERT_FALSE(fs::exists(sharded + "/model.safetensors"));
  auto single = MustLoad(Dir("tiny"));
  auto split = MustLoad(sharded);
  ASSERT_TRUE(single && split);
  EXPECT_EQ(Logits(*single, kPrompt), Logits(*split, kPrompt));
}

// Rewrites a checkpoint's tensors with another dtype into `dst`.
void WriteConverted(const std::string& src, const fs::path& dst, const std::string& dtype,
                    const std::string& skip = "") {
  auto ckpt = SafetensorsCheckpoint::OpenDir(src);
  ASSERT_TRUE(ckpt.ok());
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const std::string& name : (*ckpt)->TensorNames()) {
    if (name == skip) continue;
    const TensorInfo* info = *(*ckpt)->Info(name);
    const size_t begin = data.size();
    for (uint16_t v : info->bf16) {
      const float f = kernels::Bf16ToFloat(v);
      if (dtype == "F32") {
        data.append(reinterpret_cast<const char*>(&f), 4);
      } else {
        const uint16_t h = kernels::FloatToF16(f);
        data.append(reinterpret_cast<const char*>(&h), 2);
      }
    }
    header[name] = {
        {"dtype", dtype}, {"shape", info->shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string h = header.dump();
  h.resize((h.size() + 7) / 8 * 8, ' ');
  const uint64_t len = h.size();
  std::ofstream out(dst / "model.safetensors", std::ios::binary);
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << h << data;
}

TEST_F(ModelTest, F32AndF16CheckpointsLoad) {
  auto reference = MustLoad(Dir("tiny"));
  ASSERT_NE(reference, nullptr);
  const auto expected = Logits(*reference, kPrompt);
  float max_abs = 0;
  for (float v : expected) max_abs = std::max(max_abs, std::fabs(v));

  WriteConverted(Dir("tiny"), CopyConfigs("tiny", "tiny-f32"), "F32");
  auto f32 = MustLoad(Dir("tiny-f32"));
  ASSERT_NE(f32, nullptr);
  EXPECT_EQ(Logits(*f32, kPrompt), expected);  // bf16 -> f32 -> bf16 is exact

  WriteConverted(Dir("tiny"), CopyConfigs("tiny", "tiny-f16"), "F16");
  auto f16 = MustLoad(Dir("tiny-f16"));
  ASSERT_NE(f16, nullptr);
  // bf16 -> f16 -> bf16 is exact except for values below f16's normal range.
  EXPECT_LE(MaxAbsDiff(Logits(*f16, kPrompt), expected), 1e-2f * max_abs);
}

TEST_F(ModelTest, UntiedModelNeedsLmHead) {
  auto untied = MustLoad(Dir("tiny-untied"));
  ASSERT_NE(untied, nullptr);
  EXPECT_FALSE(untied->config().tie_word_embeddings);
  WriteConverted(Dir("tiny-untied"), CopyConfigs("tiny-untied", "no-head"), "F32",
                 "lm_head.weight");
  auto missing = Model::Load(Dir("no-head"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("lm_head.weight"));
}

TEST_F(ModelTest, ConfigThatDisagreesWithTensorsNamesTheTensor) {
  const fs::path dir = CopyConfigs("tiny", "bad-shape");
  fs::copy_file(fs::path(Dir("tiny")) / "model.safetensors", dir / "model.safetensors");
  auto config = nlohmann::json::parse(Slurp(dir / "config.json"));
  config["intermediate_size"] = 320;
  std::ofstream(dir / "config.json") << config.dump();
  auto model = Model::Load(dir.string());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()),
              HasSubstr("model.layers.0.mlp.gate_proj.weight"));
}

TEST_F(ModelTest, RejectsBadTokensAndFullCaches) {
  auto model = MustLoad(Dir("tiny"));
  ASSERT_NE(model, nullptr);
  KvCache cache(model->config(), 4);
  std::vector<float> logits;
  EXPECT_EQ(ReferenceForward(*model, {}, cache, &logits).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReferenceForward(*model, {1, -1}, cache, &logits).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReferenceForward(*model, {128256}, cache, &logits).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.size(), 0);
  ASSERT_TRUE(ReferenceForward(*model, {1, 2, 3}, cache, &logits).ok());
  EXPECT_EQ(ReferenceForward(*model, {4, 5}, cache, &logits).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(cache.size(), 3);
  auto other = MustLoad(Dir("tiny-untied"));
  ASSERT_NE(other, nullptr);
  KvCache wrong(other->config(), 8);
  EXPECT_EQ(ReferenceForward(*model, {1}, wrong, &logits).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ModelTest, ConcurrentForwardsWithDistinctCaches) {
  auto model = MustLoad(Dir("tiny"));
  ASSERT_NE(model, nullptr);
  const auto expected = Logits(*model, kPrompt);
  std::vector<std::vector<float>> results(4);
  std::vector<std::thread> threads;
  for (auto& r : results) {
    threads.emplace_back([&model, &r] { r = Logits(*model, kPrompt); });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_EQ(r, expected);
}

}  // namespace
}  // namespace tern::worker
