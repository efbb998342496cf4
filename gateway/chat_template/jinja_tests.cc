// `is` tests, value ordering and dictsort.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/status_macros.h"
#include "gateway/chat_template/jinja_filters.h"
#include "gateway/chat_template/jinja_unicode.h"
#include "gateway/chat_template/jinja_value.h"

namespace tern::gateway::jinja {
namespace {

bool IsNumericLike(const Value& v) { return v.is_number() || v.is_bool(); }

absl::Status NeedsArgument(std::string_view test) {
  return absl::InvalidArgumentError(Cat("test '", test, "' requires an argument"));
}

absl::StatusOr<bool> NumericTest(std::string_view name, const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number()) {
    if (a.is_string() && b.is_string()) {
      if (name == "gt" || name == ">" || name == "greaterthan") return a.str() > b.str();
      if (name == "ge" || name == ">=") return a.str() >= b.str();
      if (name == "lt" || name == "<" || name == "lessthan") return a.str() < b.str();
      return a.str() <= b.str();
    }
    return absl::InvalidArgumentError(Cat("cannot compare ", a.TypeName(), " and ", b.TypeName()));
  }
  const double x = a.number(), y = b.number();
  if (name == "gt" || name == ">" || name == "greaterthan") return x > y;
  if (name == "ge" || name == ">=") return x >= y;
  if (name == "lt" || name == "<" || name == "lessthan") return x < y;
  return x <= y;
}

}  // namespace

absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& v,
                               const std::vector<Value>& args) {
  using K = Value::Kind;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_null();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.bool_value();
  if (name == "false") return v.is_bool() && !v.bool_value();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "callable") return v.is_function();
  if (name == "iterable") return v.is_array() || v.is_string();
  if (name == "mapping") return v.is_object();
  if (name == "sequence") return v.is_array() || v.is_object() || v.is_string();
  if (name == "odd" || name == "even") {
    if (!v.is_int()) return absl::InvalidArgumentError(Cat("cannot ", name, " on ", v.TypeName()));
    const bool odd = std::fmod(v.number(), 2) != 0;
    return name == "odd" ? odd : !odd;
  }
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) {
      return absl::InvalidArgumentError(Cat("cannot ", name, " on ", v.TypeName()));
    }
    return v.str() == (name == "lower" ? ToLowerCase(v.str()) : ToUpperCase(v.str()));
  }
  if (name == "equalto" || name == "eq" || name == "==" || name == "sameas") {
    if (args.empty()) return NeedsArgument(name);
    return StrictEquals(v, args[0]);
  }
  if (name == "ne" || name == "!=") {
    if (args.empty()) return NeedsArgument(name);
    return !StrictEquals(v, args[0]);
  }
  if (name == "gt" || name == "ge" || name == "lt" || name == "le" || name == ">" || name == ">=" ||
      name == "<" || name == "<=" || name == "greaterthan" || name == "lessthan") {
    if (args.empty()) return NeedsArgument(name);
    return NumericTest(name, v, args[0]);
  }
  if (name == "divisibleby") {
    if (args.empty()) return NeedsArgument(name);
    if (!v.is_number() || !args[0].is_number() || args[0].number() == 0) {
      return absl::InvalidArgumentError("divisibleby needs a non-zero number");
    }
    return std::fmod(v.number(), args[0].number()) == 0;
  }
  if (name == "in") {
    if (args.empty()) return NeedsArgument(name);
    const Value& container = args[0];
    if (container.is_array()) {
      const auto& items = container.array();
      return std::any_of(items.begin(), items.end(),
                         [&](const Value& x) { return StrictEquals(x, v); });
    }
    if (container.is_string() && v.is_string()) {
      return container.str().find(v.str()) != std::string::npos;
    }
    if (container.kind() == K::kObject && v.is_string()) {
      return container.object().Find(v.str()) != nullptr;
    }
    return absl::InvalidArgumentError("test 'in' needs a list, string or dict");
  }
  return absl::InvalidArgumentError(Cat("Unknown test: ", name));
}

