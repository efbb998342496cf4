// Per-key limits on a fake clock: requests and tokens per minute as token
// buckets, streams in flight, and the Retry-After each refusal gives.
#include "gateway/auth/key_limiter.h"

#include "gtest/gtest.h"

namespace tern::gateway {
namespace {

class KeyLimiterTest : public ::testing::Test {
 protected:
  absl::Time now_ = absl::FromUnixSeconds(1000);
  KeyLimiter limiter_{[this] { return now_; }};
};

TEST_F(KeyLimiterTest, KeysWithoutLimitsAreAlwaysAdmitted) {
  KeyRefusal refusal;
  std::vector<std::shared_ptr<KeyLease>> leases;
  for (int i = 0; i < 1000; ++i) {
    leases.push_back(limiter_.Admit("free", KeyLimits{}, &refusal));
    ASSERT_NE(leases.back(), nullptr);
    leases.back()->Charge(100000);
  }
}

TEST_F(KeyLimiterTest, RequestsPerMinuteRefillContinuously) {
  const KeyLimits limits{.requests_per_minute = 2};
  KeyRefusal refusal;
  EXPECT_NE(limiter_.Admit("a", limits, &refusal), nullptr);
  EXPECT_NE(limiter_.Admit("a", limits, &refusal), nullptr);
  EXPECT_EQ(limiter_.Admit("a", limits, &refusal), nullptr);
  EXPECT_EQ(refusal.limit, KeyLimit::kRequests);
  EXPECT_EQ(refusal.retry_after_s, 30);  // one request every 30 s
  // Other keys are not affected.
  EXPECT_NE(limiter_.Admit("b", limits, &refusal), nullptr);
  now_ += absl::Seconds(29);
  EXPECT_EQ(limiter_.Admit("a", limits, &refusal), nullptr);
  EXPECT_EQ(refusal.retry_after_s, 1);
  now_ += absl::Seconds(1);
  EXPECT_NE(limiter_.Admit("a", limits, &refusal), nullptr);
}

TEST_F(KeyLimiterTest, TokensAreChargedWhenARequestEndsAndMayGoIntoDebt) {
  const KeyLimits limits{.tokens_per_minute = 600};
  KeyRefusal refusal;
  {
    auto lease = limiter_.Admit("a", limits, &refusal);
    ASSERT_NE(lease, nullptr);
    lease->Charge(900);  // 300 over: 30 s of refill to get back to 0
  }
  EXPECT_EQ(limiter_.Admit("a", limits, &refusal), nullptr);
  EXPECT_EQ(refusal.limit, KeyLimit::kTokens);
  EXPECT_EQ(refusal.retry_after_s, 31);
  now_ += absl::Seconds(31);
  EXPECT_NE(limiter_.Admit("a", limits, &refusal), nullptr);
}

TEST_F(KeyLimiterTest, StreamsInFlightAreCountedUntilTheLeaseEnds) {
  const KeyLimits limits{.max_concurrent_streams = 2};
  KeyRefusal refusal;
  auto first = limiter_.Admit("a", limits, &refusal);
  auto second = limiter_.Admit("a", limits, &refusal);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(limiter_.Admit("a", limits, &refusal), nullptr);
  EXPECT_EQ(refusal.limit, KeyLimit::kStreams);
  EXPECT_EQ(refusal.retry_after_s, 1);
  first.reset();
  EXPECT_NE(limiter_.Admit("a", limits, &refusal), nullptr);
}

TEST_F(KeyLimiterTest, ChangedLimitsStartAFreshAllowance) {
  KeyRefusal refusal;
  EXPECT_NE(limiter_.Admit("a", KeyLimits{.requests_per_minute = 1}, &refusal), nullptr);
  EXPECT_EQ(limiter_.Admit("a", KeyLimits{.requests_per_minute = 1}, &refusal), nullptr);
  EXPECT_NE(limiter_.Admit("a", KeyLimits{.requests_per_minute = 5}, &refusal), nullptr);
}

}  // namespace
}  // namespace tern::gateway
