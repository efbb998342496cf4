// Loading int8 and FP8 checkpoints (as `tern model quantize` writes them, and
// malformed variants), their weights against the bf16 originals, and the
// executor's forward pass over them: close to bf16, and the same at tp 2
// (shards of quantized matrices) as at tp 1.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cli/model/gguf_writer.h"
#include "cli/model/quantize.h"
#include "kernels/reference.h"
#include "nlohmann/json.hpp"
#include "tests/testing/tiny_model.h"
#include "worker/model/executor.h"
#include "worker/model/model.h"
#include "worker/model/safetensors.h"

namespace tern::worker {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

struct Variant {
  const char* name;
  WeightFormat format;
  QuantLayout layout;
  bool per_channel;
};
constexpr Variant kVariants[] = {
    {"int8", WeightFormat::kInt8, QuantLayout::kCompressedTensors, true},
    {"fp8-channel", WeightFormat::kFp8, QuantLayout::kCompressedTensors, true},
    {"fp8-tensor", WeightFormat::kFp8, QuantLayout::kCompressedTensors, false},
    {"fp8-modelopt", WeightFormat::kFp8, QuantLayout::kModelOpt, false},
};

std::string TempDir(const std::string& what) {
  return (fs::temp_directory_path() / ("tern-quant-test-" + what + "-" + std::to_string(getpid())))
      .string();
}

// The tiny preset quantized as `v`, written once per test binary.
std::string QuantizedDir(const Variant& v) {
  static std::map<std::string, std::string> dirs;
  auto it = dirs.find(v.name);
  if (it != dirs.end()) return it->second;
  const std::string dir = TempDir(v.name);
  QuantizeOptions o;
  o.format = v.format;
  o.layout = v.layout;
  o.per_channel = v.per_channel;
  const absl::Status status = QuantizeCheckpoint(testing::TinyModelDir(), dir, o);
  EXPECT_TRUE(status.ok()) << status;
  return dirs[v.name] = dir;
}

class QuantizedModelTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    if (testing::TinyModelDir().empty()) GTEST_SKIP() << "tokenizer files are not installed";
  }
  static void TearDownTestSuite() {
    for (const Variant& v : kVariants) fs::remove_all(TempDir(v.name));
  }
};

TEST_P(QuantizedModelTest, LoadsWithItsFormatAndWeightsCloseToBf16) {
  const Variant v = GetParam();
  auto bf16 = Model::Load(testing::TinyModelDir());
  auto quant = Model::Load(QuantizedDir(v));
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  ASSERT_TRUE(quant.ok()) << quant.status();
  EXPECT_EQ((*quant)->weight_format(), v.format);
  EXPECT_EQ((*quant)->quantization().layout, v.layout);
  EXPECT_LT((*quant)->decode_weight_bytes(), (*bf16)->decode_weight_bytes());
  for (int li = 0; li < (*bf16)->config().num_hidden_layers; ++li) {
    const Model::Layer& a = (*bf16)->layer(li);
    const Model::Layer& b = (*quant)->layer(li);
    EXPECT_TRUE(b.q_proj.empty());  // no bf16 view of an 8-bit matrix
    for (auto [wa, wb] : {std::pair{&a.q, &b.q}, {&a.o, &b.o}, {&a.down, &b.down}}) {
      ASSERT_EQ(wb->format, v.format);
      ASSERT_EQ(wb->row_scales.size(), static_cast<size_t>(wb->rows));
      ASSERT_EQ(wb->bytes.size(), static_cast<size_t>(wb->rows * wb->cols));
      for (int64_t r = 0; r < wb->rows; ++r) {
        const float s = wb->row_scales[r];
        if (v.format == WeightFormat::kInt8) {
          // f16-exact, so GGUF Q8_0 holds the same weights.
          ASSERT_EQ(kernels::F16ToFloat(kernels::FloatToF16(s)), s);
        } else if (!v.per_channel) {
          ASSERT_EQ(s, wb->row_scales[0]);
        }
        for (int64_t c = 0; c < wb->cols; ++c) {
          const float w = kernels::Bf16ToFloat(wa->bf16[r * wa->cols + c]);
          const uint8_t code = wb->bytes[r * wb->cols + c];
          const float got = v.format == WeightFormat::kInt8
                                ? s * static_cast<float>(kernels::Int8FromOffsetByte(code))
                                : s * kernels::Fp8E4M3ToFloat(code);
          // Half a step: int8 steps are the scale; E4M3 keeps 3 mantissa
          // bits (half-step 2^-4 relative), subnormal steps are 2^-9 x scale.
          const float bound = v.format == WeightFormat::kInt8
                                  ? 0.5f * s * 1.0001f
                                  : std::max(std::fabs(w) * 0x1p-4f, s * 0x1p-10f) * 1.0001f;
          ASSERT_LE(std::fabs(got - w), bound)
              << v.name << " layer " << li << " [" << r << ", " << c << "]";
        }
      }
    }
  }
}

