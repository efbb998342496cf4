// Parsing of the quantization configs the engine accepts (ModelOpt FP8 in
// config.json or hf_quant_config.json, compressed-tensors FP8 and int8) and
// the clear refusal of everything it cannot compute.
#include "worker/model/quantization.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace tern::worker {
namespace {

using ::testing::HasSubstr;

std::string WithQuant(const std::string& quantization_config) {
  return R"({"model_type": "llama", "quantization_config": )" + quantization_config + "}";
}

std::string CompressedTensors(const std::string& format, const std::string& weights,
                              const std::string& extra = "") {
  return WithQuant(R"({"quant_method": "compressed-tensors", "format": ")" + format +
                   R"(", "config_groups": {"group_0": {"targets": ["Linear"], "weights": )" +
                   weights + extra + R"(}}, "ignore": ["lm_head", "re:.*layers\\.0\\.mlp.*"]})");
}

std::string Weights(const std::string& type, const std::string& strategy, int bits = 8,
                    const std::string& more = "") {
  return R"({"num_bits": )" + std::to_string(bits) + R"(, "type": ")" + type +
         R"(", "symmetric": true, "strategy": ")" + strategy + R"(", "dynamic": false)" + more +
         "}";
}

std::string ErrorOf(const std::string& config, const std::string& hf = "") {
  auto q = ParseQuantizationConfig(config, hf);
  EXPECT_FALSE(q.ok());
  return q.ok() ? "" : std::string(q.status().message());
}

TEST(QuantizationConfigTest, NoneWithoutAConfig) {
  auto q = ParseQuantizationConfig(R"({"model_type": "llama"})", "");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->layout, QuantLayout::kNone);
  EXPECT_EQ(q->format, WeightFormat::kBf16);
}

TEST(QuantizationConfigTest, ReadsModelOptFp8FromConfigJson) {
  auto q = ParseQuantizationConfig(WithQuant(R"({"quant_method": "modelopt", "quant_algo": "FP8",
                   "kv_cache_quant_algo": "FP8", "exclude_modules": ["lm_head", "*.mlp.down*"]})"),
                                   "");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->layout, QuantLayout::kModelOpt);
  EXPECT_EQ(q->format, WeightFormat::kFp8);
  EXPECT_EQ(q->strategy, "tensor");
  EXPECT_TRUE(q->Ignores("lm_head"));
  EXPECT_TRUE(q->Ignores("model.layers.3.mlp.down_proj"));
  EXPECT_FALSE(q->Ignores("model.layers.3.mlp.up_proj"));
}

TEST(QuantizationConfigTest, ReadsModelOptFp8FromHfQuantConfig) {
  auto q = ParseQuantizationConfig(R"({"model_type": "llama"})",
                                   R"({"producer": {"name": "modelopt", "version": "0.19.0"},
                                       "quantization": {"quant_algo": "FP8",
                                                        "kv_cache_quant_algo": null,
                                                        "exclude_modules": ["lm_head"]}})");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->layout, QuantLayout::kModelOpt);
  EXPECT_EQ(q->format, WeightFormat::kFp8);
  EXPECT_TRUE(q->Ignores("lm_head"));
}

TEST(QuantizationConfigTest, ReadsCompressedTensorsFp8AndInt8) {
  for (const char* strategy : {"tensor", "channel"}) {
    // FP8_DYNAMIC-style activations are accepted and not applied.
    auto q = ParseQuantizationConfig(
        CompressedTensors("float-quantized", Weights("float", strategy),
                          R"(, "input_activations": {"num_bits": 8, "type": "float",
                                "strategy": "token", "dynamic": true})"),
        "");
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_EQ(q->layout, QuantLayout::kCompressedTensors);
    EXPECT_EQ(q->format, WeightFormat::kFp8);
    EXPECT_EQ(q->strategy, strategy);
    EXPECT_TRUE(q->Ignores("lm_head"));
    EXPECT_TRUE(q->Ignores("model.layers.0.mlp.up_proj"));
    EXPECT_FALSE(q->Ignores("model.layers.1.mlp.up_proj"));
  }
  auto q =
      ParseQuantizationConfig(CompressedTensors("pack-quantized", Weights("int", "channel")), "");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->format, WeightFormat::kInt8);
  EXPECT_EQ(q->strategy, "channel");
}

TEST(QuantizationConfigTest, RefusesWhatItCannotCompute) {
  EXPECT_THAT(ErrorOf(CompressedTensors("float-quantized", Weights("float", "block"))),
              HasSubstr("strategy \"block\""));
  EXPECT_THAT(ErrorOf(CompressedTensors("pack-quantized", Weights("int", "group"))),
              HasSubstr("group and block-wise"));
  EXPECT_THAT(ErrorOf(CompressedTensors("pack-quantized", Weights("int", "channel", 4))),
              HasSubstr("num_bits 4"));
  EXPECT_THAT(ErrorOf(CompressedTensors("int-quantized", Weights("int", "channel"))),
              HasSubstr("\"int-quantized\""));
  EXPECT_THAT(ErrorOf(CompressedTensors("float-quantized",
                                        R"({"num_bits": 8, "type": "float", "strategy": "tensor",
                                            "symmetric": false})")),
              HasSubstr("symmetric false"));
  EXPECT_THAT(ErrorOf(CompressedTensors("float-quantized", Weights("float", "tensor"),
                                        R"(, "input_activations": {"num_bits": 4,
                                              "type": "int", "dynamic": true})")),
              HasSubstr("input_activations.num_bits 4"));
  EXPECT_THAT(ErrorOf(WithQuant(R"({"quant_method": "modelopt", "quant_algo": "NVFP4"})")),
              HasSubstr("quant_algo \"NVFP4\""));
  EXPECT_THAT(ErrorOf(WithQuant(R"({"quant_method": "fp8", "weight_block_size": [128, 128]})")),
              HasSubstr("block-wise"));
  EXPECT_THAT(ErrorOf(WithQuant(R"({"quant_method": "gptq", "bits": 4})")),
              HasSubstr("quant_method \"gptq\""));
  EXPECT_THAT(ErrorOf(R"({"model_type": "llama"})", R"({"quantization": 5})"),
              HasSubstr("hf_quant_config.json"));
}

}  // namespace
}  // namespace tern::worker
