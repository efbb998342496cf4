#include "cli/keys_command.h"

#include <filesystem>
#include <iostream>
#include <string>

#include "common/flags.h"
#include "gateway/auth/api_keys.h"

namespace tern::cli {
namespace {

constexpr char kUsage[] =
    "usage: tern keys add NAME --file keys.yaml     make a key; prints it once\n"
    "         [--requests-per-minute N] [--tokens-per-minute N] [--max-concurrent-streams N]\n"
    "       tern keys list --file keys.yaml         the keys' names\n"
    "       tern keys remove NAME --file keys.yaml\n"
    "The file holds names and salted SHA-256 hashes, never a key; point the\n"
    "gateway at it with gateway.api_key_file (or tern-gateway --api-key-file).\n";

int Usage(const std::string& problem) {
  std::cerr << "tern keys: " << problem << "\n" << kUsage;
  return 2;
}

}  // namespace

int RunKeysCommand(int argc, char** argv, int first) {
  auto flags = Flags::Parse(
      argc, argv, first,
      {"file", "requests-per-minute", "tokens-per-minute", "max-concurrent-streams"}, {"help"});
  if (!flags.ok()) return Usage(std::string(flags.status().message()));
  if (flags->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  const std::vector<std::string>& words = flags->positional();
  if (words.empty()) return Usage("add, list or remove?");
  const std::string verb = words[0];
  const std::string path = flags->GetOr("file", "");
  if (path.empty()) return Usage("--file keys.yaml is required");
  gateway::ApiKeyStore store;
  if (std::filesystem::exists(path)) {
    auto loaded = gateway::ApiKeyStore::Load(path);
    if (!loaded.ok()) {
      std::cerr << "tern keys: " << loaded.status().message() << "\n";
      return 1;
    }
    store = *std::move(loaded);
  } else if (verb != "add") {
    std::cerr << "tern keys: " << path << " does not exist\n";
    return 1;
  }
  if (verb == "list") {
    if (words.size() != 1) return Usage("list takes no name");
    for (const gateway::ApiKeyEntry& entry : store.entries()) std::cout << entry.name << "\n";
    return 0;
  }
  if (verb != "add" && verb != "remove") return Usage("unknown verb '" + verb + "'");
  if (words.size() != 2) return Usage(verb + " takes one NAME");
  const std::string& name = words[1];
  if (verb == "add") {
    gateway::KeyLimits limits;
    for (auto [flag, field] :
         {std::pair{"requests-per-minute", &limits.requests_per_minute},
          std::pair{"tokens-per-minute", &limits.tokens_per_minute},
          std::pair{"max-concurrent-streams", &limits.max_concurrent_streams}}) {
      auto value = flags->GetInt(flag);
      if (!value.ok() || (value->has_value() && **value < 0)) {
        return Usage(std::string("--") + flag + " takes a whole number, 0 or more");
      }
      if (value->has_value()) *field = **value;
    }
    const std::string key = gateway::NewApiKey();
    gateway::ApiKeyEntry entry = gateway::HashApiKey(name, key);
    entry.limits = limits;
    if (absl::Status added = store.Add(std::move(entry)); !added.ok()) {
      return Usage(std::string(added.message()));
    }
    if (absl::Status saved = store.Save(path); !saved.ok()) {
      std::cerr << "tern keys: " << saved.message() << "\n";
      return 1;
    }
    std::cerr << "tern keys: added \"" << name << "\" to " << path
              << "; the key below is shown only now:\n";
    std::cout << key << "\n";
    return 0;
  }
  if (absl::Status removed = store.Remove(name); !removed.ok()) {
    std::cerr << "tern keys: " << removed.message() << "\n";
    return 2;
  }
  if (absl::Status saved = store.Save(path); !saved.ok()) {
    std::cerr << "tern keys: " << saved.message() << "\n";
    return 1;
  }
  std::cerr << "tern keys: removed \"" << name << "\" from " << path << "\n";
  return 0;
}

}  // namespace tern::cli
