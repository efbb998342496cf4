// The admission queue's order, limits, affinity choice, fairness bound and
// priority aging.
#include "router/core/admission_queue.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>
#include <vector>

namespace tern::router {
namespace {

const absl::Time kT0 = absl::UnixEpoch() + absl::Hours(1);

double Flat(AdmissionQueue::RequestId) { return 0.0; }

TEST(AdmissionQueueTest, PriorityThenArrival) {
  AdmissionQueue queue;
  ASSERT_TRUE(queue.Push(1, 0, kT0).ok());
  ASSERT_TRUE(queue.Push(2, 5, kT0 + absl::Milliseconds(1)).ok());
  ASSERT_TRUE(queue.Push(3, 0, kT0 + absl::Milliseconds(2)).ok());
  ASSERT_TRUE(queue.Push(4, 5, kT0 + absl::Milliseconds(3)).ok());
  EXPECT_EQ(queue.Snapshot(), (std::vector<AdmissionQueue::RequestId>{2, 4, 1, 3}));
  EXPECT_EQ(queue.TakeFor(Flat, kT0), 2u);
  EXPECT_EQ(queue.TakeFor(Flat, kT0), 4u);
  EXPECT_EQ(queue.TakeFor(Flat, kT0), 1u);
  EXPECT_EQ(queue.TakeFor(Flat, kT0), 3u);
  EXPECT_EQ(queue.TakeFor(Flat, kT0), std::nullopt);
}

TEST(AdmissionQueueTest, AHighPriorityRequestOvertakesQueuedLowPriorityOnes) {
  AdmissionQueue queue;
  for (AdmissionQueue::RequestId id = 1; id <= 4; ++id) {
    ASSERT_TRUE(queue.Push(id, -1, kT0 + absl::Milliseconds(id)).ok());
  }
  ASSERT_TRUE(queue.Push(9, 10, kT0 + absl::Seconds(1)).ok());
  EXPECT_EQ(queue.TakeFor(Flat, kT0 + absl::Seconds(1)), 9u);
  EXPECT_EQ(queue.TakeFor(Flat, kT0 + absl::Seconds(1)), 1u);
  EXPECT_EQ(queue.promotions(), 0u);
}

TEST(AdmissionQueueTest, CountAheadCountsEqualAndHigherPrioritiesAndPromotedOnes) {
  AdmissionQueueOptions options;
  options.max_priority_wait = absl::Seconds(10);
  AdmissionQueue queue(options);
  ASSERT_TRUE(queue.Push(1, -5, kT0).ok());
  ASSERT_TRUE(queue.Push(2, 0, kT0 + absl::Seconds(5)).ok());
  ASSERT_TRUE(queue.Push(3, 0, kT0 + absl::Seconds(6)).ok());
  ASSERT_TRUE(queue.Push(4, 7, kT0 + absl::Seconds(7)).ok());
  EXPECT_EQ(queue.CountAhead(0), 3);
  EXPECT_EQ(queue.CountAhead(7), 1);
  EXPECT_EQ(queue.CountAhead(8), 0);
  EXPECT_EQ(queue.CountAhead(-5), 4);
  EXPECT_EQ(queue.CountAhead(std::numeric_limits<int32_t>::min()), 4);
  EXPECT_EQ(queue.CountAhead(std::numeric_limits<int32_t>::max()), 0);
  // Past the bound the low-priority request goes before everything.
  EXPECT_EQ(queue.Promote(kT0 + absl::Seconds(11)), 1);
  EXPECT_EQ(queue.CountAhead(8), 1);
}

TEST(AdmissionQueueTest, ALowPriorityRequestIsPromotedAfterTheBound) {
  AdmissionQueueOptions options;
  options.max_priority_wait = absl::Seconds(10);
  AdmissionQueue queue(options);
  ASSERT_TRUE(queue.Push(1, -5, kT0).ok());
  // A steady stream of high-priority arrivals, one every second; each slot
  // that frees takes one.
  AdmissionQueue::RequestId next = 100;
  std::vector<AdmissionQueue::RequestId> taken;
  for (int s = 1; s <= 20; ++s) {
    const absl::Time now = kT0 + absl::Seconds(s);
    ASSERT_TRUE(queue.Push(next++, 5, now).ok());
    ASSERT_TRUE(queue.Push(next++, 5, now).ok());
    taken.push_back(*queue.TakeFor(Flat, now));
    if (taken.back() == 1u) break;
  }
  // Passed over while it waited up to the bound, then served before the
  // high-priority requests still queued (all arrived after it).
  ASSERT_EQ(taken.back(), 1u);
  EXPECT_EQ(taken.size(), 11u) << "served at the first take past 10 s";
  EXPECT_EQ(queue.promotions(), 1u);
  EXPECT_GT(queue.size(), 0u);
}

TEST(AdmissionQueueTest, PromotedRequestsGoByArrivalBeforeAnyPriority) {
  AdmissionQueueOptions options;
  options.max_priority_wait = absl::Seconds(2);
  AdmissionQueue queue(options);
  ASSERT_TRUE(queue.Push(1, 0, kT0).ok());
  ASSERT_TRUE(queue.Push(2, -3, kT0 + absl::Milliseconds(500)).ok());
  ASSERT_TRUE(queue.Push(3, 7, kT0 + absl::Seconds(1)).ok());
  ASSERT_TRUE(queue.Push(4, 9, kT0 + absl::Seconds(2)).ok());
  EXPECT_EQ(queue.Snapshot(), (std::vector<AdmissionQueue::RequestId>{4, 3, 1, 2}));
  EXPECT_EQ(queue.Promote(kT0 + absl::Milliseconds(2600)), 2);
  EXPECT_EQ(queue.Snapshot(), (std::vector<AdmissionQueue::RequestId>{1, 2, 4, 3}));
  // A promoted request is taken even where another costs the worker less.
  auto cost = [](AdmissionQueue::RequestId id) { return id == 4 ? 0.0 : 50.0; };
  EXPECT_EQ(queue.TakeFor(cost, kT0 + absl::Milliseconds(2600)), 1u);
  EXPECT_TRUE(queue.Remove(2));
  EXPECT_EQ(queue.TakeFor(cost, kT0 + absl::Milliseconds(2600)), 4u);
  EXPECT_EQ(queue.promotions(), 2u);
}

TEST(AdmissionQueueTest, LimitsAndCancellation) {
  AdmissionQueue queue(AdmissionQueueOptions{.max_length = 2, .max_wait = absl::Seconds(5)});
  ASSERT_TRUE(queue.Push(1, 0, kT0).ok());
  EXPECT_EQ(queue.Push(1, 0, kT0).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(queue.Push(2, 0, kT0 + absl::Seconds(3)).ok());
  EXPECT_EQ(queue.Push(3, 0, kT0).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(queue.Remove(2));
  EXPECT_FALSE(queue.Remove(2));
  ASSERT_TRUE(queue.Push(3, 0, kT0 + absl::Seconds(4)).ok());
  EXPECT_EQ(queue.Expire(kT0 + absl::Seconds(6)), (std::vector<AdmissionQueue::RequestId>{1}));
  EXPECT_EQ(queue.Expire(kT0 + absl::Seconds(6)).size(), 0u);
  EXPECT_EQ(queue.Snapshot(), (std::vector<AdmissionQueue::RequestId>{3}));
}

TEST(AdmissionQueueTest, AWorkerTakesTheRequestThatSuitsItBest) {
  AdmissionQueue queue;
  for (AdmissionQueue::RequestId id = 1; id <= 5; ++id) {
    ASSERT_TRUE(queue.Push(id, 0, kT0 + absl::Milliseconds(id)).ok());
  }
  // Request 4's prefix is cached on this worker: it costs least there.
  auto cost = [](AdmissionQueue::RequestId id) { return id == 4 ? 1.0 : 10.0; };
  EXPECT_EQ(queue.TakeFor(cost, kT0 + absl::Milliseconds(10)), 4u);
  // Equal costs keep queue order.
  EXPECT_EQ(queue.TakeFor(Flat, kT0 + absl::Milliseconds(10)), 1u);
}

TEST(AdmissionQueueTest, NothingStarves) {
  // Every worker prefers newcomers over request 0; the fairness bounds must
  // still get request 0 out, by age or by the number of times it was passed.
  for (const bool by_age : {true, false}) {
    AdmissionQueueOptions options;
    options.max_skip_age = by_age ? absl::Milliseconds(50) : absl::Hours(1);
    options.max_skips = by_age ? 1 << 30 : 10;
    AdmissionQueue queue(options);
    ASSERT_TRUE(queue.Push(0, 0, kT0).ok());
    auto cost = [](AdmissionQueue::RequestId id) { return id == 0 ? 100.0 : 1.0; };
    int taken_at = -1;
    for (int step = 1; step <= 1000 && taken_at < 0; ++step) {
      ASSERT_TRUE(queue.Push(step, 0, kT0 + absl::Milliseconds(step)).ok());
      if (queue.TakeFor(cost, kT0 + absl::Milliseconds(step)) == 0u) taken_at = step;
    }
    ASSERT_GT(taken_at, 0) << (by_age ? "age" : "skips");
    EXPECT_LE(taken_at, by_age ? 52 : 11) << (by_age ? "age" : "skips");
  }
}

TEST(AdmissionQueueTest, RandomOperationsKeepOrderAndSize) {
  std::mt19937_64 rng(3);
  AdmissionQueue queue;
  std::vector<AdmissionQueue::RequestId> live;
  AdmissionQueue::RequestId next = 1;
  for (int i = 0; i < 3000; ++i) {
    const int op = static_cast<int>(rng() % 3);
    if (op == 0 || live.empty()) {
      ASSERT_TRUE(queue.Push(next, static_cast<int32_t>(rng() % 3), kT0).ok());
      live.push_back(next++);
    } else if (op == 1) {
      const size_t at = rng() % live.size();
      EXPECT_TRUE(queue.Remove(live[at]));
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(at));
    } else {
      auto id = queue.TakeFor([&](AdmissionQueue::RequestId r) { return double(r % 7); }, kT0);
      ASSERT_TRUE(id.has_value());
      auto it = std::find(live.begin(), live.end(), *id);
      ASSERT_NE(it, live.end());
      live.erase(it);
    }
    ASSERT_EQ(queue.size(), live.size());
  }
}

}  // namespace
}  // namespace tern::router
