#include "cli/cpu_set.h"

#include <sched.h>

#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "worker/model/model_config.h"

namespace tern::cli {
namespace {

TEST(CpuSetTest, ProcessCpusAreDistinctAndAscending) {
  const std::vector<int32_t> cpus = ProcessCpus();
  ASSERT_FALSE(cpus.empty());
  for (size_t i = 1; i < cpus.size(); ++i) EXPECT_LT(cpus[i - 1], cpus[i]);
}

TEST(CpuSetTest, SpareCpusAreThoseNoRankTakes) {
  // Two workers of three CPUs each, tp 2 and tp 3; a third worker's ranks
  // count as all of its group when its tp is not given.
  EXPECT_EQ(SpareCpus({{0, 1, 2}, {3, 4, 5}}, {2, 3}), (std::vector<int32_t>{2}));
  EXPECT_EQ(SpareCpus({{0, 1, 2}, {3, 4, 5}, {6, 7}}, {1, 2}), (std::vector<int32_t>{1, 2, 5}));
  EXPECT_TRUE(SpareCpus({{0, 1}}, {2}).empty());
  // More workers than CPUs share them: a CPU any rank uses is not spare.
  EXPECT_TRUE(SpareCpus({{0}, {1}, {0}}, {1, 1, 1}).empty());
  EXPECT_TRUE(SpareCpus({}, {}).empty());
}

TEST(CpuSetTest, ScopedThreadAffinityRestrictsThenRestores) {
  const std::vector<int32_t> cpus = ProcessCpus();
  std::thread([&] {
    cpu_set_t before;
    ASSERT_EQ(sched_getaffinity(0, sizeof(before), &before), 0);
    {
      const ScopedThreadAffinity scoped({cpus.back()});
      ASSERT_TRUE(scoped.applied());
      cpu_set_t during;
      ASSERT_EQ(sched_getaffinity(0, sizeof(during), &during), 0);
      EXPECT_EQ(CPU_COUNT(&during), 1);
      EXPECT_TRUE(CPU_ISSET(cpus.back(), &during));
    }
    cpu_set_t after;
    ASSERT_EQ(sched_getaffinity(0, sizeof(after), &after), 0);
    EXPECT_TRUE(CPU_EQUAL(&before, &after));
    const ScopedThreadAffinity none({});
    EXPECT_FALSE(none.applied());
  }).join();
}

TEST(CpuSetTest, DividesIntoContiguousGroupsDifferingByAtMostOne) {
  const std::vector<int32_t> cpus = {0, 1, 2, 3, 4, 5, 6, 8, 9, 10};
  const auto groups = DivideCpus(cpus, 3);
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0], (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(groups[1], (std::vector<int32_t>{4, 5, 6}));
  EXPECT_EQ(groups[2], (std::vector<int32_t>{8, 9, 10}));
}

TEST(CpuSetTest, EveryCpuGoesToExactlyOneWorker) {
  std::vector<int32_t> cpus;
  for (int32_t c = 0; c < 37; ++c) cpus.push_back(c * 2);
  for (int workers = 1; workers <= 37; ++workers) {
    const auto groups = DivideCpus(cpus, workers);
    ASSERT_EQ(groups.size(), static_cast<size_t>(workers));
    std::vector<int32_t> joined;
    size_t smallest = cpus.size(), largest = 0;
    for (const auto& g : groups) {
      joined.insert(joined.end(), g.begin(), g.end());
      smallest = std::min(smallest, g.size());
      largest = std::max(largest, g.size());
    }
    EXPECT_EQ(joined, cpus) << workers << " workers";
    EXPECT_LE(largest - smallest, 1u) << workers << " workers";
  }
}

TEST(CpuSetTest, MoreWorkersThanCpusShareRoundRobin) {
  const auto groups = DivideCpus({3, 7}, 5);
  ASSERT_EQ(groups.size(), 5u);
  const std::vector<int32_t> expected = {3, 7, 3, 7, 3};
  for (size_t i = 0; i < groups.size(); ++i) {
    EXPECT_EQ(groups[i], std::vector<int32_t>{expected[i]});
  }
}

TEST(CpuSetTest, NothingToDivide) {
  EXPECT_TRUE(DivideCpus({}, 2).empty());
  EXPECT_TRUE(DivideCpus({0, 1}, 0).empty());
}

TEST(CpuSetTest, FlagListsCpusWithCommas) {
  EXPECT_EQ(CpuListFlag({0, 2, 15}), "0,2,15");
  EXPECT_EQ(CpuListFlag({4}), "4");
}

TEST(CpuSetTest, LargestValidTpDividesHeadsKvHeadsAndMlp) {
  worker::ModelConfig config;
  config.num_attention_heads = 32;
  config.num_key_value_heads = 8;
  config.intermediate_size = 8192;
  EXPECT_EQ(LargestValidTp(config, 16), 8);  // capped by the kv heads
  EXPECT_EQ(LargestValidTp(config, 6), 4);
  EXPECT_EQ(LargestValidTp(config, 3), 2);
  EXPECT_EQ(LargestValidTp(config, 1), 1);
  config.intermediate_size = 8190;  // only 2 of 2, 4, 8 divides it
  EXPECT_EQ(LargestValidTp(config, 8), 2);
}

}  // namespace
}  // namespace tern::cli
