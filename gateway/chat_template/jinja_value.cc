#include "gateway/chat_template/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/status/status.h"
#include "gateway/chat_template/jinja_unicode.h"

namespace tern::gateway::jinja {
namespace {

constexpr size_t kIndexThreshold = 16;

struct ArrayData {
  std::vector<Value> items;
  ~ArrayData();
};

struct FunctionData {
  NativeFunction fn;
};

// Containers release their children through this queue instead of
// recursively, so destroying a deeply nested structure (which a template can
// build one level per loop iteration) never exhausts the stack.
struct Graveyard {
  std::vector<Value> pending;
  bool draining = false;
};
thread_local Graveyard graveyard;

void ReleaseChildren(std::vector<Value>* children) {
  Graveyard& g = graveyard;
  for (Value& v : *children) {
    if (v.is_array() || v.is_mapping() || v.is_function()) g.pending.push_back(std::move(v));
  }
  children->clear();
  if (g.draining) return;
  g.draining = true;
  while (!g.pending.empty()) {
    Value doomed = std::move(g.pending.back());
    g.pending.pop_back();
  }
  g.draining = false;
}

ArrayData::~ArrayData() { ReleaseChildren(&items); }

}  // namespace

const Value* CallArgs::Keyword(std::string_view name) const {
  for (const auto& [key, value] : keywords) {
    if (key == name) return &value;
  }
  return nullptr;
}

// ---- Value ----

Value Value::Null() {
  Value v;
  v.kind_ = Kind::kNull;
  return v;
}
Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.num_ = b ? 1 : 0;
  return v;
}
Value Value::Int(double d) {
  Value v;
  v.kind_ = Kind::kInt;
  v.num_ = d;
  return v;
}
Value Value::Float(double d) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.num_ = d;
  return v;
}
Value Value::Str(std::string s) { return Str(std::make_shared<const std::string>(std::move(s))); }
Value Value::Str(std::shared_ptr<const std::string> s) {
  Value v;
  v.kind_ = Kind::kString;
  v.ptr_ = std::const_pointer_cast<std::string>(std::move(s));
  return v;
}
Value Value::Array(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::kArray;
  auto data = std::make_shared<ArrayData>();
  data->items = std::move(items);
  v.ptr_ = std::move(data);
  return v;
}
Value Value::Object(std::vector<std::pair<std::string, Value>> entries) {
  Value v;
  v.kind_ = Kind::kObject;
  v.ptr_ = std::make_shared<ObjectData>(std::move(entries));
  return v;
}
Value Value::Namespace(std::vector<std::pair<std::string, Value>> entries) {
  Value v = Object(std::move(entries));
  v.kind_ = Kind::kNamespace;
  return v;
}
Value Value::Function(NativeFunction fn) {
  Value v;
  v.kind_ = Kind::kFunction;
  auto data = std::make_shared<FunctionData>();
  data->fn = std::move(fn);
  v.ptr_ = std::move(data);
  return v;
}

const std::string& Value::str() const { return *static_cast<const std::string*>(ptr_.get()); }
const std::vector<Value>& Value::array() const {
  return static_cast<const ArrayData*>(ptr_.get())->items;
}
const ObjectData& Value::object() const { return *static_cast<const ObjectData*>(ptr_.get()); }
ObjectData& Value::mutable_namespace() const { return *static_cast<ObjectData*>(ptr_.get()); }
const NativeFunction& Value::function() const {
  return static_cast<const FunctionData*>(ptr_.get())->fn;
}

std::string_view Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "UndefinedValue";
    case Kind::kNull:
      return "NullValue";
    case Kind::kBool:
      return "BooleanValue";
    case Kind::kInt:
      return "IntegerValue";
    case Kind::kFloat:
      return "FloatValue";
    case Kind::kString:
      return "StringValue";
    case Kind::kArray:
      return "ArrayValue";
    case Kind::kObject:
      return "ObjectValue";
    case Kind::kNamespace:
      return "NamespaceValue";
    case Kind::kFunction:
      return "FunctionValue";
  }
  return "Value";
}

// ---- ObjectData ----

ObjectData::ObjectData(std::vector<std::pair<std::string, Value>> entries)
    : entries_(std::move(entries)) {
  Reindex();
}

ObjectData::~ObjectData() { Clear(); }

void ObjectData::Clear() {
  std::vector<Value> children;
  children.reserve(entries_.size());
  for (auto& entry : entries_) children.push_back(std::move(entry.second));
  entries_.clear();
  index_.clear();
  ReleaseChildren(&children);
}

