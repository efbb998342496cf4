// The trn2 comparison: tern's engine carries the recipe's limits, the seed's
// cost model run through the simulator gives back the seed's published
// single-request figures, and one trace runs on both setups.
#include "cli/bench/trn2_fleet.h"

#include <sstream>

#include "gtest/gtest.h"

namespace tern::cli {
namespace {

TEST(Trn2EngineModelTest, CarriesTheRecipeLimits) {
  const SimCostModel m = Trn2EngineModel();
  EXPECT_EQ(m.engines_per_instance, 4);
  EXPECT_EQ(m.block_size, 128);
  EXPECT_EQ(m.max_num_seqs, 8);
  EXPECT_EQ(m.prefill_chunk, 8192);
  EXPECT_EQ(m.prefill_buckets, std::vector<int32_t>{8192});
  EXPECT_EQ(m.decode_buckets, std::vector<int32_t>{8});
  EXPECT_TRUE(m.separate_prefill);
  EXPECT_TRUE(m.prefix_caching);
  // 4 x 96 GiB x 0.9 x 0.30 over 128 tokens x 160 KiB of FP8 KV.
  EXPECT_EQ(m.cache_blocks, 5308);
  EXPECT_EQ(Trn2Preset().cache_blocks, m.cache_blocks);
}

TEST(Trn2EngineModelTest, DerivesItsCostsFromTheSeedFigures) {
  const SimCostModel m = Trn2EngineModel({2, 2});
  // The seed's 12288-token bucket in 814.2 ms, at half the speed: an
  // 8192-token chunk, and anything smaller padded to it.
  EXPECT_NEAR(m.PrefillSeconds(8192), 0.8142 * 8192 / 12288 * 2, 1e-9);
  EXPECT_DOUBLE_EQ(m.PrefillSeconds(1000), m.PrefillSeconds(8192));
  EXPECT_DOUBLE_EQ(m.decode_step_ms, 39.2);
  // KV of a 10,750-token sequence over 70.6 GB of weights: 2.5% a sequence.
  EXPECT_NEAR(m.decode_step_growth_ms / m.decode_step_ms, 10750.0 * 163840 / 70.6e9, 1e-12);
  EXPECT_NEAR(m.decode_step_growth_ms / m.decode_step_ms, 0.025, 0.0005);
  // Every batch runs as 8.
  EXPECT_DOUBLE_EQ(m.DecodeStepSeconds(1), m.DecodeStepSeconds(8));
  EXPECT_NEAR(m.DecodeStepSeconds(1), 0.0392 * (1 + 7 * 10750.0 * 163840 / 70.6e9), 1e-12);
  const SimCostModel bound = Trn2EngineModel({4, 4});
  EXPECT_NEAR(bound.PrefillSeconds(8192), 2 * m.PrefillSeconds(8192), 1e-12);
  EXPECT_NEAR(bound.DecodeStepSeconds(8), 2 * m.DecodeStepSeconds(8), 1e-12);
}

TEST(Trn2SeedModelTest, ReproducesThePublishedSingleRequestFigures) {
  const SimCostModel seed = Trn2SeedModel();
  EXPECT_EQ(seed.max_num_seqs, 1);
  EXPECT_EQ(seed.engines_per_instance, 1);
  EXPECT_FALSE(seed.prefix_caching);
  SimWorkload one;
  one.requests = 1;
  one.groups = 1;
  one.prefix_len = 9000;
  one.question_len = 1000;
  one.output_len = 1500;
  auto r = SimulateFleet(seed, 1, router::PolicyKind::kPrefix, one);
  ASSERT_TRUE(r.ok()) << r.status();
  // Published (LLMPerf p50): TTFT 814.2 ms, TPOT 19.6 ms, e2e 30.33 s,
  // 49.50 output tok/s per request.
  EXPECT_NEAR(r->ttft_ms.median, 814.2, 0.5);
  EXPECT_NEAR(r->tpot_ms.median, 19.6, 0.01);
  EXPECT_NEAR(r->sim_seconds, 30.33, 0.01 * 30.33);
  EXPECT_NEAR(r->output_tokens_per_s, 49.50, 0.01 * 49.50);
}

TEST(Trn2SeedModelTest, ServesOneRequestAtATime) {
  SimWorkload two;
  two.requests = 2;
  two.groups = 1;
  two.prefix_len = 9000;
  two.question_len = 1000;
  two.output_len = 1500;
  two.requests_per_s = 1e6;  // both at once
  auto r = SimulateFleet(Trn2SeedModel(), 1, router::PolicyKind::kPrefix, two);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->completed, 2);
  // The second waits for the first to finish, as the published TTFT p75
  // (30.5 s) did; nothing is reused.
  const double e2e = 0.8142 + 1499 * 0.0196;
  EXPECT_NEAR(r->ttft_ms.mean, 1e3 * (0.8142 + (e2e + 0.8142)) / 2, 1.0);
  EXPECT_DOUBLE_EQ(r->actual_hit_rate, 0);
}

TEST(Trn2ComparisonTest, RunsEverySetupOnTheSameTrace) {
  Trn2Options options;
  options.requests = 40;
  options.groups = 4;
  options.loads = {10};
  auto rows = RunTrn2Comparison(options, Trn2EngineModel());
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 5u);
  const Trn2Row& seed = (*rows)[0];
  const Trn2Row& tern = (*rows)[1];
  EXPECT_EQ(seed.setup, "seed 1xTP64 b1");
  EXPECT_EQ(tern.setup, "tern prefix slack 2");
  EXPECT_EQ((*rows)[2].setup, "tern prefix slack 0");
  for (const Trn2Row& row : *rows) EXPECT_EQ(row.result.completed, 40) << row.setup;
  // Offered 10x what the seed delivers: the seed saturates at one request
  // per ~30 s and queues; tern's engines batch and reuse the prefixes.
  EXPECT_LT(seed.tokens_per_s_per_instance, 55);
  EXPECT_GT(tern.tokens_per_s_per_instance, 4 * seed.tokens_per_s_per_instance);
  EXPECT_GT(seed.result.ttft_ms.median, 10 * tern.result.ttft_ms.median);
  EXPECT_DOUBLE_EQ(seed.result.actual_hit_rate, 0);
  EXPECT_GT(tern.result.actual_hit_rate, 0.5);
}

TEST(Trn2ComparisonTest, ReportStatesAssumptionsAndVerdict) {
  Trn2Options options;
  options.requests = 24;
  options.groups = 2;
  options.loads = {1};
  std::ostringstream out;
  ASSERT_TRUE(PrintTrn2Report(options, Trn2EngineModel(), out).ok());
  const std::string text = out.str();
  for (const char* needle :
       {"trn2-llama3.3-70b-tutorial", "trn2-llama3.3-70b-dp-tutorial", "neuron-scheduler.md",
        "tutorial-llama3-70b.md", "814.2 ms", "19.6 ms", "target: >= 10 x 36.56"}) {
    EXPECT_NE(text.find(needle), std::string::npos) << needle << "\n" << text;
  }
  EXPECT_TRUE(text.find("target met") != std::string::npos ||
              text.find("target NOT met") != std::string::npos)
      << text;
}

TEST(Trn2ComparisonTest, RejectsBadSizes) {
  Trn2Options options;
  options.instances = 0;
  EXPECT_FALSE(RunTrn2Comparison(options, Trn2EngineModel()).ok());
  options.instances = 1;
  options.loads = {};
  EXPECT_FALSE(RunTrn2Comparison(options, Trn2EngineModel()).ok());
}

}  // namespace
}  // namespace tern::cli