std::vector<float> LastLogits(const Model* model, int32_t tp, const std::vector<int32_t>& tokens,
                              LmHeadFormat lm_head = LmHeadFormat::kAuto) {
  ExecutorOptions options;
  options.tp = tp;
  options.lm_head = lm_head;
  options.block_size = 16;
  options.max_batch_tokens = 64;
  options.kv_cache_bytes = int64_t{4} << 20;
  auto e = Executor::Create(model, options);
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) return {};
  std::vector<int32_t> blocks = {0, 1, 2};
  std::vector<float> logits(model->config().vocab_size);
  StepSequence step{tokens, 0, blocks, true};
  EXPECT_TRUE((*e)->Step({&step, 1}, absl::MakeSpan(logits)).ok());
  // One decode step on top, through the n == 1 kernels.
  const int32_t next = 1234;
  StepSequence decode{absl::MakeConstSpan(&next, 1), static_cast<int32_t>(tokens.size()), blocks,
                      true};
  EXPECT_TRUE((*e)->Step({&decode, 1}, absl::MakeSpan(logits)).ok());
  return logits;
}

// How far `got` is from `want`: their cosine, the largest |want|, and the
// largest |got - want|.
struct LogitGap {
  double cosine = 0;
  float max_abs = 0, max_diff = 0;
};
LogitGap Gap(const std::vector<float>& want, const std::vector<float>& got) {
  double dot = 0, n1 = 0, n2 = 0;
  LogitGap gap;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    dot += double{want[i]} * got[i];
    n1 += double{want[i]} * want[i];
    n2 += double{got[i]} * got[i];
    gap.max_abs = std::max(gap.max_abs, std::fabs(want[i]));
    gap.max_diff = std::max(gap.max_diff, std::fabs(got[i] - want[i]));
  }
  gap.cosine = dot / std::sqrt(n1 * n2);
  return gap;
}

TEST_P(QuantizedModelTest, ForwardIsCloseToBf16AndTheSameAtTp2) {
  const Variant v = GetParam();
  auto bf16 = Model::Load(testing::TinyModelDir());
  auto quant = Model::Load(QuantizedDir(v));
  ASSERT_TRUE(bf16.ok() && quant.ok());
  const std::vector<int32_t> tokens = {128000, 791, 4062, 14198, 39935, 35308, 927, 279, 16053};
  const std::vector<float> want = LastLogits(bf16->get(), 1, tokens);
  const std::vector<float> tp1 = LastLogits(quant->get(), 1, tokens);
  const std::vector<float> tp2 = LastLogits(quant->get(), 2, tokens);
  ASSERT_EQ(tp1.size(), want.size());
  ASSERT_EQ(tp2.size(), want.size());
  // 8-bit weights move the logits: measured cosine to bf16 0.99996 for int8
  // (per-row steps of max|w| / 127), 0.992-0.994 for FP8 (3 mantissa bits:
  // up to 6% per weight). A wrong scale or code gives far less.
  const double min_cosine = v.format == WeightFormat::kInt8 ? 0.999 : 0.98;
  EXPECT_GT(Gap(want, tp1).cosine, min_cosine) << v.name << " cosine";
  // Tensor parallelism only reorders f32 sums.
  const LogitGap tp = Gap(tp1, tp2);
  EXPECT_LE(tp.max_diff, 1e-4 * tp.max_abs) << v.name;
}