void ObjectData::Reindex() {
  index_.clear();
  if (entries_.size() <= kIndexThreshold) return;
  for (size_t i = 0; i < entries_.size(); ++i) index_.try_emplace(entries_[i].first, i);
}

const Value* ObjectData::Find(std::string_view key) const {
  if (entries_.size() > kIndexThreshold) {
    auto it = index_.find(AbslView(key));
    return it == index_.end() ? nullptr : &entries_[it->second].second;
  }
  for (const auto& entry : entries_) {
    if (entry.first == key) return &entry.second;
  }
  return nullptr;
}

void ObjectData::Set(std::string key, Value value) {
  for (auto& entry : entries_) {
    if (entry.first == key) {
      entry.second = std::move(value);
      return;
    }
  }
  entries_.emplace_back(std::move(key), std::move(value));
  if (entries_.size() > kIndexThreshold) {
    if (index_.empty()) {
      Reindex();
    } else {
      index_.try_emplace(entries_.back().first, entries_.size() - 1);
    }
  }
}

// ---- truthiness, numbers, equality ----

bool Truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNull:
      return false;
    case Value::Kind::kBool:
      return v.bool_value();
    case Value::Kind::kInt:
    case Value::Kind::kFloat:
      return v.number() != 0 && !std::isnan(v.number());
    case Value::Kind::kString:
      return !v.str().empty();
    case Value::Kind::kArray:
      return !v.array().empty();
    case Value::Kind::kObject:
      return v.object().size() > 0;
    case Value::Kind::kNamespace:
    case Value::Kind::kFunction:
      return true;
  }
  return false;
}

std::string FormatJsNumber(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  if (x == 0) return "0";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), x, std::chars_format::scientific);
  std::string_view sci(buf, res.ptr - buf);
  const bool negative = sci[0] == '-';
  if (negative) sci.remove_prefix(1);
  const size_t e = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e)) {
    if (c != '.') digits.push_back(c);
  }
  int exponent = 0;
  std::from_chars(sci.data() + e + 1 + (sci[e + 1] == '+' ? 1 : 0), sci.data() + sci.size(),
                  exponent);
  const int k = static_cast<int>(digits.size());
  const int n = exponent + 1;
  std::string out = negative ? "-" : "";
  if (k <= n && n <= 21) {
    out += digits;
    out.append(n - k, '0');
  } else if (0 < n && n <= 21) {
    out += digits.substr(0, n);
    out += '.';
    out += digits.substr(n);
  } else if (-6 < n && n <= 0) {
    out += "0.";
    out.append(-n, '0');
    out += digits;
  } else {
    out += digits[0];
    if (k > 1) {
      out += '.';
      out += digits.substr(1);
    }
    out += 'e';
    out += n - 1 >= 0 ? '+' : '-';
    out += std::to_string(std::abs(n - 1));
  }
  return out;
}

std::string FormatFloat(double x) {
  if (x == 0 && std::signbit(x)) return "-0.0";
  if (std::isfinite(x) && std::floor(x) == x && std::fabs(x) < 1e21) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.1f", x);
    return buf;
  }
  return FormatJsNumber(x);
}

namespace {

// JavaScript StringToNumber (used when == compares a string with a number).
double JsStringToNumber(std::string_view s) {
  s = JsTrim(s);
  if (s.empty()) return 0;
  if (s == "Infinity" || s == "+Infinity") return HUGE_VAL;
  if (s == "-Infinity") return -HUGE_VAL;
  const double nan = std::nan("");
  if (s.size() > 2 && s[0] == '0' && std::strchr("xXoObB", s[1]) != nullptr) {
    const int base = (s[1] == 'x' || s[1] == 'X') ? 16 : (s[1] == 'o' || s[1] == 'O') ? 8 : 2;
    double value = 0;
    for (char c : s.substr(2)) {
      int digit;
      if (c >= '0' && c <= '9')
        digit = c - '0';
      else if (c >= 'a' && c <= 'f')
        digit = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        digit = c - 'A' + 10;
      else
        return nan;
      if (digit >= base) return nan;
      value = value * base + digit;
    }
    return value;
  }
  // The whole string must be a StrDecimalLiteral; parseFloat then reads it.
  size_t i = (s[0] == '+' || s[0] == '-') ? 1 : 0;
  if (s.substr(i) == "Infinity") return s[0] == '-' ? -HUGE_VAL : HUGE_VAL;
  size_t mantissa_digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++mantissa_digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++mantissa_digits;
  }
  if (mantissa_digits == 0) return nan;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    size_t exponent_digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++exponent_digits;
    if (exponent_digits == 0) return nan;
  }
  if (i != s.size()) return nan;
  return JsParseFloat(s).value_or(nan);
}

