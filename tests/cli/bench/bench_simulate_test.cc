// `tern bench simulate`: the cost model's arithmetic, that the router's
// prefix policy beats round-robin on a shared-prefix workload, and that the
// routing-decision measurement runs (its timings are not asserted).
#include "cli/bench/decision_cost.h"
#include "cli/bench/fleet_simulator.h"
#include "gtest/gtest.h"

namespace tern::cli {
namespace {

TEST(SimCostModelTest, PresetsStateTheirFigures) {
  const SimCostModel cpu = CpuPreset();
  EXPECT_DOUBLE_EQ(cpu.DecodeStepSeconds(1), 0.011);
  EXPECT_NEAR(cpu.DecodeStepSeconds(16), 0.011 + 15 * 0.0004, 1e-12);
  EXPECT_NE(DescribeCostModel(cpu).find("11.00 ms"), std::string::npos);
}

TEST(SimCostModelTest, PadsToTheCompiledBuckets) {
  SimCostModel m;
  m.prefill_tokens_per_s = 1000;
  m.prefill_buckets = {512, 1024};
  m.decode_step_ms = 10;
  m.decode_step_growth_ms = 1;
  m.decode_buckets = {4, 8};
  EXPECT_DOUBLE_EQ(m.PrefillSeconds(1), 0.512);
  EXPECT_DOUBLE_EQ(m.PrefillSeconds(513), 1.024);
  EXPECT_DOUBLE_EQ(m.PrefillSeconds(2000), 2.0);  // past the last bucket: as is
  EXPECT_DOUBLE_EQ(m.DecodeStepSeconds(1), 0.013);
  EXPECT_DOUBLE_EQ(m.DecodeStepSeconds(5), 0.017);
}

TEST(FleetSimulatorTest, SeparatePrefillRunsOneChunkPerStepAndNoDecode) {
  SimCostModel model;
  model.prefill_tokens_per_s = 1000;
  model.prefill_chunk = 512;
  model.prefill_buckets = {512};
  model.decode_step_ms = 10;
  model.decode_step_growth_ms = 0;
  model.separate_prefill = true;
  SimWorkload workload;
  workload.requests = 1;
  workload.groups = 1;
  workload.prefix_len = 590;
  workload.question_len = 10;
  workload.output_len = 3;
  auto r = SimulateFleet(model, 1, router::PolicyKind::kPrefix, workload);
  ASSERT_TRUE(r.ok()) << r.status();
  // 600 tokens: a chunk of 512 and one of 88 padded to 512, then 2 decodes.
  EXPECT_NEAR(r->ttft_ms.median, 1024, 1e-6);
  EXPECT_NEAR(r->tpot_ms.median, 10, 1e-6);
  EXPECT_NEAR(r->sim_seconds, 1.044, 1e-9);
  EXPECT_EQ(r->full_prefills, 1);
}

TEST(FleetSimulatorTest, WithoutPrefixCachingNothingIsReused) {
  SimCostModel model = CpuPreset();
  model.prefix_caching = false;
  SimWorkload workload;
  workload.requests = 64;
  workload.groups = 2;
  workload.prefix_len = 512;
  workload.question_len = 32;
  workload.output_len = 4;
  auto r = SimulateFleet(model, 2, router::PolicyKind::kPrefix, workload);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->completed, 64);
  // (The router may still predict hits from its own routing history.)
  EXPECT_DOUBLE_EQ(r->actual_hit_rate, 0);
  EXPECT_EQ(r->full_prefills, 64);
}

TEST(FleetSimulatorTest, OneRequestTakesPrefillThenDecodeSteps) {
  SimCostModel model = CpuPreset();
  SimWorkload workload;
  workload.requests = 1;
  workload.groups = 1;
  workload.prefix_len = 1000;
  workload.question_len = 24;
  workload.output_len = 5;
  auto r = SimulateFleet(model, 1, router::PolicyKind::kPrefix, workload);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->completed, 1);
  // 1024 tokens at 2000 tok/s in chunks of 512 (no decode alongside): 512 ms;
  // then 4 decode steps of 11 ms at batch 1.
  EXPECT_NEAR(r->ttft_ms.median, 512, 1e-6);
  EXPECT_NEAR(r->sim_seconds, 0.512 + 4 * 0.011, 1e-9);
  EXPECT_NEAR(r->tpot_ms.median, 11, 1e-6);
  EXPECT_DOUBLE_EQ(r->actual_hit_rate, 0);
}

TEST(FleetSimulatorTest, PrefixPolicyBeatsRoundRobinOnSharedPrefixes) {
  const SimCostModel model = CpuPreset();
  SimWorkload workload;
  workload.requests = 256;
  workload.prefix_len = 1024;
  workload.question_len = 64;
  workload.output_len = 16;
  auto prefix = SimulateFleet(model, 8, router::PolicyKind::kPrefix, workload);
  auto round_robin = SimulateFleet(model, 8, router::PolicyKind::kRoundRobin, workload);
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  ASSERT_TRUE(round_robin.ok()) << round_robin.status();
  EXPECT_EQ(prefix->completed, 256);
  EXPECT_EQ(round_robin->completed, 256);
  EXPECT_GT(prefix->actual_hit_rate, round_robin->actual_hit_rate + 0.2)
      << prefix->actual_hit_rate << " vs " << round_robin->actual_hit_rate;
  EXPECT_GT(prefix->predicted_hit_rate, round_robin->predicted_hit_rate);
  // The index is fed only by events, in order.
  EXPECT_EQ(prefix->index_resyncs, 0u);
  // Cached prompt tokens are never more than the prompts.
  EXPECT_LE(prefix->actual_hit_rate, 1.0);
  EXPECT_LE(prefix->predicted_hit_rate, 1.0);
}

TEST(FleetSimulatorTest, MultiTurnRunsEveryTurn) {
  SimWorkload workload;
  workload.dataset = SimDataset::kMultiTurn;
  workload.requests = 40;
  workload.turns = 4;
  workload.question_len = 64;
  workload.output_len = 8;
  auto r = SimulateFleet(CpuPreset(), 4, router::PolicyKind::kPrefix, workload);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->completed, 40);
  // Later turns resend the history: most of it is cached where it was computed.
  EXPECT_GT(r->actual_hit_rate, 0.3);
}

TEST(DecisionCostTest, MeasurementRuns) {
  const DecisionCost cost = MeasureDecisionCost(200, 1000, 50, 3);
  EXPECT_EQ(cost.decisions, 50);
  EXPECT_GT(cost.p50_us, 0);
  EXPECT_LE(cost.p50_us, cost.p99_us);
  EXPECT_LE(cost.p99_us, cost.max_us);
}

}  // namespace
}  // namespace tern::cli