// An 8-bit model's bf16 lm_head is quantized to int8 rows at load unless
// --lm-head as-stored; the logits move by the int8 rounding of those rows
// only, and a decode step reads half the lm_head's bytes.
TEST_P(QuantizedModelTest, LmHeadIsQuantizedAtLoadUnlessAsked) {
  const Variant v = GetParam();
  auto quant = Model::Load(QuantizedDir(v));
  auto bf16 = Model::Load(testing::TinyModelDir());
  ASSERT_TRUE(quant.ok() && bf16.ok());
  const LinearWeight& head = (*quant)->lm_head();
  ASSERT_EQ(head.format, WeightFormat::kBf16);  // tied to the bf16 embeddings
  ExecutorOptions options;
  options.tp = 1;
  options.kv_cache_bytes = int64_t{4} << 20;
  auto automatic = Executor::Create(quant->get(), options);
  options.lm_head = LmHeadFormat::kAsStored;
  auto stored = Executor::Create(quant->get(), options);
  auto plain = Executor::Create(bf16->get(), options);
  options.lm_head = LmHeadFormat::kAuto;
  auto plain_auto = Executor::Create(bf16->get(), options);
  options.lm_head = LmHeadFormat::kInt8;
  auto plain_int8 = Executor::Create(bf16->get(), options);
  ASSERT_TRUE(automatic.ok() && stored.ok() && plain.ok() && plain_auto.ok() && plain_int8.ok());
  EXPECT_EQ((*automatic)->lm_head_format(), WeightFormat::kInt8);
  EXPECT_EQ((*stored)->lm_head_format(), WeightFormat::kBf16);
  EXPECT_EQ((*plain_auto)->lm_head_format(), WeightFormat::kBf16);
  EXPECT_EQ((*plain_int8)->lm_head_format(), WeightFormat::kInt8);
  EXPECT_EQ((*stored)->decode_weight_bytes(), (*quant)->decode_weight_bytes());
  EXPECT_EQ((*automatic)->decode_weight_bytes(),
            (*quant)->decode_weight_bytes() - head.rows * head.cols * 2 +
                head.rows * (head.cols + int64_t{sizeof(float)}));
  EXPECT_EQ((*automatic)->owned_weight_bytes(), head.rows * head.cols);

  const std::vector<int32_t> tokens = {128000, 791, 4062, 14198, 39935, 35308, 927, 279, 16053};
  const std::vector<float> as_stored = LastLogits(quant->get(), 1, tokens, LmHeadFormat::kAsStored);
  const std::vector<float> int8 = LastLogits(quant->get(), 1, tokens, LmHeadFormat::kInt8);
  ASSERT_EQ(as_stored.size(), int8.size());
  // Per-row int8 steps of max|row| / 127 on random rows: the quantized rows
  // are not the bf16 ones, so some logit moves, a little.
  const LogitGap gap = Gap(as_stored, int8);
  EXPECT_GT(gap.cosine, 0.9999) << v.name;
  EXPECT_GT(gap.max_diff, 0.0f) << v.name;
  EXPECT_LT(gap.max_diff, 0.05f * gap.max_abs) << v.name;
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantizedModelTest, ::testing::ValuesIn(kVariants),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                           std::string name = info.param.name;
                           for (char& ch : name) ch = ch == '-' ? '_' : ch;
                           return name;
                         });

// ---- malformed checkpoints ----

struct RawTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

void WriteSafetensors(const std::string& path, const std::map<std::string, RawTensor>& tensors) {
  nlohmann::ordered_json header;
  uint64_t offset = 0;
  std::string data;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", t.dtype},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
    data += t.bytes;
  }
  const std::string text = header.dump();
  const uint64_t len = text.size();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << text << data;
}

