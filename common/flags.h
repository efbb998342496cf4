// Command-line flags for the tern binaries: `--name value` or `--name=value`,
// bare `--name` for booleans. Flags are read only in main() and passed down
// as values. Not thread-safe; use from main only.
#ifndef TERN_COMMON_FLAGS_H_
#define TERN_COMMON_FLAGS_H_

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tern {

class Flags {
 public:
  // Parses argv[first..argc). `with_value` lists flags that take a value,
  // `booleans` flags that take none; anything else is an error naming it.
  static absl::StatusOr<Flags> Parse(int argc, char** argv, int first,
                                     const std::set<std::string>& with_value,
                                     const std::set<std::string>& booleans);

  // The last value given for `name`.
  std::optional<std::string> Get(const std::string& name) const;
  // Every value given for `name`, in order (a repeatable flag).
  std::vector<std::string> GetAll(const std::string& name) const;
  std::string GetOr(const std::string& name, const std::string& fallback) const;
  // INVALID_ARGUMENT when the value is not an integer.
  absl::StatusOr<std::optional<int64_t>> GetInt(const std::string& name) const;
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::map<std::string, std::vector<std::string>> all_values_;
  std::vector<std::string> positional_;
};

}  // namespace tern

#endif  // TERN_COMMON_FLAGS_H_
