// Filters (`value | name(args)`), following @huggingface/jinja where it has
// the filter, and Jinja's documented behaviour for the few it lacks (round,
// select, reject, map by filter name, positional tojson indent).
#include "gateway/chat_template/jinja_filters.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/container/flat_hash_set.h"
#include "common/status_macros.h"
#include "gateway/chat_template/jinja_unicode.h"

namespace tern::gateway::jinja {
namespace {

absl::Status Unknown(std::string_view filter, const Value& operand) {
  return absl::InvalidArgumentError(
      Cat("Cannot apply filter \"", filter, "\" to type: ", operand.TypeName()));
}

const Value* ArgAt(CallArgs& args, size_t i, std::string_view keyword) {
  if (i < args.positional.size()) return &args.positional[i];
  return args.Keyword(keyword);
}

bool BoolArg(CallArgs& args, size_t i, std::string_view keyword) {
  const Value* v = ArgAt(args, i, keyword);
  return v != nullptr && Truthy(*v);
}

// Array.prototype.join over the values' payloads (none/undefined print empty).
absl::StatusOr<std::string> JoinValues(const std::vector<Value>& items, std::string_view sep,
                                       size_t max) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out.append(sep);
    if (!items[i].is_null() && !items[i].is_undefined()) {
      TERN_ASSIGN_OR_RETURN(std::string text, ToConcatString(items[i], max));
      out += text;
    }
    if (out.size() > max) return absl::ResourceExhaustedError("join() result is too large");
  }
  return out;
}

absl::StatusOr<Value> Indent(Interpreter& interp, const std::string& s, CallArgs& args) {
  const Value* width = ArgAt(args, 0, "width");
  std::string pad(4, ' ');
  if (width != nullptr) {
    if (width->is_string()) {
      pad = width->str();
    } else if (width->is_int() && width->number() >= 0 &&
               width->number() <= static_cast<double>(interp.limits().max_output_bytes)) {
      pad.assign(static_cast<size_t>(width->number()), ' ');
    } else {
      return absl::InvalidArgumentError("width must be a number");
    }
  }
  const bool first = BoolArg(args, 1, "first");
  const bool blank = BoolArg(args, 2, "blank");
  std::string out;
  size_t start = 0, line = 0;
  while (true) {
    const size_t nl = s.find('\n', start);
    const std::string_view text(s.data() + start,
                                (nl == std::string::npos ? s.size() : nl) - start);
    if (!((!first && line == 0) || (!blank && text.empty()))) out += pad;
    out += text;
    if (out.size() > interp.limits().max_output_bytes) {
      return absl::ResourceExhaustedError("indent() result is too large");
    }
    if (nl == std::string::npos) break;
    out += '\n';
    start = nl + 1;
    ++line;
  }
  return interp.MakeString(std::move(out));
}

absl::StatusOr<Value> ToJsonFilter(Interpreter& interp, const Value& operand, CallArgs& args) {
  JsonOptions options;
  const Value* indent = ArgAt(args, 0, "indent");
  if (indent != nullptr && !indent->is_null()) {
    if (!indent->is_int()) return absl::InvalidArgumentError("If set, indent must be a number");
    if (indent->number() > 1024) return absl::InvalidArgumentError("indent is too large");
    options.indent = indent->number() < 0 ? 0 : static_cast<int>(indent->number());
  }
  if (const Value* v = args.Keyword("ensure_ascii")) {
    if (!v->is_bool()) return absl::InvalidArgumentError("If set, ensure_ascii must be a boolean");
    options.ensure_ascii = v->bool_value();
  }
  if (const Value* v = args.Keyword("sort_keys")) {
    if (!v->is_bool()) return absl::InvalidArgumentError("If set, sort_keys must be a boolean");
    options.sort_keys = v->bool_value();
  }
  if (const Value* v = args.Keyword("separators"); v != nullptr && !v->is_null()) {
    if (!v->is_array() || v->array().size() != 2 || !v->array()[0].is_string() ||
        !v->array()[1].is_string()) {
      return absl::InvalidArgumentError("separators must be a tuple of two strings");
    }
    options.separators = std::make_pair(v->array()[0].str(), v->array()[1].str());
  }
  TERN_ASSIGN_OR_RETURN(std::string text,
                        ToJson(operand, options, interp.limits().max_output_bytes));
  return interp.MakeString(std::move(text));
}

