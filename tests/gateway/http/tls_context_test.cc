#include "gateway/http/tls_context.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/gateway/http/tls_test_util.h"

namespace tern::gateway {
namespace {

using ::testing::HasSubstr;

class TlsContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/tern-tls-context-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    cert_ = dir_ + "/tls.crt";
    key_ = dir_ + "/tls.key";
    ASSERT_TRUE(testing::WriteSelfSignedCert(cert_, key_, "first"));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_, cert_, key_;
};

TEST_F(TlsContextTest, LoadsAMatchingPair) {
  auto context = LoadServerTlsContext(cert_, key_);
  ASSERT_TRUE(context.ok()) << context.status();
  EXPECT_EQ(SSL_CTX_get_min_proto_version((*context)->native_handle()), TLS1_2_VERSION);
}

TEST_F(TlsContextTest, MissingOrMismatchedFilesAreInvalidArgument) {
  auto missing = LoadServerTlsContext(dir_ + "/none.crt", key_);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("none.crt"));

  ASSERT_TRUE(testing::WriteSelfSignedCert(dir_ + "/other.crt", dir_ + "/other.key", "other"));
  auto mismatched = LoadServerTlsContext(cert_, dir_ + "/other.key");
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatched.status().message(), HasSubstr("other.key"));
}

TEST_F(TlsContextTest, ReloadBuildsANewContextAndKeepsTheOldOnError) {
  auto tls = ServerTlsContext::Load(cert_, key_, absl::ZeroDuration());
  ASSERT_TRUE(tls.ok()) << tls.status();
  const auto first = (*tls)->Current();
  ASSERT_TRUE(testing::WriteSelfSignedCert(cert_, key_, "second"));
  ASSERT_TRUE((*tls)->Reload().ok());
  const auto second = (*tls)->Current();
  EXPECT_NE(first, second);

  std::ofstream(key_) << "not a key\n";
  EXPECT_FALSE((*tls)->Reload().ok());
  EXPECT_EQ((*tls)->Current(), second);
}

TEST_F(TlsContextTest, ReloadIfChangedFollowsTheFilesModificationTimes) {
  auto tls = ServerTlsContext::Load(cert_, key_, absl::ZeroDuration());
  ASSERT_TRUE(tls.ok()) << tls.status();
  const auto first = (*tls)->Current();
  ASSERT_TRUE((*tls)->ReloadIfChanged().ok());
  EXPECT_EQ((*tls)->Current(), first);  // unchanged files: same context

  ASSERT_TRUE(testing::WriteSelfSignedCert(cert_, key_, "second"));
  // Coarse file systems: make the change visible whatever their clock tick.
  const auto later = std::filesystem::last_write_time(cert_) + std::chrono::seconds(2);
  std::filesystem::last_write_time(cert_, later);
  ASSERT_TRUE((*tls)->ReloadIfChanged().ok());
  EXPECT_NE((*tls)->Current(), first);
}

TEST_F(TlsContextTest, ConstructorFailsOnBadFiles) {
  std::ofstream(cert_) << "garbage\n";
  auto tls = ServerTlsContext::Load(cert_, key_, absl::Seconds(1));
  EXPECT_EQ(tls.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tern::gateway