// A copy of the int8 checkpoint with `edit` applied to its tensors and
// `edit_config` to its config.json; returns Model::Load's status.
absl::Status LoadEdited(const std::string& what,
                        const std::function<void(std::map<std::string, RawTensor>&)>& edit,
                        const std::function<void(nlohmann::json&)>& edit_config = nullptr) {
  const std::string src = QuantizedDir(kVariants[0]);
  const std::string dir = TempDir("edited-" + what);
  fs::create_directories(dir);
  auto ckpt = SafetensorsCheckpoint::OpenDir(src);
  EXPECT_TRUE(ckpt.ok());
  std::map<std::string, RawTensor> tensors;
  for (const std::string& name : (*ckpt)->TensorNames()) {
    const TensorInfo* info = *(*ckpt)->Info(name);
    tensors[name] = {
        TensorDTypeName(info->stored_dtype), info->shape,
        std::string(reinterpret_cast<const char*>(info->raw.data()), info->raw.size())};
  }
  edit(tensors);
  WriteSafetensors(dir + "/model.safetensors", tensors);
  std::ifstream in(src + "/config.json");
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json config = nlohmann::json::parse(text.str());
  if (edit_config) edit_config(config);
  std::ofstream(dir + "/config.json") << config.dump();
  fs::copy_file(src + "/generation_config.json", dir + "/generation_config.json");
  const absl::Status status = Model::Load(dir).status();
  fs::remove_all(dir);
  return status;
}

class MalformedQuantizedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testing::TinyModelDir().empty()) GTEST_SKIP() << "tokenizer files are not installed";
  }
};

constexpr char kQ[] = "model.layers.0.self_attn.q_proj";

TEST_F(MalformedQuantizedTest, UneditedCopyLoads) {
  EXPECT_TRUE(LoadEdited("none", [](auto&) {}).ok());
}

TEST_F(MalformedQuantizedTest, BlockWiseScalesAreRefusedNamingTheTensor) {
  const absl::Status s = LoadEdited("block", [](std::map<std::string, RawTensor>& t) {
    t[std::string(kQ) + ".weight_scale"] = {"F32", {2, 2}, std::string(16, '\0')};
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(std::string(kQ) + ".weight_scale"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("block-wise"));
}

TEST_F(MalformedQuantizedTest, WrongWeightShapeIsRefused) {
  const absl::Status s = LoadEdited("shape", [](std::map<std::string, RawTensor>& t) {
    const int64_t dims[2] = {7, 9};
    t[std::string(kQ) + ".weight_shape"].bytes =
        std::string(reinterpret_cast<const char*>(dims), 16);
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("weight_shape is [7, 9]"));
}

TEST_F(MalformedQuantizedTest, MissingScaleIsNotFound) {
  const absl::Status s = LoadEdited("noscale", [](std::map<std::string, RawTensor>& t) {
    t.erase(std::string(kQ) + ".weight_scale");
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr(".weight_scale"));
}

TEST_F(MalformedQuantizedTest, QuantizedTensorsWithoutAConfigAreRefused) {
  const absl::Status s = LoadEdited(
      "noconfig", [](auto&) {}, [](nlohmann::json& c) { c.erase("quantization_config"); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("declares none"));
}

TEST_F(MalformedQuantizedTest, QuantizedTensorsOfAnIgnoredModuleAreRefused) {
  const absl::Status s = LoadEdited(
      "ignored", [](auto&) {},
      [](nlohmann::json& c) {
        c["quantization_config"]["ignore"].push_back(R"(re:.*layers\.0\.self_attn\.q_proj)");
      });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(std::string(kQ) + " as unquantized"));
}

TEST_F(MalformedQuantizedTest, UnsupportedSchemeInConfigIsRefused) {
  const absl::Status s = LoadEdited(
      "group", [](auto&) {},
      [](nlohmann::json& c) {
        c["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] = "group";
      });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("strategy \"group\""));
}

TEST_F(MalformedQuantizedTest, QuantizedEmbeddingsAreRefused) {
  const absl::Status s = LoadEdited("embed", [](std::map<std::string, RawTensor>& t) {
    RawTensor& e = t["model.embed_tokens.weight"];
    e.dtype = "F8_E4M3";
    e.bytes.resize(e.bytes.size() / 2);
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.embed_tokens.weight is F8_E4M3"));
}

TEST_F(MalformedQuantizedTest, QuantizingAQuantizedCheckpointIsRefused) {
  QuantizeOptions o;
  const absl::Status s = QuantizeCheckpoint(QuantizedDir(kVariants[0]), TempDir("twice"), o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("already quantized"));
  fs::remove_all(TempDir("twice"));
}

}  // namespace
}  // namespace tern::worker