// Python's round(x, n) (correctly rounded, ties to even) and Jinja's
// 'ceil' / 'floor' methods.
absl::StatusOr<Value> Round(const Value& operand, CallArgs& args) {
  const Value* precision_v = ArgAt(args, 0, "precision");
  const Value* method_v = ArgAt(args, 1, "method");
  const int precision = precision_v != nullptr && precision_v->is_number()
                            ? static_cast<int>(std::clamp(precision_v->number(), -300.0, 300.0))
                            : 0;
  const std::string method =
      method_v != nullptr && method_v->is_string() ? method_v->str() : "common";
  const double x = operand.number();
  double result;
  if (method == "ceil" || method == "floor") {
    const double scale = std::pow(10.0, precision);
    result = (method == "ceil" ? std::ceil(x * scale) : std::floor(x * scale)) / scale;
  } else if (method != "common") {
    return absl::InvalidArgumentError("method must be 'common', 'ceil' or 'floor'");
  } else if (precision >= 0 && std::isfinite(x)) {
    char buf[512];
    std::snprintf(buf, sizeof(buf), "%.*f", std::min(precision, 300), x);
    std::from_chars(buf, buf + std::char_traits<char>::length(buf), result);
  } else {
    const double scale = std::pow(10.0, -precision);
    result = std::nearbyint(x / scale) * scale;
  }
  return operand.is_int() ? Value::Int(result) : Value::Float(result);
}

absl::StatusOr<Value> SelectAttr(Interpreter& interp, const Value& operand, std::string_view name,
                                 CallArgs& args) {
  const bool select = name == "selectattr";
  for (const Value& item : operand.array()) {
    if (!item.is_mapping()) {
      return absl::InvalidArgumentError(
          Cat("`", name, "` can only be applied to array of objects"));
    }
  }
  const auto& p = args.positional;
  if (p.empty() || !p[0].is_string() || (p.size() > 1 && !p[1].is_string())) {
    return absl::InvalidArgumentError(Cat("arguments of `", name, "` must be strings"));
  }
  std::vector<Value> test_args(p.begin() + std::min<size_t>(2, p.size()), p.end());
  std::vector<Value> out;
  for (const Value& item : operand.array()) {
    const Value* attr = item.object().Find(p[0].str());
    bool result = false;
    if (attr != nullptr) {
      if (p.size() > 1) {
        TERN_ASSIGN_OR_RETURN(result, ApplyTest(p[1].str(), *attr, test_args));
      } else {
        result = Truthy(*attr);
      }
    }
    if (result == select) out.push_back(item);
  }
  return interp.MakeArray(std::move(out));
}

absl::StatusOr<Value> Select(Interpreter& interp, const Value& operand, std::string_view name,
                             CallArgs& args) {
  const bool select = name == "select";
  const auto& p = args.positional;
  if (!p.empty() && !p[0].is_string()) {
    return absl::InvalidArgumentError(Cat("the test of `", name, "` must be a string"));
  }
  std::vector<Value> test_args(p.begin() + std::min<size_t>(1, p.size()), p.end());
  std::vector<Value> out;
  for (const Value& item : operand.array()) {
    bool result;
    if (p.empty()) {
      result = Truthy(item);
    } else {
      TERN_ASSIGN_OR_RETURN(result, ApplyTest(p[0].str(), item, test_args));
    }
    if (result == select) out.push_back(item);
  }
  return interp.MakeArray(std::move(out));
}

absl::StatusOr<Value> Map(Interpreter& interp, const Value& operand, CallArgs& args,
                          const std::shared_ptr<Env>& env) {
  std::vector<Value> out;
  if (const Value* attr = args.Keyword("attribute")) {
    if (!attr->is_string()) return absl::InvalidArgumentError("attribute must be a string");
    const Value* fallback = args.Keyword("default");
    for (const Value& item : operand.array()) {
      if (!item.is_mapping()) return absl::InvalidArgumentError("items in map must be an object");
      Value v = GetAttributePath(item, attr->str());
      out.push_back(v.is_undefined() && fallback != nullptr ? *fallback : v);
    }
    return interp.MakeArray(std::move(out));
  }
  if (args.positional.empty() || !args.positional[0].is_string()) {
    return absl::InvalidArgumentError("map needs a filter name or attribute=");
  }
  const std::string filter = args.positional[0].str();
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keywords = args.keywords;
  for (const Value& item : operand.array()) {
    CallArgs item_args = rest;
    TERN_ASSIGN_OR_RETURN(
        Value v,
        ApplyNamedFilter(interp, item, filter, !rest.positional.empty() || !rest.keywords.empty(),
                         item_args, env));
    out.push_back(std::move(v));
  }
  return interp.MakeArray(std::move(out));
}

