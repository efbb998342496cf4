// Fleet membership: the diff that reconciles members with the addresses
// wanted, and the resolution of "dns:" worker entries.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "router/fleet.h"

namespace tern::router {
namespace {

TEST(MembershipTest, DiffAddsNewAndRemovesVanishedAddresses) {
  const std::vector<std::string> current = {"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"};
  const std::vector<std::string> desired = {"10.0.0.3:1", "10.0.0.4:1", "10.0.0.1:1"};
  const MembershipDiff diff = DiffMembership(current, desired);
  EXPECT_EQ(diff.added, std::vector<std::string>({"10.0.0.4:1"}));
  EXPECT_EQ(diff.removed, std::vector<std::string>({"10.0.0.2:1"}));
}

TEST(MembershipTest, DiffOfEqualSetsIsEmptyWhateverTheOrderAndDuplicates) {
  const MembershipDiff diff = DiffMembership({"a:1", "b:1"}, {"b:1", "a:1", "b:1", "a:1"});
  EXPECT_TRUE(diff.added.empty());
  EXPECT_TRUE(diff.removed.empty());
}

TEST(MembershipTest, DiffCountsADuplicatedAddressOnce) {
  const MembershipDiff grow = DiffMembership({}, {"a:1", "b:1", "a:1"});
  EXPECT_EQ(grow.added, std::vector<std::string>({"a:1", "b:1"}));
  EXPECT_TRUE(grow.removed.empty());
  const MembershipDiff shrink = DiffMembership({"a:1", "b:1"}, {});
  EXPECT_TRUE(shrink.added.empty());
  EXPECT_EQ(shrink.removed, std::vector<std::string>({"a:1", "b:1"}));
}

TEST(MembershipTest, ResolvesLocalhostToLoopbackAddressesOnce) {
  auto addresses = ResolveWorkerAddresses("localhost:50061");
  ASSERT_TRUE(addresses.ok()) << addresses.status();
  ASSERT_FALSE(addresses->empty());
  int ipv4 = 0;
  for (const std::string& address : *addresses) {
    EXPECT_TRUE(address == "127.0.0.1:50061" || address == "[::1]:50061") << address;
    if (address == "127.0.0.1:50061") ++ipv4;
  }
  EXPECT_EQ(ipv4, 1);
  auto literal = ResolveWorkerAddresses("127.0.0.1:7");
  ASSERT_TRUE(literal.ok()) << literal.status();
  EXPECT_EQ(*literal, std::vector<std::string>({"127.0.0.1:7"}));
}

TEST(MembershipTest, MalformedOrUnknownNamesAreErrors) {
  EXPECT_EQ(ResolveWorkerAddresses("localhost").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveWorkerAddresses("localhost:port").status().code(),
            absl::StatusCode::kInvalidArgument);
  // RFC 6761: .invalid never resolves.
  EXPECT_EQ(ResolveWorkerAddresses("tern-worker.invalid:50061").status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace tern::router
