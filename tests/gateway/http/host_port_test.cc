#include "gateway/http/host_port.h"

#include <gtest/gtest.h>

namespace tern::gateway {
namespace {

TEST(HostPortTest, ParsesCommonForms) {
  auto a = ParseHostPort("127.0.0.1:8000");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 8000);
  a = ParseHostPort("[::1]:0");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 0);
  EXPECT_EQ(FormatHostPort(*a), "[::1]:0");
  a = ParseHostPort(":9000");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "0.0.0.0");
  a = ParseHostPort("localhost:65535");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(FormatHostPort(*a), "localhost:65535");
}

TEST(HostPortTest, RejectsMalformedAddresses) {
  for (const char* text :
       {"", "8000", "host:", "host:65536", "host:-1", "host:80x", "::1:80", "h:1234567"}) {
    EXPECT_FALSE(ParseHostPort(text).ok()) << text;
  }
}

}  // namespace
}  // namespace tern::gateway