absl::StatusOr<int> CompareValues(const Value& a, const Value& b, bool case_sensitive) {
  auto mismatch = [&] {
    return absl::InvalidArgumentError(Cat("Cannot compare ", a.TypeName(), " with ", b.TypeName()));
  };
  if (a.is_null() || b.is_null()) {
    if (a.is_null() && b.is_null()) return 0;
    return mismatch();
  }
  if (a.is_undefined() || b.is_undefined()) {
    if (a.is_undefined() && b.is_undefined()) return 0;
    return mismatch();
  }
  if (IsNumericLike(a) && IsNumericLike(b)) {
    return a.number() < b.number() ? -1 : a.number() > b.number() ? 1 : 0;
  }
  if (a.kind() != b.kind()) {
    return absl::InvalidArgumentError(
        Cat("Cannot compare different types: ", a.TypeName(), " and ", b.TypeName()));
  }
  if (a.is_string()) {
    if (case_sensitive) return a.str().compare(b.str()) < 0 ? -1 : a.str() == b.str() ? 0 : 1;
    const std::string x = ToLowerCase(a.str()), y = ToLowerCase(b.str());
    return x < y ? -1 : x > y ? 1 : 0;
  }
  return absl::InvalidArgumentError(Cat("Cannot compare type: ", a.TypeName()));
}

absl::StatusOr<std::vector<Value>> SortByKeys(std::vector<Value> items,
                                              const std::vector<Value>& keys, bool case_sensitive,
                                              bool reverse) {
  // Comparability is decided by type alone, so checking every key against the
  // first proves the comparator below never meets an error.
  for (size_t i = 0; i < keys.size(); ++i) {
    TERN_RETURN_IF_ERROR(CompareValues(keys[0], keys[i], case_sensitive).status());
  }
  std::vector<Value> folded = keys;
  if (!case_sensitive) {
    for (Value& k : folded) {
      if (k.is_string()) k = Value::Str(ToLowerCase(k.str()));
    }
  }
  std::vector<size_t> order(items.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    const int c = CompareValues(folded[x], folded[y], /*case_sensitive=*/true).value_or(0);
    return reverse ? c > 0 : c < 0;
  });
  std::vector<Value> out;
  out.reserve(items.size());
  for (size_t i : order) out.push_back(std::move(items[i]));
  return out;
}

Value GetAttributePath(const Value& item, std::string_view path) {
  Value current = item;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string_view part =
        path.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (current.is_mapping()) {
      const Value* next = current.object().Find(part);
      if (next == nullptr) return Value();
      current = *next;
    } else if (current.is_array()) {
      const std::optional<double> index = JsParseInt(part);
      if (!index.has_value() || *index < 0 ||
          *index >= static_cast<double>(current.array().size())) {
        return Value();
      }
      current = current.array()[static_cast<size_t>(*index)];
    } else {
      return Value();
    }
    if (dot == std::string_view::npos) return current;
    start = dot + 1;
  }
}

absl::StatusOr<Value> DictSort(Interpreter& interp, const Value& object, CallArgs& args) {
  auto arg = [&args](size_t i, std::string_view name) -> const Value* {
    if (i < args.positional.size()) return &args.positional[i];
    return args.Keyword(name);
  };
  const Value* case_sensitive = arg(0, "case_sensitive");
  const Value* by = arg(1, "by");
  const Value* reverse = arg(2, "reverse");
  if (case_sensitive != nullptr && !case_sensitive->is_bool()) {
    return absl::InvalidArgumentError("case_sensitive must be a boolean");
  }
  if (by != nullptr && !by->is_string()) return absl::InvalidArgumentError("by must be a string");
  if (by != nullptr && by->str() != "key" && by->str() != "value") {
    return absl::InvalidArgumentError("by must be either 'key' or 'value'");
  }
  if (reverse != nullptr && !reverse->is_bool()) {
    return absl::InvalidArgumentError("reverse must be a boolean");
  }
  const bool by_value = by != nullptr && by->str() == "value";
  std::vector<Value> pairs, keys;
  for (const auto& [key, value] : object.object().entries()) {
    pairs.push_back(Value::Array({Value::Str(key), value}));
    keys.push_back(by_value ? value : Value::Str(key));
  }
  TERN_ASSIGN_OR_RETURN(
      std::vector<Value> sorted,
      SortByKeys(std::move(pairs), keys, case_sensitive != nullptr && case_sensitive->bool_value(),
                 reverse != nullptr && reverse->bool_value()));
  return interp.MakeArray(std::move(sorted));
}

}  // namespace tern::gateway::jinja
