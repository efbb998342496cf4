// JSON in and out of template values, and the text forms of values.
#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "gateway/chat_template/jinja_unicode.h"
#include "gateway/chat_template/jinja_value.h"

namespace tern::gateway::jinja {
namespace {

constexpr int kMaxJsonDepth = 512;
constexpr int kMaxContextDepth = 256;

absl::Status TooLarge() {
  return absl::ResourceExhaustedError("template value exceeds the output size limit");
}

void AppendHex4(unsigned value, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->append("\\u");
  for (int shift = 12; shift >= 0; shift -= 4) out->push_back(kHex[(value >> shift) & 0xF]);
}

// JSON.stringify of a string, optionally escaping everything from U+007F up
// as \uXXXX (UTF-16 units), which is the reference's ensure_ascii.
void AppendJsonString(std::string_view s, bool ensure_ascii, std::string* out) {
  out->push_back('"');
  for (size_t i = 0; i < s.size();) {
    char32_t cp;
    const size_t n = DecodeUtf8(s, i, &cp);
    switch (cp) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (cp < 0x20) {
          AppendHex4(cp, out);
        } else if (ensure_ascii && cp >= 0x7F) {
          if (cp >= 0x10000) {
            const char32_t v = cp - 0x10000;
            AppendHex4(0xD800 + (v >> 10), out);
            AppendHex4(0xDC00 + (v & 0x3FF), out);
          } else {
            AppendHex4(cp, out);
          }
        } else {
          AppendUtf8(cp, out);
        }
    }
    i += n;
  }
  out->push_back('"');
}

// Approximates String.prototype.localeCompare (ICU root collation) closely
// enough for key sorting: punctuation < digits < letters, case-insensitive
// first, lower case before upper case on ties.
bool LocaleLess(const std::string& a, const std::string& b) {
  auto rank = [](unsigned char c) -> int {
    if (c >= '0' && c <= '9') return 200 + c;
    if (c >= 'a' && c <= 'z') return 300 + c;
    if (c >= 'A' && c <= 'Z') return 300 + c + 32;
    if (c >= 0x80) return 1000 + c;
    return c;
  };
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const int ra = rank(a[i]), rb = rank(b[i]);
    if (ra != rb) return ra < rb;
  }
  if (a.size() != b.size()) return a.size() < b.size();
  for (size_t i = 0; i < n; ++i) {
    const bool la = a[i] >= 'a' && a[i] <= 'z';
    const bool lb = b[i] >= 'a' && b[i] <= 'z';
    if (la != lb) return la;
  }
  return false;
}

class JsonWriter {
 public:
  JsonWriter(const JsonOptions& options, size_t max_bytes, std::string* out)
      : options_(options), max_bytes_(max_bytes), out_(out) {
    if (options.separators.has_value()) {
      item_sep_ = options.separators->first;
      key_sep_ = options.separators->second;
    } else {
      item_sep_ = options.indent > 0 ? "," : ", ";
      key_sep_ = ": ";
    }
  }

  absl::Status Write(const Value& v, int depth) {
    if (depth > kMaxJsonDepth) {
      return absl::InvalidArgumentError("value is nested too deeply to convert to JSON");
    }
    if (overflow_ || out_->size() > max_bytes_) return TooLarge();
    switch (v.kind()) {
      case Value::Kind::kNull:
        out_->append("null");
        break;
      case Value::Kind::kUndefined:
        out_->append(options_.undefined_as_null ? "null" : "undefined");
        break;
      case Value::Kind::kBool:
        out_->append(v.bool_value() ? "true" : "false");
        break;
      case Value::Kind::kInt:
      case Value::Kind::kFloat:
        out_->append(std::isfinite(v.number()) ? FormatJsNumber(v.number()) : "null");
        break;
      case Value::Kind::kString:
        AppendJsonString(v.str(), options_.ensure_ascii, out_);
        break;
      case Value::Kind::kArray:
        return WriteArray(v.array(), depth);
      case Value::Kind::kObject:
      case Value::Kind::kNamespace:
        return WriteObject(v.object(), depth);
      case Value::Kind::kFunction:
        return absl::InvalidArgumentError("Cannot convert to JSON: FunctionValue");
    }
    return absl::OkStatus();
  }

  bool overflowed() const { return overflow_; }

 private:
  void Pad(int depth) {
    const size_t n = static_cast<size_t>(options_.indent) * static_cast<size_t>(depth);
    if (out_->size() + n > max_bytes_) {
      overflow_ = true;
      return;
    }
    out_->push_back('\n');
    out_->append(n, ' ');
  }

  absl::Status WriteArray(const std::vector<Value>& items, int depth) {
    const bool pretty = options_.indent > 0 && !items.empty();
    out_->push_back('[');
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) out_->append(item_sep_);
      if (pretty) Pad(depth + 1);
      if (absl::Status s = Write(items[i], depth + 1); !s.ok()) return s;
    }
    if (pretty) Pad(depth);
    out_->push_back(']');
    return absl::OkStatus();
  }

  absl::Status WriteObject(const ObjectData& object, int depth) {
    std::vector<const std::pair<std::string, Value>*> entries;
    entries.reserve(object.size());
    for (const auto& entry : object.entries()) entries.push_back(&entry);
    if (options_.sort_keys) {
      std::stable_sort(entries.begin(), entries.end(),
                       [](const auto* a, const auto* b) { return LocaleLess(a->first, b->first); });
    }
    const bool pretty = options_.indent > 0 && !entries.empty();
    out_->push_back('{');
    for (size_t i = 0; i < entries.size(); ++i) {
      if (i > 0) out_->append(item_sep_);
      if (pretty) Pad(depth + 1);
      AppendJsonString(entries[i]->first, options_.ensure_ascii, out_);
      out_->append(key_sep_);
      if (absl::Status s = Write(entries[i]->second, depth + 1); !s.ok()) return s;
    }
    if (pretty) Pad(depth);
    out_->push_back('}');
    return absl::OkStatus();
  }

  const JsonOptions& options_;
  const size_t max_bytes_;
  std::string* out_;
  std::string item_sep_;
  std::string key_sep_;
  bool overflow_ = false;
};

