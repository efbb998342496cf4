// The JSON-schema compiler's per-type rules: objects, arrays, strings and
// numbers (see json_schema_compiler.h for what each supports).
#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "structured/byte_dfa.h"
#include "structured/json_schema_compiler_internal.h"
#include "structured/regex_compiler.h"

namespace tern::structured::internal {
namespace {

// Above this many elements or characters, counting rules get too many.
constexpr int64_t kMaxCount = 100000;

// Regexes for the string formats supported; others are rejected.
const char* FormatPattern(const std::string& format) {
  static constexpr char kDate[] = "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])";
  static constexpr char kTime[] =
      "([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-"
      "9])";
  static const std::string kDateTime = std::string(kDate) + "T" + kTime;
  if (format == "date") return kDate;
  if (format == "time") return kTime;
  if (format == "date-time") return kDateTime.c_str();
  if (format == "uuid") {
    return "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
  }
  if (format == "email") {
    return "[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\.[A-Za-z]{2,}";
  }
  return nullptr;
}

// A non-negative integer keyword, or `fallback` when absent.
absl::StatusOr<int64_t> CountKeyword(const Json& schema, const char* key, int64_t fallback,
                                     const std::string& pointer) {
  if (!schema.contains(key)) return fallback;
  const Json& v = schema[key];
  if (!v.is_number() || v.get<double>() < 0 || std::floor(v.get<double>()) != v.get<double>()) {
    return SchemaError(absl::StrCat(key, " is not a non-negative integer"), pointer);
  }
  if (v.get<double>() > kMaxCount) {
    return SchemaError(absl::StrCat(key, " above ", kMaxCount, " is not supported"), pointer);
  }
  return static_cast<int64_t>(v.get<double>());
}

// A numeric bound as a double, or nullopt when absent.
absl::StatusOr<std::optional<double>> BoundKeyword(const Json& schema, const char* key,
                                                   const std::string& pointer) {
  if (!schema.contains(key) || schema[key].is_boolean()) return std::optional<double>();
  if (!schema[key].is_number()) return SchemaError(absl::StrCat(key, " is not a number"), pointer);
  return std::optional<double>(std::clamp(schema[key].get<double>(), -4e18, 4e18));
}

}  // namespace

absl::StatusOr<int32_t> SchemaCompiler::ExtraKeyString(const Json& properties) {
  std::vector<std::string> names;
  for (const auto& [key, value] : properties.items()) names.push_back(key);
  if (names.empty()) return json_.AnyString();
  auto any = CompileRegex("[\\s\\S]*");
  if (!any.ok()) return any.status();
  auto keys = Difference(*any, LiteralsDfa(names));
  if (!keys.ok()) return keys.status();
  const int32_t body = EmitDfa(*keys, DfaEncoding::kJsonStringContent, "extra_key", &builder_);
  return builder_.AddRule("extra_key",
                          {{Symbol::Byte('"'), Symbol::Rule(body), Symbol::Byte('"')}});
}

absl::StatusOr<int32_t> SchemaCompiler::CompileObject(const Json& schema,
                                                      const std::string& pointer, int depth) {
  const Json properties = schema.contains("properties") ? schema["properties"] : Json::object();
  if (!properties.is_object()) return SchemaError("properties is not an object", pointer);
  std::vector<std::string> names;
  std::vector<bool> required;
  std::vector<int32_t> values;
  for (const auto& [key, value] : properties.items()) {
    auto rule =
        CompileSchema(value, ChildPointer(ChildPointer(pointer, "properties"), key), depth + 1);
    if (!rule.ok()) return rule.status();
    names.push_back(key);
    required.push_back(false);
    values.push_back(*rule);
  }
  if (schema.contains("required")) {
    const Json& list = schema["required"];
    if (!list.is_array()) return SchemaError("required is not an array", pointer);
    for (const Json& name : list) {
      if (!name.is_string()) return SchemaError("required holds a non-string", pointer);
      const auto it = std::find(names.begin(), names.end(), name.get<std::string>());
      if (it == names.end()) {
        return SchemaError(
            absl::StrCat("required property '", name.get<std::string>(), "' is not in properties"),
            pointer);
      }
      required[it - names.begin()] = true;
    }
  }
  int32_t extra_value = -1;
  if (schema.contains("additionalProperties")) {
    const Json& extra = schema["additionalProperties"];
    if (!extra.is_boolean() || extra.get<bool>()) {
      auto rule = CompileSchema(extra, ChildPointer(pointer, "additionalProperties"), depth + 1);
      if (!rule.ok()) return rule.status();
      extra_value = *rule;
    }
  }

  const int32_t space = json_.OptionalSpace();
  const Sequence comma = {Symbol::Byte(','), Symbol::Rule(space)};
  // rest[i][first]: properties from i on, `first` while nothing is written.
  const size_t n = names.size();
  std::vector<std::array<int32_t, 2>> rest(n + 1);
  if (extra_value >= 0) {
    auto key = ExtraKeyString(properties);
    if (!key.ok()) return key.status();
    const Sequence member = {Symbol::Rule(*key), Symbol::Byte(':'), Symbol::Rule(space),
                             Symbol::Rule(extra_value)};
    const int32_t later = builder_.AddRule("extra_members");
    builder_.AddAlternative(later, {});
    Sequence again = comma;
    again.insert(again.end(), member.begin(), member.end());
    again.push_back(Symbol::Rule(later));
    builder_.AddAlternative(later, again);
    Sequence first = member;
    first.push_back(Symbol::Rule(later));
    rest[n] = {later, builder_.AddRule("extra_members_first", {{}, first})};
  } else {
    const int32_t empty = builder_.AddRule("no_members", {{}});
    rest[n] = {empty, empty};
  }
  for (size_t i = n; i-- > 0;) {
    Sequence member = LiteralSequence(Json(names[i]).dump());
    member.push_back(Symbol::Byte(':'));
    member.push_back(Symbol::Rule(space));
    member.push_back(Symbol::Rule(values[i]));
    for (int first = 0; first < 2; ++first) {
      const int32_t rule = builder_.AddRule(absl::StrCat("members from ", names[i]));
      Sequence with = first ? Sequence{} : comma;
      with.insert(with.end(), member.begin(), member.end());
      with.push_back(Symbol::Rule(rest[i + 1][0]));
      builder_.AddAlternative(rule, std::move(with));
      if (!required[i]) builder_.AddAlternative(rule, {Symbol::Rule(rest[i + 1][first])});
      rest[i][first] = rule;
    }
  }
  return builder_.AddRule(absl::StrCat("object ", Where(pointer)),
                          {{Symbol::Byte('{'), Symbol::Rule(rest[0][1]), Symbol::Byte('}')}});
}

absl::StatusOr<int32_t> SchemaCompiler::CompileArray(const Json& schema, const std::string& pointer,
                                                     int depth) {
  std::vector<int32_t> prefix;
  if (schema.contains("prefixItems")) {
    const Json& list = schema["prefixItems"];
    if (!list.is_array()) return SchemaError("prefixItems is not an array", pointer);
    for (size_t i = 0; i < list.size(); ++i) {
      auto rule = CompileSchema(list[i], absl::StrCat(ChildPointer(pointer, "prefixItems"), "/", i),
                                depth + 1);
      if (!rule.ok()) return rule.status();
      prefix.push_back(*rule);
    }
  }
  auto min_items = CountKeyword(schema, "minItems", 0, pointer);
  if (!min_items.ok()) return min_items.status();
  auto max_items = CountKeyword(schema, "maxItems", -1, pointer);
  if (!max_items.ok()) return max_items.status();
  int64_t lo = *min_items;
  int64_t hi = *max_items;
  int32_t items = -1;
  const int64_t k = static_cast<int64_t>(prefix.size());
  if (schema.contains("items") && schema["items"].is_boolean() && !schema["items"].get<bool>()) {
    hi = hi < 0 ? k : std::min(hi, k);
  } else {
    const Json items_schema = schema.contains("items") ? schema["items"] : Json(true);
    auto rule = CompileSchema(items_schema, ChildPointer(pointer, "items"), depth + 1);
    if (!rule.ok()) return rule.status();
    items = *rule;
  }
  if (hi >= 0 && lo > hi) return SchemaError("array admits no length", pointer);
  const int32_t space = json_.OptionalSpace();
  const int64_t states = hi >= 0 ? hi : std::max<int64_t>({k, lo, 1});
  // counts[c]: c items written so far.
  std::vector<int32_t> counts(states + 1);
  for (int64_t c = 0; c <= states; ++c) counts[c] = builder_.AddRule(absl::StrCat("items", c));
  for (int64_t c = 0; c <= states; ++c) {
    if (c >= lo) builder_.AddAlternative(counts[c], {});
    const int32_t item = c < k ? prefix[c] : items;
    Sequence seq;
    if (c > 0) seq = {Symbol::Byte(','), Symbol::Rule(space)};
    seq.push_back(Symbol::Rule(item));
    if (c < states) {
      seq.push_back(Symbol::Rule(counts[c + 1]));
      builder_.AddAlternative(counts[c], std::move(seq));
    } else if (hi < 0) {
      seq.push_back(Symbol::Rule(counts[c]));
      builder_.AddAlternative(counts[c], std::move(seq));
    }
  }
  return builder_.AddRule(absl::StrCat("array ", Where(pointer)),
                          {{Symbol::Byte('['), Symbol::Rule(counts[0]), Symbol::Byte(']')}});
}

absl::StatusOr<int32_t> SchemaCompiler::CompileString(const Json& schema,
                                                      const std::string& pointer) {
  auto min_length = CountKeyword(schema, "minLength", 0, pointer);
  if (!min_length.ok()) return min_length.status();
  auto max_length = CountKeyword(schema, "maxLength", -1, pointer);
  if (!max_length.ok()) return max_length.status();
  if (*max_length >= 0 && *min_length > *max_length) {
    return SchemaError("minLength above maxLength", pointer);
  }
  std::string pattern;
  std::string pattern_pointer;
  if (schema.contains("format")) {
    if (schema.contains("pattern")) return SchemaError("format together with pattern", pointer);
    const Json& format = schema["format"];
    const char* regex = format.is_string() ? FormatPattern(format.get<std::string>()) : nullptr;
    if (regex == nullptr) {
      return SchemaError(absl::StrCat("unsupported string format ", format.dump(),
                                      " (supported: date, time, date-time, uuid, email)"),
                         ChildPointer(pointer, "format"));
    }
    pattern = regex;
    pattern_pointer = ChildPointer(pointer, "format");
  } else if (schema.contains("pattern")) {
    if (!schema["pattern"].is_string()) return SchemaError("pattern is not a string", pointer);
    pattern = schema["pattern"].get<std::string>();
    pattern_pointer = ChildPointer(pointer, "pattern");
  } else {
    return json_.StringOfLength(*min_length, *max_length);
  }
  auto dfa = CompileRegex(pattern);
  if (dfa.ok() && (*min_length > 0 || *max_length >= 0)) {
    dfa = WithCharCount(*dfa, *min_length, *max_length);
  }
  if (!dfa.ok()) return SchemaError(std::string(dfa.status().message()), pattern_pointer);
  const int32_t body = EmitDfa(*dfa, DfaEncoding::kJsonStringContent, "pattern", &builder_);
  if (body < 0) return SchemaError("string pattern admits no value", pattern_pointer);
  return builder_.AddRule("string pattern",
                          {{Symbol::Byte('"'), Symbol::Rule(body), Symbol::Byte('"')}});
}

absl::StatusOr<int32_t> SchemaCompiler::CompileNumber(const Json& schema,
                                                      const std::string& pointer, bool integer) {
  std::optional<double> lower[2];  // [0] inclusive, [1] exclusive
  std::optional<double> upper[2];
  for (auto [key, slot] : {std::pair{"minimum", &lower[0]},
                           {"exclusiveMinimum", &lower[1]},
                           {"maximum", &upper[0]},
                           {"exclusiveMaximum", &upper[1]}}) {
    auto bound = BoundKeyword(schema, key, pointer);
    if (!bound.ok()) return bound.status();
    *slot = *bound;
  }
  // Draft 4 spelled exclusivity as booleans beside minimum/maximum.
  if (schema.contains("exclusiveMinimum") && schema["exclusiveMinimum"].is_boolean() &&
      schema["exclusiveMinimum"].get<bool>()) {
    std::swap(lower[0], lower[1]);
  }
  if (schema.contains("exclusiveMaximum") && schema["exclusiveMaximum"].is_boolean() &&
      schema["exclusiveMaximum"].get<bool>()) {
    std::swap(upper[0], upper[1]);
  }
  // Integer bounds (rounded inward when fractional), the tightest of each
  // side; exclusivity survives only on integral bounds.
  std::optional<NumberBound> min;
  std::optional<NumberBound> max;
  for (int exclusive = 0; exclusive < 2; ++exclusive) {
    if (lower[exclusive]) {
      const double v = *lower[exclusive];
      NumberBound b{static_cast<int64_t>(std::ceil(v)), exclusive == 1 && std::ceil(v) == v};
      if (integer && b.exclusive) b = {b.value + 1, false};
      if (!min || b.value > min->value || (b.value == min->value && b.exclusive)) min = b;
    }
    if (upper[exclusive]) {
      const double v = *upper[exclusive];
      NumberBound b{static_cast<int64_t>(std::floor(v)), exclusive == 1 && std::floor(v) == v};
      if (integer && b.exclusive) b = {b.value - 1, false};
      if (!max || b.value < max->value || (b.value == max->value && b.exclusive)) max = b;
    }
  }
  int32_t rule = -1;
  if (integer) {
    if (!min && !max) return json_.AnyInteger();
    rule = json_.IntegerInRange(min ? std::optional<int64_t>(min->value) : std::nullopt,
                                max ? std::optional<int64_t>(max->value) : std::nullopt);
  } else {
    rule = json_.NumberInRange(min, max);
  }
  if (rule < 0) return SchemaError("numeric bounds admit no value", pointer);
  return rule;
}

}  // namespace tern::structured::internal
