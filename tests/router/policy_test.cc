// Routing policy decisions, including the hot-spot guard.
#include "router/policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <vector>

namespace tern::router {
namespace {

WorkerLoadView View(int32_t running, int32_t matched, int64_t queued_prefill = 0) {
  WorkerLoadView view;
  view.running = running;
  view.matched_blocks = matched;
  view.queued_prefill_tokens = queued_prefill;
  return view;
}

TEST(PolicyTest, ParsesTheFourPolicies) {
  for (const char* name : {"prefix", "least-loaded", "round-robin", "random"}) {
    auto kind = ParsePolicyKind(name);
    ASSERT_TRUE(kind.ok()) << name;
    EXPECT_STREQ(PolicyKindName(*kind), name);
  }
  EXPECT_FALSE(ParsePolicyKind("fastest").ok());
}

TEST(PolicyTest, PrefixPrefersTheWorkerHoldingThePrompt) {
  PolicyOptions options;
  const std::vector<WorkerLoadView> workers = {View(2, 0), View(3, 40), View(2, 10)};
  const Decision d = ChooseWorker(options, workers, /*prompt_blocks=*/50, 1, 0);
  EXPECT_EQ(d.index, 1u);
  EXPECT_EQ(d.reason, DecisionReason::kCacheHit);
  EXPECT_DOUBLE_EQ(d.cost, 10 + 3);
}

TEST(PolicyTest, QueuedPrefillCountsAgainstAWorker) {
  PolicyOptions options;
  // Worker 0 holds 8 of 10 blocks but has 20 blocks of prefill queued.
  const std::vector<WorkerLoadView> workers = {View(1, 8, 20 * 16), View(1, 0)};
  EXPECT_EQ(ChooseWorker(options, workers, 10, 1, 0).index, 1u);
}

TEST(PolicyTest, HotSpotGuardSendsToTheLeastLoaded) {
  PolicyOptions options;
  options.imbalance_abs = 4;
  options.imbalance_rel = 1.5;
  // Worker 0 holds the whole popular prompt but is far busier.
  std::vector<WorkerLoadView> workers = {View(12, 100), View(2, 0), View(3, 0)};
  Decision d = ChooseWorker(options, workers, 100, 7, 0);
  EXPECT_EQ(d.index, 1u);
  EXPECT_EQ(d.reason, DecisionReason::kImbalance);
  // Within the thresholds the cached prefix wins even though it is busier.
  workers[0].running = 6;
  d = ChooseWorker(options, workers, 100, 7, 0);
  EXPECT_EQ(d.index, 0u);
  EXPECT_EQ(d.reason, DecisionReason::kCacheHit);
}

TEST(PolicyTest, OnePopularPrefixNeverTakesAllTraffic) {
  // Every request shares a prompt only worker 0 holds; the router's own
  // in-flight accounting grows as it dispatches. The guard must spread load.
  PolicyOptions options;
  std::vector<WorkerLoadView> workers = {View(0, 64), View(0, 0), View(0, 0), View(0, 0)};
  for (int i = 0; i < 200; ++i) {
    const Decision d = ChooseWorker(options, workers, 64, static_cast<uint64_t>(i), 0);
    ++workers[d.index].inflight;
  }
  int32_t max_inflight = 0;
  int32_t min_inflight = 1 << 30;
  for (const WorkerLoadView& w : workers) {
    max_inflight = std::max(max_inflight, w.inflight);
    min_inflight = std::min(min_inflight, w.inflight);
  }
  // The guard holds the spread within its thresholds (whichever is looser).
  EXPECT_LE(max_inflight, std::max(min_inflight + options.imbalance_abs + 1,
                                   static_cast<int32_t>(options.imbalance_rel * min_inflight) + 1));
  EXPECT_GT(min_inflight, 20);
  EXPECT_GT(workers[0].inflight, workers[1].inflight);  // the cache still pays
}

TEST(PolicyTest, EqualWorkersShareTrafficByTheDraw) {
  PolicyOptions options;
  const std::vector<WorkerLoadView> workers(4, View(1, 0));
  std::map<size_t, int> picks;
  for (uint64_t draw = 0; draw < 400; ++draw)
    ++picks[ChooseWorker(options, workers, 4, draw, 0).index];
  ASSERT_EQ(picks.size(), 4u);
  for (const auto& [index, count] : picks) EXPECT_GT(count, 50) << index;
}

TEST(PolicyTest, FullKvPoolsAreAvoided) {
  PolicyOptions options;
  std::vector<WorkerLoadView> workers = {View(1, 30), View(1, 0)};
  workers[0].kv_usage = 0.99;
  EXPECT_EQ(ChooseWorker(options, workers, 30, 1, 0).index, 1u);
  workers[1].kv_usage = 0.99;  // all full: the score decides again
  EXPECT_EQ(ChooseWorker(options, workers, 30, 1, 0).index, 0u);
}

TEST(PolicyTest, SimplePolicies) {
  PolicyOptions options;
  const std::vector<WorkerLoadView> workers = {View(5, 0), View(1, 0), View(3, 0)};
  options.kind = PolicyKind::kLeastLoaded;
  EXPECT_EQ(ChooseWorker(options, workers, 1, 9, 0).index, 1u);
  options.kind = PolicyKind::kRoundRobin;
  EXPECT_EQ(ChooseWorker(options, workers, 1, 9, 0).index, 0u);
  EXPECT_EQ(ChooseWorker(options, workers, 1, 9, 4).index, 1u);
  options.kind = PolicyKind::kRandom;
  std::map<size_t, int> picks;
  for (uint64_t draw = 0; draw < 300; ++draw)
    ++picks[ChooseWorker(options, workers, 1, draw, 0).index];
  EXPECT_EQ(picks.size(), 3u);
}

}  // namespace
}  // namespace tern::router