bool IsArrayIndexKey(std::string_view key, uint64_t* index) {
  if (key.empty() || key.size() > 10) return false;
  if (key.size() > 1 && key[0] == '0') return false;
  uint64_t value = 0;
  for (char c : key) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > 4294967294ULL) return false;
  *index = value;
  return true;
}

template <typename Json>
absl::StatusOr<Value> ConvertJson(const Json& j, int depth) {
  if (depth > kMaxContextDepth) {
    return absl::InvalidArgumentError("template context is nested too deeply");
  }
  switch (j.type()) {
    case nlohmann::detail::value_t::null:
      return Value::Null();
    case nlohmann::detail::value_t::boolean:
      return Value::Bool(j.template get<bool>());
    case nlohmann::detail::value_t::number_integer:
      return Value::Int(static_cast<double>(j.template get<int64_t>()));
    case nlohmann::detail::value_t::number_unsigned:
      return Value::Int(static_cast<double>(j.template get<uint64_t>()));
    case nlohmann::detail::value_t::number_float: {
      // JavaScript cannot tell 2.0 from 2: integral numbers are integers.
      const double d = j.template get<double>();
      if (std::isfinite(d) && std::floor(d) == d) return Value::Int(d);
      return Value::Float(d);
    }
    case nlohmann::detail::value_t::string:
      return Value::Str(j.template get_ref<const std::string&>());
    case nlohmann::detail::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& element : j) {
        absl::StatusOr<Value> v = ConvertJson(element, depth + 1);
        if (!v.ok()) return v.status();
        items.push_back(*std::move(v));
      }
      return Value::Array(std::move(items));
    }
    case nlohmann::detail::value_t::object: {
      std::vector<std::pair<uint64_t, std::pair<std::string, Value>>> indexed;
      std::vector<std::pair<std::string, Value>> named;
      for (auto it = j.begin(); it != j.end(); ++it) {
        absl::StatusOr<Value> v = ConvertJson(it.value(), depth + 1);
        if (!v.ok()) return v.status();
        uint64_t index;
        if (IsArrayIndexKey(it.key(), &index)) {
          indexed.push_back({index, {it.key(), *std::move(v)}});
        } else {
          named.emplace_back(it.key(), *std::move(v));
        }
      }
      std::stable_sort(indexed.begin(), indexed.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      std::vector<std::pair<std::string, Value>> entries;
      entries.reserve(indexed.size() + named.size());
      for (auto& entry : indexed) entries.push_back(std::move(entry.second));
      for (auto& entry : named) entries.push_back(std::move(entry));
      return Value::Object(std::move(entries));
    }
    default:
      return absl::InvalidArgumentError("template context holds a value JSON cannot express");
  }
}

}  // namespace

absl::StatusOr<std::string> ToJson(const Value& v, const JsonOptions& options, size_t max_bytes) {
  std::string out;
  JsonWriter writer(options, max_bytes, &out);
  if (absl::Status s = writer.Write(v, 0); !s.ok()) return s;
  if (writer.overflowed() || out.size() > max_bytes) return TooLarge();
  return out;
}

absl::StatusOr<std::string> ToDisplayString(const Value& v, size_t max_bytes) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return std::string("undefined");
    case Value::Kind::kNull:
      return std::string("null");
    case Value::Kind::kBool:
      return std::string(v.bool_value() ? "true" : "false");
    case Value::Kind::kInt:
      return FormatJsNumber(v.number());
    case Value::Kind::kFloat:
      return FormatFloat(v.number());
    case Value::Kind::kString:
      return v.str();
    case Value::Kind::kArray:
    case Value::Kind::kObject:
    case Value::Kind::kNamespace: {
      JsonOptions options;
      options.undefined_as_null = false;
      return ToJson(v, options, max_bytes);
    }
    case Value::Kind::kFunction:
      return absl::InvalidArgumentError("cannot print a function; call it instead");
  }
  return std::string();
}

absl::StatusOr<std::string> ToConcatString(const Value& v, size_t max_bytes) {
  switch (v.kind()) {
    case Value::Kind::kInt:
    case Value::Kind::kFloat:
      return FormatJsNumber(v.number());
    case Value::Kind::kObject:
    case Value::Kind::kNamespace:
      return std::string("[object Map]");
    case Value::Kind::kArray: {
      std::string out;
      bool first = true;
      for (const Value& item : v.array()) {
        if (!first) out.push_back(',');
        first = false;
        absl::StatusOr<std::string> text = ToDisplayString(item, max_bytes);
        if (!text.ok()) return text.status();
        out += *text;
        if (out.size() > max_bytes) return TooLarge();
      }
      return out;
    }
    default:
      return ToDisplayString(v, max_bytes);
  }
}

absl::StatusOr<Value> FromJson(const nlohmann::json& j) { return ConvertJson(j, 0); }
absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& j) { return ConvertJson(j, 0); }

}  // namespace tern::gateway::jinja
