// Fleet membership: the diff that reconciles members with the addresses
// wanted, and the resolution of "dns:" worker entries.
#include "router/core/membership.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

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

// A resolver scripted per call, standing in for DNS.
class ScriptedResolver {
 public:
  absl::StatusOr<std::vector<std::string>> operator()(absl::string_view name) {
    ++calls;
    if (answers.empty()) return absl::UnavailableError("resolver down");
    auto answer = answers.front();
    answers.erase(answers.begin());
    return answer;
  }
  std::vector<std::vector<std::string>> answers;
  int calls = 0;
};

TEST(MembershipTest, DnsNamesAreResolvedWhenDueAndALastAnswerStands) {
  auto resolver = std::make_shared<ScriptedResolver>();
  resolver->answers = {{"10.0.0.1:9", "10.0.0.2:9"}, {"10.0.0.2:9", "10.0.0.3:9"}};
  Membership membership(
      MembershipOptions{.worker_addresses = {"static:1", "dns:workers:9", "static:1"},
                        .dns_refresh = absl::Seconds(5)},
      [resolver](absl::string_view name) { return (*resolver)(name); });
  const absl::Time t0 = absl::UnixEpoch();
  EXPECT_EQ(membership.Desired(t0),
            std::vector<std::string>({"static:1", "10.0.0.1:9", "10.0.0.2:9"}));
  EXPECT_EQ(membership.Desired(t0 + absl::Seconds(4)).size(), 3u);
  EXPECT_EQ(resolver->calls, 1) << "not due yet";
  EXPECT_EQ(membership.Desired(t0 + absl::Seconds(5)),
            std::vector<std::string>({"static:1", "10.0.0.2:9", "10.0.0.3:9"}));
  // The resolver fails: the last answer stands.
  EXPECT_EQ(membership.Desired(t0 + absl::Seconds(10)),
            std::vector<std::string>({"static:1", "10.0.0.2:9", "10.0.0.3:9"}));
  EXPECT_EQ(resolver->calls, 3);
}

TEST(MembershipTest, RegisteredWorkersStayWhileTheirLeaseIsRenewed) {
  Membership membership(MembershipOptions{.registration_lease = absl::Seconds(10)});
  const absl::Time t0 = absl::UnixEpoch();
  EXPECT_EQ(membership.Register("bad", t0).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(*membership.Register("a:1", t0), absl::Seconds(10));
  ASSERT_TRUE(membership.Register("b:1", t0).ok());
  EXPECT_EQ(membership.Desired(t0 + absl::Seconds(5)), std::vector<std::string>({"a:1", "b:1"}));
  ASSERT_TRUE(membership.Register("a:1", t0 + absl::Seconds(8)).ok());
  EXPECT_EQ(membership.Desired(t0 + absl::Seconds(12)), std::vector<std::string>({"a:1"}));
  EXPECT_EQ(membership.Desired(t0 + absl::Seconds(17)).size(), 1u);
  EXPECT_TRUE(membership.Desired(t0 + absl::Seconds(18)).empty()) << "lease ran out at 18 s";
}

}  // namespace
}  // namespace tern::router
