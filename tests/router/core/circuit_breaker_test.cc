#include "router/core/circuit_breaker.h"

#include <gtest/gtest.h>

namespace tern::router {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1000);

TEST(CircuitBreakerTest, OpensAfterConsecutiveFailuresOnly) {
  CircuitBreaker breaker({.failure_threshold = 3, .cool_down = absl::Seconds(5)});
  breaker.RecordFailure(kStart);
  breaker.RecordFailure(kStart);
  breaker.RecordSuccess();  // resets the count
  breaker.RecordFailure(kStart);
  breaker.RecordFailure(kStart);
  EXPECT_EQ(breaker.state(kStart), CircuitBreaker::State::kClosed);
  EXPECT_TRUE(breaker.AllowCall(kStart));
  breaker.RecordFailure(kStart);
  EXPECT_EQ(breaker.state(kStart), CircuitBreaker::State::kOpen);
  EXPECT_FALSE(breaker.AllowCall(kStart + absl::Seconds(4)));
}

TEST(CircuitBreakerTest, HalfOpenLetsOneProbeThroughAndItsOutcomeDecides) {
  CircuitBreaker breaker({.failure_threshold = 1, .cool_down = absl::Seconds(5)});
  breaker.RecordFailure(kStart);
  const absl::Time later = kStart + absl::Seconds(5);
  EXPECT_EQ(breaker.state(later), CircuitBreaker::State::kHalfOpen);
  EXPECT_TRUE(breaker.AllowCall(later));
  EXPECT_FALSE(breaker.AllowCall(later));  // one probe at a time
  EXPECT_FALSE(breaker.WouldAllow(later));
  breaker.RecordFailure(later);  // the probe failed: open again for a cool-down
  EXPECT_EQ(breaker.state(later + absl::Seconds(1)), CircuitBreaker::State::kOpen);
  const absl::Time again = later + absl::Seconds(5);
  EXPECT_TRUE(breaker.AllowCall(again));
  breaker.RecordSuccess();
  EXPECT_EQ(breaker.state(again), CircuitBreaker::State::kClosed);
  EXPECT_TRUE(breaker.AllowCall(again));
  EXPECT_TRUE(breaker.AllowCall(again));
}

}  // namespace
}  // namespace tern::router