absl::StatusOr<Value> Sort(Interpreter& interp, const Value& operand, CallArgs& args) {
  const Value* reverse = ArgAt(args, 0, "reverse");
  const Value* case_sensitive = ArgAt(args, 1, "case_sensitive");
  const Value* attribute = ArgAt(args, 2, "attribute");
  if (reverse != nullptr && !reverse->is_bool()) {
    return absl::InvalidArgumentError("reverse must be a boolean");
  }
  if (case_sensitive != nullptr && !case_sensitive->is_bool()) {
    return absl::InvalidArgumentError("case_sensitive must be a boolean");
  }
  if (attribute != nullptr && !attribute->is_string() && !attribute->is_int() &&
      !attribute->is_null()) {
    return absl::InvalidArgumentError("attribute must be a string, integer, or null");
  }
  std::vector<Value> keys;
  for (const Value& item : operand.array()) {
    if (attribute == nullptr || attribute->is_null()) {
      keys.push_back(item);
    } else {
      const std::string path =
          attribute->is_int() ? FormatJsNumber(attribute->number()) : attribute->str();
      keys.push_back(GetAttributePath(item, path));
    }
  }
  TERN_ASSIGN_OR_RETURN(
      std::vector<Value> sorted,
      SortByKeys(operand.array(), keys, case_sensitive != nullptr && case_sensitive->bool_value(),
                 reverse != nullptr && reverse->bool_value()));
  return interp.MakeArray(std::move(sorted));
}

absl::StatusOr<Value> Unique(Interpreter& interp, const Value& operand) {
  absl::flat_hash_set<std::string> seen;
  std::vector<Value> out;
  for (const Value& item : operand.array()) {
    std::string key;
    if (item.is_string()) {
      key = Cat("s", item.str());
    } else if (item.is_number()) {
      key = Cat("n", FormatJsNumber(item.number()));
    } else if (item.is_bool() || item.is_null() || item.is_undefined()) {
      key = Cat("k", static_cast<int>(item.kind()), item.bool_value());
    } else {
      key = Cat("p", reinterpret_cast<uintptr_t>(item.identity()));
    }
    if (seen.insert(std::move(key)).second) out.push_back(item);
  }
  return interp.MakeArray(std::move(out));
}

absl::StatusOr<Value> ArrayFilter(Interpreter& interp, const Value& operand, std::string_view name,
                                  bool has_args, CallArgs& args, const std::shared_ptr<Env>& env) {
  const std::vector<Value>& items = operand.array();
  const size_t max = interp.limits().max_output_bytes;
  if (name == "sort") return Sort(interp, operand, args);
  if (name == "selectattr" || name == "rejectattr") {
    if (!has_args) return Unknown(name, operand);
    return SelectAttr(interp, operand, name, args);
  }
  if (name == "select" || name == "reject") return Select(interp, operand, name, args);
  if (name == "map") return Map(interp, operand, args, env);
  if (has_args) return Unknown(name, operand);
  if (name == "list") return operand;
  if (name == "first") return items.empty() ? Value() : items.front();
  if (name == "last") return items.empty() ? Value() : items.back();
  if (name == "length") return Value::Int(static_cast<double>(items.size()));
  if (name == "reverse") return interp.MakeArray(std::vector<Value>(items.rbegin(), items.rend()));
  if (name == "join") {
    TERN_ASSIGN_OR_RETURN(std::string text, JoinValues(items, "", max));
    return interp.MakeString(std::move(text));
  }
  if (name == "string") {
    TERN_ASSIGN_OR_RETURN(std::string text, ToDisplayString(operand, max));
    return interp.MakeString(std::move(text));
  }
  if (name == "unique") return Unique(interp, operand);
  return Unknown(name, operand);
}

absl::StatusOr<Value> StringFilter(Interpreter& interp, const Value& operand, std::string_view name,
                                   bool has_args, CallArgs& args) {
  const std::string& s = operand.str();
  if (name == "indent") return Indent(interp, s, args);
  if (name == "replace" || (has_args && name == "trim")) {
    TERN_ASSIGN_OR_RETURN(Value method,
                          BuiltinMember(interp, operand, name == "trim" ? "strip" : name));
    return interp.CallFunction(method, args, nullptr);
  }
  if (has_args) return Unknown(name, operand);
  if (name == "length") return Value::Int(static_cast<double>(Utf16Length(s)));
  if (name == "trim") return interp.MakeString(std::string(JsTrim(s)));
  if (name == "join" || name == "string") return operand;
  if (name == "int") return Value::Int(JsParseInt(s).value_or(0));
  if (name == "float") return Value::Float(JsParseFloat(s).value_or(0));
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    TERN_ASSIGN_OR_RETURN(Value method, BuiltinMember(interp, operand, name));
    return interp.CallFunction(method, args, nullptr);
  }
  if (name == "reverse" || name == "list" || name == "first" || name == "last") {
    std::vector<std::string> chars = SplitCodePoints(s);
    if (name == "first") return chars.empty() ? Value() : Value::Str(chars.front());
    if (name == "last") return chars.empty() ? Value() : Value::Str(chars.back());
    if (name == "reverse") {
      std::string out;
      for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
      return interp.MakeString(std::move(out));
    }
    std::vector<Value> items;
    for (std::string& ch : chars) items.push_back(Value::Str(std::move(ch)));
    return interp.MakeArray(std::move(items));
  }
  return Unknown(name, operand);
}

}  // namespace

