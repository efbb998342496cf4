#include "common/flags.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tern {

absl::StatusOr<Flags> Flags::Parse(int argc, char** argv, int first,
                                   const std::set<std::string>& with_value,
                                   const std::set<std::string>& booleans) {
  Flags flags;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      flags.positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (booleans.count(name)) {
      if (value && *value != "true" && *value != "false") {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      }
      flags.values_[name] = value.value_or("true");
      continue;
    }
    if (!with_value.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (!value) {
      if (i + 1 >= argc)
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    flags.values_[name] = *value;
    flags.all_values_[name].push_back(*value);
  }
  return flags;
}

std::optional<std::string> Flags::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> Flags::GetAll(const std::string& name) const {
  auto it = all_values_.find(name);
  if (it == all_values_.end()) return {};
  return it->second;
}

std::string Flags::GetOr(const std::string& name, const std::string& fallback) const {
  return Get(name).value_or(fallback);
}

absl::StatusOr<std::optional<int64_t>> Flags::GetInt(const std::string& name) const {
  const std::optional<std::string> value = Get(name);
  if (!value) return std::optional<int64_t>();
  int64_t parsed;
  if (!absl::SimpleAtoi(*value, &parsed)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be an integer, got '", *value, "'"));
  }
  return std::optional<int64_t>(parsed);
}

}  // namespace tern