enum class JsType { kUndefined, kNull, kBool, kNumber, kString, kObject };

JsType JsTypeOf(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return JsType::kUndefined;
    case Value::Kind::kNull:
      return JsType::kNull;
    case Value::Kind::kBool:
      return JsType::kBool;
    case Value::Kind::kInt:
    case Value::Kind::kFloat:
      return JsType::kNumber;
    case Value::Kind::kString:
      return JsType::kString;
    default:
      return JsType::kObject;
  }
}

}  // namespace

bool StrictEquals(const Value& a, const Value& b) {
  const JsType ta = JsTypeOf(a);
  if (ta != JsTypeOf(b)) return false;
  switch (ta) {
    case JsType::kUndefined:
    case JsType::kNull:
      return true;
    case JsType::kBool:
    case JsType::kNumber:
      return a.number() == b.number();
    case JsType::kString:
      return a.str() == b.str();
    case JsType::kObject:
      return a.identity() == b.identity();
  }
  return false;
}

bool LooseEquals(const Value& a, const Value& b) {
  const JsType ta = JsTypeOf(a);
  const JsType tb = JsTypeOf(b);
  if (ta == tb) return StrictEquals(a, b);
  const auto nullish = [](JsType t) { return t == JsType::kNull || t == JsType::kUndefined; };
  if (nullish(ta) || nullish(tb)) return nullish(ta) && nullish(tb);
  if (ta == JsType::kBool) return LooseEquals(Value::Int(a.number()), b);
  if (tb == JsType::kBool) return LooseEquals(a, Value::Int(b.number()));
  if (ta == JsType::kNumber && tb == JsType::kString) {
    return a.number() == JsStringToNumber(b.str());
  }
  if (ta == JsType::kString && tb == JsType::kNumber) {
    return JsStringToNumber(a.str()) == b.number();
  }
  // An object against a primitive compares the object's string form.
  const bool a_object = ta == JsType::kObject;
  const Value& object = a_object ? a : b;
  const Value& primitive = a_object ? b : a;
  if (object.is_function()) return false;
  absl::StatusOr<std::string> text = ToConcatString(object, 1 << 20);
  if (!text.ok()) return false;
  return LooseEquals(Value::Str(*std::move(text)), primitive);
}

std::optional<double> JsParseInt(std::string_view s) {
  s = JsTrimStart(s);
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  size_t n = 0;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
  if (n == 0) return std::nullopt;
  double value = 0;
  const auto res = std::from_chars(s.data(), s.data() + n, value);
  if (res.ec == std::errc::result_out_of_range) value = HUGE_VAL;
  return negative ? -value : value;
}

std::optional<double> JsParseFloat(std::string_view s) {
  s = JsTrimStart(s);
  bool negative = false;
  size_t i = 0;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    i = 1;
  }
  if (s.substr(i, 8) == "Infinity") return negative ? -HUGE_VAL : HUGE_VAL;
  std::string text = "0";  // from_chars wants a digit before '.'
  size_t digits = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, ++digits) text.push_back(s[i]);
  if (i < s.size() && s[i] == '.') {
    size_t j = i + 1;
    std::string frac = ".";
    for (; j < s.size() && s[j] >= '0' && s[j] <= '9'; ++j) frac.push_back(s[j]);
    if (frac.size() > 1 || digits > 0) {
      digits += frac.size() - 1;
      text += frac;
      i = j;
    }
  }
  if (digits == 0) return std::nullopt;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    size_t j = i + 1;
    std::string exp = "e";
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) exp.push_back(s[j++]);
    const size_t start = j;
    for (; j < s.size() && s[j] >= '0' && s[j] <= '9'; ++j) exp.push_back(s[j]);
    if (j > start) text += exp;
  }
  double value = 0;
  const auto res = std::from_chars(text.data(), text.data() + text.size(), value);
  if (res.ec == std::errc::result_out_of_range) {
    // Overflow is infinite; underflow is zero.
    const size_t e = text.find('e');
    value = (e != std::string::npos && text[e + 1] == '-') ? 0.0 : HUGE_VAL;
  }
  return negative ? -value : value;
}

}  // namespace tern::gateway::jinja