absl::StatusOr<Value> ApplyNamedFilter(Interpreter& interp, const Value& operand,
                                       std::string_view name, bool has_args, CallArgs& args,
                                       const std::shared_ptr<Env>& env) {
  const size_t max = interp.limits().max_output_bytes;
  if (name == "safe") return operand;
  if (name == "tojson") return ToJsonFilter(interp, operand, args);
  if (name == "default" || name == "d") {
    const Value* fallback = ArgAt(args, 0, "default_value");
    const bool boolean = BoolArg(args, 1, "boolean");
    if (operand.is_undefined() || (boolean && !Truthy(operand))) {
      return fallback != nullptr ? *fallback : Value::Str("");
    }
    return operand;
  }
  if (has_args && name == "join") {
    const Value* sep = ArgAt(args, 0, "separator");
    if (sep != nullptr && !sep->is_string()) {
      return absl::InvalidArgumentError("separator must be a string");
    }
    std::vector<Value> items;
    if (operand.is_string()) {
      for (std::string& ch : SplitCodePoints(operand.str()))
        items.push_back(Value::Str(std::move(ch)));
    } else if (operand.is_array()) {
      items = operand.array();
    } else {
      return Unknown(name, operand);
    }
    TERN_ASSIGN_OR_RETURN(std::string text, JoinValues(items, sep ? sep->str() : "", max));
    return interp.MakeString(std::move(text));
  }
  if (has_args && (name == "int" || name == "float")) {
    const bool is_int = name == "int";
    const Value* fallback = ArgAt(args, 0, "default");
    if (operand.is_string()) {
      std::optional<double> v = is_int ? JsParseInt(operand.str()) : JsParseFloat(operand.str());
      if (!v.has_value()) {
        if (fallback != nullptr) return *fallback;
        return is_int ? Value::Int(0) : Value::Float(0);
      }
      return is_int ? Value::Int(*v) : Value::Float(*v);
    }
    if (operand.is_number()) return operand;
    if (operand.is_bool()) {
      return is_int ? Value::Int(operand.number()) : Value::Float(operand.number());
    }
    return Unknown(name, operand);
  }
  if (name == "round" && operand.is_number()) return Round(operand, args);
  switch (operand.kind()) {
    case Value::Kind::kArray:
      return ArrayFilter(interp, operand, name, has_args, args, env);
    case Value::Kind::kString:
      return StringFilter(interp, operand, name, has_args, args);
    case Value::Kind::kInt:
    case Value::Kind::kFloat:
      if (has_args) break;
      if (name == "abs") {
        const double a = std::fabs(operand.number());
        return operand.is_int() ? Value::Int(a) : Value::Float(a);
      }
      if (name == "int") return Value::Int(std::floor(operand.number()));
      if (name == "float") return Value::Float(operand.number());
      if (name == "string") {
        return interp.MakeString(operand.is_int() ? FormatJsNumber(operand.number())
                                                  : FormatFloat(operand.number()));
      }
      break;
    case Value::Kind::kObject: {
      if (!has_args && name == "length") {
        return Value::Int(static_cast<double>(operand.object().size()));
      }
      TERN_ASSIGN_OR_RETURN(Value method, BuiltinMember(interp, operand, name));
      if (method.is_function()) return interp.CallFunction(method, args, env);
      break;
    }
    case Value::Kind::kBool:
      if (has_args) break;
      if (name == "bool") return operand;
      if (name == "int") return Value::Int(operand.number());
      if (name == "float") return Value::Float(operand.number());
      if (name == "string") return Value::Str(operand.bool_value() ? "true" : "false");
      break;
    default:
      break;
  }
  return Unknown(name, operand);
}

absl::StatusOr<Value> ApplyFilter(Interpreter& interp, const Value& operand, const Expr& filter,
                                  const std::shared_ptr<Env>& env) {
  CallArgs args;
  if (filter.has_args) {
    TERN_ASSIGN_OR_RETURN(args, interp.EvalArgs(filter.args, env));
  }
  return ApplyNamedFilter(interp, operand, filter.name, filter.has_args, args, env);
}

}  // namespace tern::gateway::jinja
