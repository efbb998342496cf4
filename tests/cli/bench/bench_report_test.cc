#include "cli/bench/bench_report.h"

#include "gtest/gtest.h"

namespace tern::cli {
namespace {

worker::ModelConfig Llama32OneB() {
  worker::ModelConfig c;
  c.hidden_size = 2048;
  c.intermediate_size = 8192;
  c.num_hidden_layers = 16;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  c.head_dim = 64;
  c.vocab_size = 128256;
  c.tie_word_embeddings = true;
  return c;
}

TEST(BenchReportTest, ModelCostMatchesLlama32OneBParameterCount) {
  // Meta's published count for Llama-3.2-1B (tied embeddings): 1,235,814,400.
  const ModelCost cost = ComputeModelCost(Llama32OneB());
  EXPECT_EQ(cost.total_params, 1235814400);
  EXPECT_EQ(cost.weight_bytes, 2 * 1235814400LL);
  EXPECT_EQ(cost.lm_head_params, 128256LL * 2048);
  EXPECT_EQ(cost.matmul_params, cost.layer_params + cost.lm_head_params);
  // 16 layers x (k + v) x 8 heads x 64 dims x 4 bytes.
  EXPECT_EQ(cost.kv_bytes_per_token, 16 * 2 * 512 * 4);
}

TEST(BenchReportTest, UntiedModelsCountTheirEmbeddingsOnceMore) {
  worker::ModelConfig config = Llama32OneB();
  config.tie_word_embeddings = false;
  EXPECT_EQ(ComputeModelCost(config).total_params, 1235814400LL + 128256LL * 2048);
  EXPECT_EQ(ComputeModelCost(config).matmul_params, ComputeModelCost(Llama32OneB()).matmul_params);
  EXPECT_EQ(ComputeModelCost(config).matmul_bytes, 2 * ComputeModelCost(config).matmul_params);
}

TEST(BenchReportTest, FlopsAndBytesPerStep) {
  ModelCost cost;
  cost.layer_params = 1000;
  cost.lm_head_params = 100;
  cost.matmul_params = 1100;
  cost.matmul_bytes = 2 * 1100;
  cost.layers = 2;
  cost.q_dim = 8;
  cost.kv_bytes_per_token = 64;
  // 3 tokens attend to 1 + 2 + 3 positions.
  EXPECT_DOUBLE_EQ(PrefillFlops(cost, 3), 2.0 * 1000 * 3 + 2.0 * 100 + 4.0 * 2 * 8 * 6);
  EXPECT_DOUBLE_EQ(PrefillBytes(cost, 2), 2.0 * (1000 * 2 + 100));
  EXPECT_DOUBLE_EQ(DecodeStepFlops(cost, 4, 10), 4 * (2.0 * 1100 + 4.0 * 2 * 8 * 10));
  EXPECT_DOUBLE_EQ(DecodeStepBytes(cost, 4, 10), 2.0 * 1100 + 4 * 10 * 64);
  // Int8 layers (one byte a weight) with a bf16 lm_head.
  cost.matmul_bytes = 1000 + 2 * 100;
  EXPECT_DOUBLE_EQ(PrefillBytes(cost, 2), 1000 * 2 + 2.0 * 100);
  EXPECT_DOUBLE_EQ(DecodeStepBytes(cost, 4, 10), 1000 + 2.0 * 100 + 4 * 10 * 64);
}

BenchSummary PassingSummary() {
  BenchSummary s;
  s.prefill_tokens = 512;
  s.prefill_tern = 300;
  s.prefill_llama = 200;
  s.decode1_tern = 30;
  s.decode1_llama = 20;
  s.decode1_bw_fraction = 0.85;
  s.big_batch = 32;
  s.decode_big_tern = 240;
  // Above its 1.3x threshold, so the 8x-batch-1 break below fails only that
  // target; the 1.3x break lowers llama.cpp's figure to just past it.
  s.decode_big_llama = 150;
  s.decode_big_fma_fraction = 0.6;
  s.ttft_cold_s = 1.0;
  s.ttft_cached_s = 0.1;
  s.peak_rss_bytes = 110;
  s.weights_plus_kv_bytes = 100;
  return s;
}

TEST(BenchReportTest, TargetsAtTheirThresholdsAreMet) {
  const auto checks = CheckTargets(PassingSummary());
  ASSERT_EQ(checks.size(), 8u);
  for (const auto& check : checks) {
    ASSERT_TRUE(check.met.has_value()) << check.description;
    EXPECT_TRUE(*check.met) << check.description << ": " << check.detail;
  }
}

TEST(BenchReportTest, EachTargetFailsJustPastItsThreshold) {
  const std::vector<std::function<void(BenchSummary&)>> breaks = {
      [](BenchSummary& s) { s.decode1_llama = 20.1; },
      [](BenchSummary& s) { s.decode1_bw_fraction = 0.849; },
      [](BenchSummary& s) { s.prefill_llama = 200.1; },
      [](BenchSummary& s) { s.decode_big_tern = 239; },
      [](BenchSummary& s) { s.decode_big_fma_fraction = 0.599; },
      [](BenchSummary& s) { s.decode_big_llama = 240 / 1.299; },
      [](BenchSummary& s) { s.ttft_cached_s = 0.101; },
      [](BenchSummary& s) { s.peak_rss_bytes = 110.1; },
  };
  for (size_t i = 0; i < breaks.size(); ++i) {
    BenchSummary s = PassingSummary();
    breaks[i](s);
    const auto checks = CheckTargets(s);
    for (size_t j = 0; j < checks.size(); ++j) {
      ASSERT_TRUE(checks[j].met.has_value());
      EXPECT_EQ(*checks[j].met, i != j) << "break " << i << ", " << checks[j].description;
    }
  }
}

TEST(BenchReportTest, MissingFiguresAreNotApplicable) {
  BenchSummary s = PassingSummary();
  s.decode1_llama.reset();
  s.prefill_llama.reset();
  const auto checks = CheckTargets(s);
  EXPECT_FALSE(checks[0].met.has_value());
  EXPECT_FALSE(checks[2].met.has_value());
  EXPECT_TRUE(checks[1].met.value_or(false));
  const std::string text = FormatTargets(checks);
  EXPECT_NE(text.find("n/a      decode batch 1 >= 1.5x llama.cpp"), std::string::npos) << text;
  EXPECT_NE(text.find("met      decode batch 1 >= 85%"), std::string::npos) << text;
}

TEST(BenchReportTest, TableShowsRatiosAndAlignsColumns) {
  const std::string table = FormatFigureTable({
      {"prefill 512", "tok/s", 300.0, 200.0, "fma 50.0%"},
      {"TTFT 2048 cold", "s", 1.5, std::nullopt, ""},
  });
  EXPECT_NE(table.find("figure"), std::string::npos);
  EXPECT_NE(table.find("prefill 512 (tok/s) | 300  | 200       | 1.50x | fma 50.0%"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("TTFT 2048 cold (s)  | 1.50 | n/a       | n/a   | -"), std::string::npos)
      << table;
}

}  // namespace
}  // namespace tern::cli
