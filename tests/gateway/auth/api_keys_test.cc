// API keys as salted hashes: verification, the key file round trip and its
// errors, and `tern keys`-style add/remove.
#include "gateway/auth/api_keys.h"

#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "gtest/gtest.h"

namespace tern::gateway {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          (name + "-" + std::to_string(::getpid()) + ".yaml"))
      .string();
}

TEST(ApiKeysTest, NewKeysAreLongRandomAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const std::string key = NewApiKey();
    EXPECT_EQ(key.size(), 5u + 64u) << key;
    EXPECT_EQ(key.rfind("tern-", 0), 0u);
    EXPECT_TRUE(seen.insert(key).second);
  }
}

TEST(ApiKeysTest, VerifyNamesTheMatchingKeyOnly) {
  const std::string alice = NewApiKey();
  const std::string bob = NewApiKey();
  ApiKeyStore store({HashApiKey("alice", alice), HashApiKey("bob", bob)});
  ASSERT_NE(store.Verify(alice), nullptr);
  EXPECT_EQ(store.Verify(alice)->name, "alice");
  ASSERT_NE(store.Verify(bob), nullptr);
  EXPECT_EQ(store.Verify(bob)->name, "bob");
  EXPECT_EQ(store.Verify(alice.substr(0, alice.size() - 1)), nullptr);
  EXPECT_EQ(store.Verify(alice + "x"), nullptr);
  EXPECT_EQ(store.Verify(""), nullptr);
}

TEST(ApiKeysTest, TheSameKeyHashesDifferentlyUnderEachSalt) {
  const ApiKeyEntry a = HashApiKey("a", "same");
  const ApiKeyEntry b = HashApiKey("b", "same");
  EXPECT_NE(a.salt, b.salt);
  EXPECT_NE(a.sha256, b.sha256);
  EXPECT_EQ(a.sha256.size(), 32u);
}

TEST(ApiKeysTest, TheFileHoldsHashesNeverTheKey) {
  const std::string path = TempPath("tern-keys");
  const std::string key = NewApiKey();
  ApiKeyStore store;
  ApiKeyEntry entry = HashApiKey("ci", key);
  entry.limits = {.requests_per_minute = 60, .tokens_per_minute = 0, .max_concurrent_streams = 4};
  ASSERT_TRUE(store.Add(std::move(entry)).ok());
  ASSERT_TRUE(store.Save(path).ok());
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.find(key), std::string::npos);
  EXPECT_EQ(text.find(key.substr(5)), std::string::npos);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = ApiKeyStore::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_NE(loaded->Verify(key), nullptr);
  EXPECT_EQ(loaded->Verify(key)->name, "ci");
  EXPECT_EQ(
      loaded->Verify(key)->limits,
      (KeyLimits{.requests_per_minute = 60, .tokens_per_minute = 0, .max_concurrent_streams = 4}));
  ASSERT_TRUE(loaded->Remove("ci").ok());
  EXPECT_EQ(loaded->Remove("ci").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(loaded->Verify(key), nullptr);
  std::remove(path.c_str());
}

TEST(ApiKeysTest, NamesAreUniqueAndNonEmpty) {
  ApiKeyStore store;
  ASSERT_TRUE(store.Add(HashApiKey("a", "k1")).ok());
  EXPECT_EQ(store.Add(HashApiKey("a", "k2")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Add(HashApiKey("", "k3")).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ApiKeysTest, BadFilesAreRejectedNamingTheField) {
  const std::string path = TempPath("tern-bad-keys");
  const std::string salt(32, 'a');
  const std::string hash(64, 'b');
  struct Case {
    std::string text;
    std::string expect;
  };
  const Case cases[] = {
      {"keys: [", "not YAML"},
      {"- a\n- b\n", "a map with a `keys` list"},
      {"keys:\n  - name: x\n    salt: " + salt + "\n", "keys[0].sha256"},
      {"keys:\n  - name: x\n    salt: zz\n    sha256: " + hash + "\n", "keys[0].salt"},
      {"keys:\n  - salt: " + salt + "\n    sha256: " + hash + "\n", "needs a name"},
      {"keys:\n  - {name: x, salt: " + salt + ", sha256: " + hash +
           "}\n  - {name: x, salt: " + salt + ", sha256: " + hash + "}\n",
       "keys[1]: a key named \"x\" exists"},
      {"keys:\n  - nope\n", "keys[0] is not a map"},
      {"keys:\n  - {name: x, salt: " + salt + ", sha256: " + hash + ", tokens_per_minute: -3}\n",
       "keys[0].tokens_per_minute must be a whole number"},
  };
  for (const Case& c : cases) {
    {
      std::ofstream out(path, std::ios::trunc);
      out << c.text;
    }
    auto loaded = ApiKeyStore::Load(path);
    ASSERT_FALSE(loaded.ok()) << c.text;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_NE(loaded.status().message().find(c.expect), std::string::npos)
        << c.text << " -> " << loaded.status().message();
  }
  std::remove(path.c_str());
  EXPECT_EQ(ApiKeyStore::Load(path).status().code(), absl::StatusCode::kNotFound);
}

TEST(ApiKeysTest, ClearConfigKeysAreHashedWhenLoaded) {
  const ApiKeyStore store = ApiKeyStore::FromPlainKeys({"one", "two"});
  ASSERT_EQ(store.entries().size(), 2u);
  EXPECT_EQ(store.entries()[0].name, "config-0");
  EXPECT_NE(store.entries()[0].sha256, "one");
  ASSERT_NE(store.Verify("two"), nullptr);
  EXPECT_EQ(store.Verify("two")->name, "config-1");
  EXPECT_EQ(store.Verify("three"), nullptr);
}

}  // namespace
}  // namespace tern::gateway
