// Routing policy decisions, including the hot-spot guard.
#include "router/core/policy.h"

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

// The worker the session's request goes to among `addresses`, all idle.
std::string StickyWorker(const std::string& key, const std::vector<std::string>& addresses) {
  std::vector<WorkerLoadView> views(addresses.size());
  std::vector<uint64_t> weights;
  for (const std::string& address : addresses) weights.push_back(RendezvousWeight(key, address));
  const Decision d = ChooseWorker(PolicyOptions(), views, 4, 7, 0, weights);
  EXPECT_EQ(d.reason, DecisionReason::kSticky);
  return addresses[d.index];
}

std::vector<std::string> Addresses(int first, int count) {
  std::vector<std::string> addresses;
  for (int i = first; i < first + count; ++i) {
    addresses.push_back("10.0.0." + std::to_string(i) + ":50061");
  }
  return addresses;
}

TEST(PolicyTest, SessionStaysOnItsWorkerWhenOthersComeAndGo) {
  const std::vector<std::string> all = Addresses(1, 5);
  std::vector<std::string> without_third = all;
  without_third.erase(without_third.begin() + 2);
  std::vector<std::string> with_newcomer = all;
  with_newcomer.push_back("10.0.0.99:50061");
  int moved_to_newcomer = 0;
  const int kSessions = 2000;
  for (int s = 0; s < kSessions; ++s) {
    const std::string key = "user-" + std::to_string(s);
    const std::string home = StickyWorker(key, all);
    // Same inputs, same worker: a session sticks.
    EXPECT_EQ(StickyWorker(key, all), home);
    // The candidate order does not matter.
    std::vector<std::string> reversed(all.rbegin(), all.rend());
    EXPECT_EQ(StickyWorker(key, reversed), home);
    // A worker leaving moves only its own sessions.
    if (home != all[2]) EXPECT_EQ(StickyWorker(key, without_third), home) << key;
    // A worker joining takes sessions only for itself.
    const std::string after = StickyWorker(key, with_newcomer);
    if (after != home) {
      EXPECT_EQ(after, with_newcomer.back());
      ++moved_to_newcomer;
    }
  }
  // About 1/6 of the sessions move to the newcomer.
  EXPECT_GT(moved_to_newcomer, kSessions / 6 * 0.7);
  EXPECT_LT(moved_to_newcomer, kSessions / 6 * 1.3);
}

TEST(PolicyTest, SessionsSpreadAboutUniformly) {
  const std::vector<std::string> addresses = Addresses(1, 4);
  std::map<std::string, int> count;
  const int kSessions = 8000;
  for (int s = 0; s < kSessions; ++s) ++count[StickyWorker("s" + std::to_string(s), addresses)];
  ASSERT_EQ(count.size(), 4u);
  // Binomial(8000, 1/4): sd ~39; 10% of the mean is 5 sd.
  for (const auto& [address, n] : count) {
    EXPECT_NEAR(n, kSessions / 4, kSessions / 40) << address;
  }
}

TEST(PolicyTest, HotSpotGuardOverridesSessionAffinity) {
  const std::vector<std::string> addresses = Addresses(1, 3);
  std::vector<uint64_t> weights;
  for (const std::string& address : addresses) {
    weights.push_back(RendezvousWeight("alice", address));
  }
  const size_t home = std::max_element(weights.begin(), weights.end()) - weights.begin();
  PolicyOptions options;  // imbalance_abs 8, imbalance_rel 1.5
  std::vector<WorkerLoadView> views = {View(2, 0), View(2, 0), View(2, 0)};
  views[home].running = 10;  // 8 more than the others: not beyond the guard
  Decision d = ChooseWorker(options, views, 4, 3, 0, weights);
  EXPECT_EQ(d.index, home);
  EXPECT_EQ(d.reason, DecisionReason::kSticky);
  EXPECT_STREQ(DecisionReasonName(d.reason), "sticky");

  views[home].running = 11;  // overloaded: the policy decides
  d = ChooseWorker(options, views, 4, 3, 0, weights);
  EXPECT_NE(d.index, home);
  EXPECT_EQ(d.reason, DecisionReason::kImbalance);
  options.kind = PolicyKind::kLeastLoaded;
  d = ChooseWorker(options, views, 4, 3, 0, weights);
  EXPECT_NE(d.index, home);
  EXPECT_EQ(d.reason, DecisionReason::kLeastLoaded);

  // Without a session the prefix policy's own choice stands.
  options.kind = PolicyKind::kPrefix;
  views = {View(2, 0), View(2, 0), View(2, 0)};
  views[(home + 1) % 3].matched_blocks = 4;
  d = ChooseWorker(options, views, 4, 3, 0);
  EXPECT_EQ(d.index, (home + 1) % 3);
  EXPECT_EQ(d.reason, DecisionReason::kCacheHit);
}

TEST(PolicyTest, ModelPoliciesAreParsedAndUnknownOnesNamed) {
  auto kinds = ParseModelPolicies({{"llama-8b", "round-robin"}, {"llama-1b", "least-loaded"}});
  ASSERT_TRUE(kinds.ok()) << kinds.status();
  EXPECT_EQ(kinds->at("llama-8b"), PolicyKind::kRoundRobin);
  EXPECT_EQ(kinds->at("llama-1b"), PolicyKind::kLeastLoaded);
  kinds = ParseModelPolicies({{"llama-8b", "prefix"}, {"llama-1b", "fastest"}});
  ASSERT_FALSE(kinds.ok());
  EXPECT_EQ(kinds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(kinds.status().message().find("router.model_policies.llama-1b"), std::string::npos)
      << kinds.status();
  EXPECT_NE(kinds.status().message().find("fastest"), std::string::npos);
}

}  // namespace
}  // namespace tern::router
