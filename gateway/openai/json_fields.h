// Typed reads of request-body JSON fields, with the OpenAI-style errors a
// wrong field gets (invalid_type / invalid_value / unsupported_parameter,
// naming the field as `param`). A JSON null counts as an absent field.
//
// Pure functions; thread-safe.
#ifndef TERN_GATEWAY_OPENAI_JSON_FIELDS_H_
#define TERN_GATEWAY_OPENAI_JSON_FIELDS_H_

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tern::gateway {

using Json = nlohmann::ordered_json;

inline constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// "Invalid type for 'param': expected <expected>." (invalid_type).
absl::Status TypeError(std::string_view param, std::string_view expected);
// invalid_value with `message`.
absl::Status ValueError(std::string_view param, std::string_view message);
// unsupported_parameter with `message`.
absl::Status Unsupported(std::string_view param, std::string_view message);

// The field `name` of `obj`, or nullptr when it is absent or null.
const Json* Find(const Json& obj, const char* name);

absl::StatusOr<std::optional<double>> GetNumber(const Json& obj, const char* name);
// Integers must be JSON integers (5, not 5.0 or "5") within int64.
absl::StatusOr<std::optional<int64_t>> GetInteger(const Json& obj, const char* name);
absl::StatusOr<std::optional<bool>> GetBool(const Json& obj, const char* name);
absl::StatusOr<std::optional<std::string>> GetString(const Json& obj, const char* name);
// An integer field within [lo, hi].
absl::StatusOr<std::optional<int32_t>> GetInt32(const Json& obj, const char* name, int64_t lo,
                                                int64_t hi);
// invalid_value unless `value` lies in the interval (closed or open ends).
absl::Status CheckRange(const char* name, double value, double lo, bool lo_closed, double hi,
                        bool hi_closed);
// Non-negative int32 token ids; `param` names the array in errors.
absl::StatusOr<std::vector<int32_t>> TokenIdArray(const Json& array, const std::string& param);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_JSON_FIELDS_H_
