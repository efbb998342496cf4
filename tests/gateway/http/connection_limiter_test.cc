#include "gateway/http/connection_limiter.h"

#include <gtest/gtest.h>

namespace tern::gateway {
namespace {

TEST(ConnectionLimiterTest, RefusesPastTheTotalCap) {
  ConnectionLimiter limiter(2, 0);
  EXPECT_EQ(limiter.TryAdmit("10.0.0.1"), ConnectionCap::kNone);
  EXPECT_EQ(limiter.TryAdmit("10.0.0.2"), ConnectionCap::kNone);
  EXPECT_EQ(limiter.TryAdmit("10.0.0.3"), ConnectionCap::kTotal);
  EXPECT_EQ(limiter.open(), 2);
  limiter.Release("10.0.0.1");
  EXPECT_EQ(limiter.TryAdmit("10.0.0.3"), ConnectionCap::kNone);
}

TEST(ConnectionLimiterTest, RefusesPastThePerClientCapOnlyForThatClient) {
  ConnectionLimiter limiter(0, 2);
  EXPECT_EQ(limiter.TryAdmit("10.0.0.1"), ConnectionCap::kNone);
  EXPECT_EQ(limiter.TryAdmit("10.0.0.1"), ConnectionCap::kNone);
  EXPECT_EQ(limiter.TryAdmit("10.0.0.1"), ConnectionCap::kPerClient);
  EXPECT_EQ(limiter.TryAdmit("10.0.0.2"), ConnectionCap::kNone);
  limiter.Release("10.0.0.1");
  EXPECT_EQ(limiter.TryAdmit("10.0.0.1"), ConnectionCap::kNone);
  EXPECT_EQ(limiter.open(), 3);
}

TEST(ConnectionLimiterTest, ZeroMeansNoCap) {
  ConnectionLimiter limiter(0, 0);
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(limiter.TryAdmit("10.0.0.1"), ConnectionCap::kNone);
  EXPECT_EQ(limiter.open(), 5000);
}

TEST(ConnectionLimiterTest, ReleasingAnUnknownClientChangesNothing) {
  ConnectionLimiter limiter(1, 1);
  ASSERT_EQ(limiter.TryAdmit("10.0.0.1"), ConnectionCap::kNone);
  limiter.Release("10.0.0.9");
  EXPECT_EQ(limiter.open(), 1);
  EXPECT_EQ(limiter.TryAdmit("10.0.0.2"), ConnectionCap::kTotal);
}

TEST(ConnectionLimiterTest, CapNamesAreTheConfigKeys) {
  EXPECT_STREQ(ConnectionCapName(ConnectionCap::kTotal), "max_connections");
  EXPECT_STREQ(ConnectionCapName(ConnectionCap::kPerClient), "max_connections_per_client");
}

}  // namespace
}  // namespace tern::gateway
