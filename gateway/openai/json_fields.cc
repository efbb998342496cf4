#include "gateway/openai/json_fields.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "gateway/http/api_error.h"

namespace tern::gateway {
namespace {

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

absl::Status TypeError(std::string_view param, std::string_view expected) {
  return InvalidRequestError(
      param,
      absl::StrCat("Invalid type for '", AbslView(param), "': expected ", AbslView(expected), "."),
      "invalid_type");
}

absl::Status ValueError(std::string_view param, std::string_view message) {
  return InvalidRequestError(param, message, "invalid_value");
}

absl::Status Unsupported(std::string_view param, std::string_view message) {
  return InvalidRequestError(param, message, "unsupported_parameter");
}

// The field `name` of `obj`, or nullptr when it is absent or null.
const Json* Find(const Json& obj, const char* name) {
  const auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::optional<double>> GetNumber(const Json& obj, const char* name) {
  const Json* value = Find(obj, name);
  if (value == nullptr) return std::optional<double>();
  if (!value->is_number()) return TypeError(name, "a number");
  const double d = value->get<double>();
  if (!std::isfinite(d))
    return ValueError(name, absl::StrCat("'", name, "' must be a finite number."));
  return std::optional<double>(d);
}

// Integers must be JSON integers (5, not 5.0 or "5") within int64.
absl::StatusOr<std::optional<int64_t>> GetInteger(const Json& obj, const char* name) {
  const Json* value = Find(obj, name);
  if (value == nullptr) return std::optional<int64_t>();
  if (!value->is_number_integer()) return TypeError(name, "an integer");
  if (value->is_number_unsigned() &&
      value->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return ValueError(name, absl::StrCat("'", name, "' is too large."));
  }
  return std::optional<int64_t>(value->get<int64_t>());
}

absl::StatusOr<std::optional<bool>> GetBool(const Json& obj, const char* name) {
  const Json* value = Find(obj, name);
  if (value == nullptr) return std::optional<bool>();
  if (!value->is_boolean()) return TypeError(name, "a boolean");
  return std::optional<bool>(value->get<bool>());
}

absl::StatusOr<std::optional<std::string>> GetString(const Json& obj, const char* name) {
  const Json* value = Find(obj, name);
  if (value == nullptr) return std::optional<std::string>();
  if (!value->is_string()) return TypeError(name, "a string");
  return std::optional<std::string>(value->get<std::string>());
}

absl::Status CheckRange(const char* name, double value, double lo, bool lo_closed, double hi,
                        bool hi_closed) {
  const bool ok = (lo_closed ? value >= lo : value > lo) && (hi_closed ? value <= hi : value < hi);
  if (ok) return absl::OkStatus();
  return ValueError(
      name, absl::StrFormat("'%s' must be in %c%g, %g%c, got %g.", name, lo_closed ? '[' : '(', lo,
                            hi, hi_closed ? ']' : ')', value));
}

// Reads an integer field into int32 range [lo, hi].
absl::StatusOr<std::optional<int32_t>> GetInt32(const Json& obj, const char* name, int64_t lo,
                                                int64_t hi) {
  TERN_ASSIGN_OR_RETURN(const std::optional<int64_t> value, GetInteger(obj, name));
  if (!value) return std::optional<int32_t>();
  if (*value < lo || *value > hi) {
    return ValueError(name, absl::StrCat("'", name, "' must be between ", lo, " and ", hi, ", got ",
                                         *value, "."));
  }
  return std::optional<int32_t>(static_cast<int32_t>(*value));
}

absl::StatusOr<std::vector<int32_t>> TokenIdArray(const Json& array, const std::string& param) {
  std::vector<int32_t> ids;
  ids.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    const Json& id = array[i];
    const std::string where = absl::StrCat(param, "[", i, "]");
    if (!id.is_number_integer()) return TypeError(where, "an integer token id");
    if (id.is_number_unsigned() ? id.get<uint64_t>() > static_cast<uint64_t>(kInt32Max)
                                : id.get<int64_t>() < 0) {
      return ValueError(where, absl::StrCat("'", where, "' is not a valid token id."));
    }
    ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return ids;
}

}  // namespace tern::gateway
