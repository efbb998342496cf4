// API keys as the gateway keeps them: never in clear. A key is a random
// token shown once when it is made (`tern keys add NAME`); what is stored is
// its name, a random salt and SHA-256(salt || key), in a YAML key file
//
//   keys:
//     - name: alice
//       salt: 9f0c...          # 16 random bytes, hex
//       sha256: 3b7a...        # SHA-256(salt bytes || key bytes), hex
//       requests_per_minute: 60        # optional limits (0 or absent: none)
//       tokens_per_minute: 100000
//       max_concurrent_streams: 4
//
// (or a Kubernetes Secret mounted as that file). Verify hashes the presented
// key with every entry's salt and compares the digests in constant time
// (CRYPTO_memcmp), visiting every entry whatever matches, so neither the
// comparison nor the loop tells how close a guess was. The keys are 32
// random bytes, so a fast hash with a salt is the right tool (as for other
// high-entropy tokens); a slow password hash would only slow every request.
//
// Keys still written in clear in tern.yaml (gateway.api_keys) are hashed
// when loaded, named "config-<i>".
//
// Thread-safe once built: Verify is const.
#ifndef TERN_GATEWAY_AUTH_API_KEYS_H_
#define TERN_GATEWAY_AUTH_API_KEYS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tern::gateway {

// What one key may use (gateway/auth/key_limiter.h); 0: no limit.
struct KeyLimits {
  int64_t requests_per_minute = 0;
  // Prompt plus completion tokens.
  int64_t tokens_per_minute = 0;
  int64_t max_concurrent_streams = 0;
  friend bool operator==(const KeyLimits&, const KeyLimits&) = default;
};

struct ApiKeyEntry {
  std::string name;
  // Raw bytes (the file holds them in hex).
  std::string salt;
  std::string sha256;
  KeyLimits limits;
};

class ApiKeyStore {
 public:
  ApiKeyStore() = default;
  explicit ApiKeyStore(std::vector<ApiKeyEntry> entries) : entries_(std::move(entries)) {}

  // Reads a key file. NOT_FOUND when it cannot be read; INVALID_ARGUMENT
  // naming the entry and field that is wrong (names must be unique and
  // non-empty, salt 16 bytes and sha256 32 bytes in hex).
  static absl::StatusOr<ApiKeyStore> Load(const std::string& path);
  // The clear keys of gateway.api_keys, hashed now.
  static ApiKeyStore FromPlainKeys(const std::vector<std::string>& keys);

  // The entry of the key `presented` is, or null.
  const ApiKeyEntry* Verify(absl::string_view presented) const;

  bool empty() const { return entries_.empty(); }
  const std::vector<ApiKeyEntry>& entries() const { return entries_; }

  // Adds `entry`; INVALID_ARGUMENT when its name is taken.
  absl::Status Add(ApiKeyEntry entry);
  // Removes the key named `name`; NOT_FOUND when there is none.
  absl::Status Remove(absl::string_view name);
  // Writes the key file (mode 0600, replaced atomically by rename).
  absl::Status Save(const std::string& path) const;

 private:
  std::vector<ApiKeyEntry> entries_;
};

// A new key: "tern-" and 32 random bytes (OpenSSL's RAND_bytes) in hex.
std::string NewApiKey();

// The stored form of `key` under `name`, with a fresh random salt.
ApiKeyEntry HashApiKey(std::string name, absl::string_view key);

// The key entry an `Authorization` value ("Bearer <key>", from an HTTP
// header or gRPC metadata) names: null when `keys` is null or empty (no
// authentication), UNAUTHENTICATED ("Incorrect API key provided.", naming
// no key) when it names none.
absl::StatusOr<const ApiKeyEntry*> AuthenticateBearer(const ApiKeyStore* keys,
                                                      absl::string_view authorization);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_AUTH_API_KEYS_H_
