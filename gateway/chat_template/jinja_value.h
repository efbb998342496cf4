// Runtime values of the chat-template engine.
//
// The engine implements the Jinja dialect of @huggingface/jinja (the engine
// transformers.js uses for chat templates), so values follow its semantics:
// numbers are IEEE doubles tagged integer or float, output formatting and
// loose equality follow JavaScript, strings are UTF-8.
//
// A Value is a small handle: scalars are stored inline, strings, arrays,
// objects, namespaces and functions are shared and immutable, except a
// namespace, whose attributes `{% set ns.x = ... %}` changes. Values are not
// synchronized: one render owns the values it creates. Literal values held by
// a compiled template are only read, so several renders may share them.
#ifndef TERN_GATEWAY_CHAT_TEMPLATE_JINJA_VALUE_H_
#define TERN_GATEWAY_CHAT_TEMPLATE_JINJA_VALUE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tern::gateway::jinja {

class Env;
class Interpreter;
class Value;

// Arguments of a call: positional values, then keyword arguments in order.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;

  const Value* Keyword(std::string_view name) const;
};

// A callable: builtin functions, bound methods and macros. `env` is the
// caller's scope (macros resolve names dynamically, as the reference does).
using NativeFunction =
    std::function<absl::StatusOr<Value>(Interpreter&, const std::shared_ptr<Env>& env, CallArgs&)>;

class Value {
 public:
  enum class Kind : uint8_t {
    kUndefined,
    kNull,
    kBool,
    kInt,
    kFloat,
    kString,
    kArray,
    kObject,
    kNamespace,
    kFunction,
  };

  Value() = default;  // undefined
  static Value Null();
  static Value Bool(bool b);
  static Value Int(double v);
  static Value Float(double v);
  static Value Str(std::string s);
  static Value Str(std::shared_ptr<const std::string> s);
  static Value Array(std::vector<Value> items);
  static Value Object(std::vector<std::pair<std::string, Value>> entries);
  static Value Namespace(std::vector<std::pair<std::string, Value>> entries);
  static Value Function(NativeFunction fn);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_null() const { return kind_ == Kind::kNull; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }
  bool is_function() const { return kind_ == Kind::kFunction; }
  // Object or namespace: both map names to values.
  bool is_mapping() const { return is_object() || is_namespace(); }

  bool bool_value() const { return num_ != 0; }
  double number() const { return num_; }
  const std::string& str() const;
  const std::vector<Value>& array() const;
  const class ObjectData& object() const;  // object or namespace
  class ObjectData& mutable_namespace() const;
  const NativeFunction& function() const;

  // Identity of a shared value (arrays, objects, namespaces, functions);
  // JavaScript compares these by reference.
  const void* identity() const { return ptr_.get(); }

  // "IntegerValue", "StringValue", ...: the reference's type names, used in
  // error messages.
  std::string_view TypeName() const;

 private:
  Kind kind_ = Kind::kUndefined;
  double num_ = 0;
  std::shared_ptr<void> ptr_;
};

// An insertion-ordered string-keyed map.
class ObjectData {
 public:
  explicit ObjectData(std::vector<std::pair<std::string, Value>> entries);
  ~ObjectData();
  ObjectData(const ObjectData&) = delete;
  ObjectData& operator=(const ObjectData&) = delete;

  const std::vector<std::pair<std::string, Value>>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  const Value* Find(std::string_view key) const;
  void Set(std::string key, Value value);
  // Drops every entry (breaks reference cycles through namespaces).
  void Clear();

 private:
  void Reindex();

  std::vector<std::pair<std::string, Value>> entries_;
  absl::flat_hash_map<std::string, size_t> index_;  // used past a few entries
};

// Python/JavaScript truthiness as the reference defines it.
bool Truthy(const Value& v);

// JavaScript Number.prototype.toString.
std::string FormatJsNumber(double x);
// How the reference prints a float: integral values keep ".0".
std::string FormatFloat(double x);

// JavaScript `a == b` on the values' payloads (loose equality) and
// `a === b` (strict; also what `in` on arrays and the `equalto` test use).
bool LooseEquals(const Value& a, const Value& b);
bool StrictEquals(const Value& a, const Value& b);

// JavaScript parseInt(s, 10) / parseFloat(s); nullopt for NaN.
std::optional<double> JsParseInt(std::string_view s);
std::optional<double> JsParseFloat(std::string_view s);

struct JsonOptions {
  int indent = 0;  // <= 0: single line
  bool ensure_ascii = false;
  bool sort_keys = false;
  std::optional<std::pair<std::string, std::string>> separators;
  bool undefined_as_null = true;  // false: print `undefined` (value printing)
};

// JSON text of v as Python's json.dumps (and the reference's tojson) lays it
// out: ", " and ": " separators, "," between items when indenting. Errors:
// InvalidArgument for functions and nesting deeper than 512,
// ResourceExhausted past max_bytes.
absl::StatusOr<std::string> ToJson(const Value& v, const JsonOptions& options, size_t max_bytes);

// The text a value prints as (`{{ v }}`): strings as they are, numbers as
// JavaScript prints them, floats with ".0", booleans as true/false, lists
// and dicts as JSON.
absl::StatusOr<std::string> ToDisplayString(const Value& v, size_t max_bytes);

// The text used by `~`, `+` on strings and join: the JavaScript
// String(payload) of the value.
absl::StatusOr<std::string> ToConcatString(const Value& v, size_t max_bytes);

// Values from JSON. Object keys keep their order, except that keys which are
// array indices come first in ascending order, as in JavaScript objects.
// InvalidArgument for binary values or nesting deeper than 256.
absl::StatusOr<Value> FromJson(const nlohmann::json& j);
absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& j);

}  // namespace tern::gateway::jinja

#endif  // TERN_GATEWAY_CHAT_TEMPLATE_JINJA_VALUE_H_
