#include "gateway/auth/api_keys.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tern::gateway {
namespace {

constexpr size_t kSaltBytes = 16;
constexpr size_t kDigestBytes = 32;
constexpr size_t kKeyBytes = 32;

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  // RAND_bytes fails only when the system's entropy source does; a key made
  // without it would be guessable, so that is fatal.
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    std::fprintf(stderr, "tern: the random number generator failed\n");
    std::abort();
  }
  return out;
}

std::string Sha256(absl::string_view salt, absl::string_view key) {
  std::string input = absl::StrCat(salt, key);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(input.data(), input.size(), digest, &length, EVP_sha256(), nullptr);
  OPENSSL_cleanse(input.data(), input.size());
  return std::string(reinterpret_cast<const char*>(digest), length);
}

// Hex of exactly `bytes` bytes, or nullopt.
std::optional<std::string> FromHex(const std::string& hex, size_t bytes) {
  if (hex.size() != 2 * bytes) return std::nullopt;
  for (char c : hex) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  return absl::HexStringToBytes(hex);
}

}  // namespace

absl::StatusOr<ApiKeyStore> ApiKeyStore::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the key file ", path));
  std::stringstream text;
  text << in.rdbuf();
  YAML::Node root;
  try {
    root = YAML::Load(text.str());
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not YAML: ", e.what()));
  }
  ApiKeyStore store;
  if (!root || root.IsNull()) return store;
  if (!root.IsMap() || !root["keys"] || !(root["keys"].IsSequence() || root["keys"].IsNull())) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a map with a `keys` list"));
  }
  int index = 0;
  for (const YAML::Node& node : root["keys"]) {
    const std::string where = absl::StrCat(path, ": keys[", index++, "]");
    if (!node.IsMap()) return absl::InvalidArgumentError(absl::StrCat(where, " is not a map"));
    ApiKeyEntry entry;
    std::string salt_hex;
    std::string hash_hex;
    try {
      if (node["name"]) entry.name = node["name"].as<std::string>();
      if (node["salt"]) salt_hex = node["salt"].as<std::string>();
      if (node["sha256"]) hash_hex = node["sha256"].as<std::string>();
    } catch (const YAML::Exception&) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": name, salt and sha256 are strings"));
    }
    for (auto [field, value] :
         {std::pair{"requests_per_minute", &entry.limits.requests_per_minute},
          std::pair{"tokens_per_minute", &entry.limits.tokens_per_minute},
          std::pair{"max_concurrent_streams", &entry.limits.max_concurrent_streams}}) {
      if (!node[field]) continue;
      try {
        *value = node[field].as<int64_t>();
      } catch (const YAML::Exception&) {
        *value = -1;
      }
      if (*value < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".", field, " must be a whole number, 0 or more"));
      }
    }
    std::optional<std::string> salt = FromHex(salt_hex, kSaltBytes);
    std::optional<std::string> hash = FromHex(hash_hex, kDigestBytes);
    if (!salt) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".salt must be ", kSaltBytes, " bytes in hex"));
    }
    if (!hash) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".sha256 must be ", kDigestBytes, " bytes in hex"));
    }
    entry.salt = *std::move(salt);
    entry.sha256 = *std::move(hash);
    if (absl::Status added = store.Add(std::move(entry)); !added.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", added.message()));
    }
  }
  return store;
}

ApiKeyStore ApiKeyStore::FromPlainKeys(const std::vector<std::string>& keys) {
  std::vector<ApiKeyEntry> entries;
  for (size_t i = 0; i < keys.size(); ++i) {
    entries.push_back(HashApiKey(absl::StrCat("config-", i), keys[i]));
  }
  return ApiKeyStore(std::move(entries));
}

const ApiKeyEntry* ApiKeyStore::Verify(absl::string_view presented) const {
  const ApiKeyEntry* match = nullptr;
  for (const ApiKeyEntry& entry : entries_) {
    const std::string digest = Sha256(entry.salt, presented);
    const bool equal = digest.size() == entry.sha256.size() &&
                       CRYPTO_memcmp(digest.data(), entry.sha256.data(), digest.size()) == 0;
    if (equal && match == nullptr) match = &entry;
  }
  return match;
}

absl::Status ApiKeyStore::Add(ApiKeyEntry entry) {
  if (entry.name.empty()) return absl::InvalidArgumentError("a key needs a name");
  for (const ApiKeyEntry& existing : entries_) {
    if (existing.name == entry.name) {
      return absl::InvalidArgumentError(absl::StrCat("a key named \"", entry.name, "\" exists"));
    }
  }
  entries_.push_back(std::move(entry));
  return absl::OkStatus();
}

absl::Status ApiKeyStore::Remove(absl::string_view name) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->name == name) {
      entries_.erase(it);
      return absl::OkStatus();
    }
  }
  return absl::NotFoundError(absl::StrCat("no key named \"", name, "\""));
}

absl::Status ApiKeyStore::Save(const std::string& path) const {
  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "keys" << YAML::Value << YAML::BeginSeq;
  for (const ApiKeyEntry& entry : entries_) {
    out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << entry.name << YAML::Key << "salt"
        << YAML::Value << absl::BytesToHexString(entry.salt) << YAML::Key << "sha256" << YAML::Value
        << absl::BytesToHexString(entry.sha256);
    if (entry.limits.requests_per_minute > 0) {
      out << YAML::Key << "requests_per_minute" << YAML::Value << entry.limits.requests_per_minute;
    }
    if (entry.limits.tokens_per_minute > 0) {
      out << YAML::Key << "tokens_per_minute" << YAML::Value << entry.limits.tokens_per_minute;
    }
    if (entry.limits.max_concurrent_streams > 0) {
      out << YAML::Key << "max_concurrent_streams" << YAML::Value
          << entry.limits.max_concurrent_streams;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
  const std::string temp = path + ".tmp";
  {
    std::ofstream file(temp, std::ios::trunc);
    if (!file) return absl::PermissionDeniedError(absl::StrCat("cannot write ", temp));
    file << "# tern API keys: names and salted SHA-256 hashes (tern keys add|list|remove)\n"
         << out.c_str() << "\n";
    if (!file.good()) return absl::InternalError(absl::StrCat("cannot write ", temp));
  }
  chmod(temp.c_str(), 0600);
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot replace ", path));
  }
  return absl::OkStatus();
}

std::string NewApiKey() {
  return absl::StrCat("tern-", absl::BytesToHexString(RandomBytes(kKeyBytes)));
}

ApiKeyEntry HashApiKey(std::string name, absl::string_view key) {
  ApiKeyEntry entry;
  entry.name = std::move(name);
  entry.salt = RandomBytes(kSaltBytes);
  entry.sha256 = Sha256(entry.salt, key);
  return entry;
}

absl::StatusOr<const ApiKeyEntry*> AuthenticateBearer(const ApiKeyStore* keys,
                                                      absl::string_view authorization) {
  if (keys == nullptr || keys->empty()) return static_cast<const ApiKeyEntry*>(nullptr);
  constexpr absl::string_view kBearer = "Bearer ";
  if (authorization.size() > kBearer.size() && absl::StartsWith(authorization, kBearer)) {
    if (const ApiKeyEntry* entry = keys->Verify(authorization.substr(kBearer.size()))) {
      return entry;
    }
  }
  return absl::UnauthenticatedError("Incorrect API key provided.");
}

}  // namespace tern::gateway
