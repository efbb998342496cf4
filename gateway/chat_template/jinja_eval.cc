// Expression evaluation of the interpreter, with the operator semantics of
// @huggingface/jinja (JavaScript numbers and loose equality, `+` joining
// strings, errors for arithmetic on undefined or none).
#include <algorithm>
#include <cmath>

#include "common/status_macros.h"
#include "gateway/chat_template/jinja_interpreter.h"
#include "gateway/chat_template/jinja_unicode.h"

namespace tern::gateway::jinja {
namespace {

std::string_view OpName(BinaryOp op) {
  switch (op) {
    case BinaryOp::kAnd:
      return "and";
    case BinaryOp::kOr:
      return "or";
    case BinaryOp::kEq:
      return "==";
    case BinaryOp::kNe:
      return "!=";
    case BinaryOp::kLt:
      return "<";
    case BinaryOp::kGt:
      return ">";
    case BinaryOp::kLe:
      return "<=";
    case BinaryOp::kGe:
      return ">=";
    case BinaryOp::kIn:
      return "in";
    case BinaryOp::kNotIn:
      return "not in";
    case BinaryOp::kAdd:
      return "+";
    case BinaryOp::kSub:
      return "-";
    case BinaryOp::kConcat:
      return "~";
    case BinaryOp::kMul:
      return "*";
    case BinaryOp::kDiv:
      return "/";
    case BinaryOp::kFloorDiv:
      return "//";
    case BinaryOp::kMod:
      return "%";
    case BinaryOp::kPow:
      return "**";
  }
  return "?";
}

bool IsNumericLike(const Value& v) { return v.is_number() || v.is_bool(); }

// Python slicing as the reference implements it, over indices [0, n).
std::vector<size_t> SliceIndices(size_t n, std::optional<double> start_in,
                                 std::optional<double> stop_in, double step) {
  const double len = static_cast<double>(n);
  std::vector<size_t> out;
  double start, stop;
  if (step >= 0) {  // step 0 yields nothing, as in the reference
    start = start_in.value_or(0);
    start = start < 0 ? std::max(len + start, 0.0) : std::min(start, len);
    stop = stop_in.value_or(len);
    stop = stop < 0 ? std::max(len + stop, 0.0) : std::min(stop, len);
    if (step == 0) return out;
    for (double i = start; i < stop; i += step) out.push_back(static_cast<size_t>(i));
  } else {
    start = start_in.value_or(len - 1);
    start = start < 0 ? std::max(len + start, -1.0) : std::min(start, len - 1);
    stop = stop_in.value_or(-1);
    stop = stop < -1 ? std::max(len + stop, -1.0) : std::min(stop, len - 1);
    for (double i = start; i > stop; i += step) out.push_back(static_cast<size_t>(i));
  }
  return out;
}

// The UTF-16 code unit at `index` of a string as a one-character string
// (JavaScript String.prototype.at); half of a surrogate pair reads as U+FFFD.
std::optional<std::string> CharAt(std::string_view s, double index) {
  const double len = static_cast<double>(Utf16Length(s));
  if (std::isnan(index)) index = 0;
  index = std::trunc(index);
  if (index < 0) index += len;
  if (!(index >= 0 && index < len)) return std::nullopt;
  size_t unit = 0;
  for (size_t i = 0; i < s.size();) {
    char32_t cp;
    const size_t n = DecodeUtf8(s, i, &cp);
    const size_t width = cp >= 0x10000 ? 2 : 1;
    if (static_cast<double>(unit + width) > index) {
      if (width == 2) return std::string("\xEF\xBF\xBD");
      return std::string(s.substr(i, n));
    }
    unit += width;
    i += n;
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<Value> Interpreter::Eval(const Expr& e, const std::shared_ptr<Env>& env) {
  TERN_RETURN_IF_ERROR(Step());
  if (eval_depth_ >= limits_.max_eval_depth) {
    return absl::ResourceExhaustedError("template rendering recursed too deeply");
  }
  ++eval_depth_;
  absl::StatusOr<Value> result = EvalInner(e, env);
  --eval_depth_;
  if (!result.ok()) return Locate(result.status(), e.line);
  return result;
}

absl::StatusOr<Value> Interpreter::EvalInner(const Expr& e, const std::shared_ptr<Env>& env) {
  switch (e.kind) {
    case ExprKind::kLiteral:
      return e.value;
    case ExprKind::kIdentifier: {
      const Value* v = env->Lookup(e.name);
      return v == nullptr ? Value() : *v;
    }
    case ExprKind::kArray:
    case ExprKind::kTuple: {
      std::vector<Value> items;
      items.reserve(e.items.size());
      for (const auto& item : e.items) {
        TERN_ASSIGN_OR_RETURN(Value v, Eval(*item, env));
        items.push_back(std::move(v));
      }
      return MakeArray(std::move(items));
    }
    case ExprKind::kObject: {
      std::vector<std::pair<std::string, Value>> entries;
      for (const auto& [key_expr, value_expr] : e.entries) {
        TERN_ASSIGN_OR_RETURN(Value key, Eval(*key_expr, env));
        if (!key.is_string()) {
          return absl::InvalidArgumentError(
              Cat("Object keys must be strings: got ", key.TypeName()));
        }
        TERN_ASSIGN_OR_RETURN(Value value, Eval(*value_expr, env));
        auto it = std::find_if(entries.begin(), entries.end(),
                               [&](const auto& entry) { return entry.first == key.str(); });
        if (it != entries.end()) {
          it->second = std::move(value);
        } else {
          entries.emplace_back(key.str(), std::move(value));
        }
      }
      TERN_RETURN_IF_ERROR(ChargeItems(entries.size()));
      return Value::Object(std::move(entries));
    }
    case ExprKind::kMember:
      return EvalMember(e, env);
    case ExprKind::kCall:
      return EvalCall(e, env);
    case ExprKind::kBinary:
      return EvalBinary(e, env);
    case ExprKind::kUnary:
      return EvalUnary(e, env);
    case ExprKind::kFilter: {
      TERN_ASSIGN_OR_RETURN(Value operand, Eval(*e.lhs, env));
      return ApplyFilter(*this, operand, e, env);
    }
    case ExprKind::kTest: {
      TERN_ASSIGN_OR_RETURN(Value operand, Eval(*e.lhs, env));
      std::vector<Value> args;
      if (e.has_args) {
        TERN_ASSIGN_OR_RETURN(CallArgs call_args, EvalArgs(e.args, env));
        args = std::move(call_args.positional);
      }
      TERN_ASSIGN_OR_RETURN(bool result, ApplyTest(e.name, operand, args));
      return Value::Bool(e.negate ? !result : result);
    }
    case ExprKind::kSelect: {
      TERN_ASSIGN_OR_RETURN(Value cond, Eval(*e.test, env));
      if (!Truthy(cond)) return Value();
      return Eval(*e.lhs, env);
    }
    case ExprKind::kTernary: {
      TERN_ASSIGN_OR_RETURN(Value cond, Eval(*e.test, env));
      return Eval(Truthy(cond) ? *e.lhs : *e.rhs, env);
    }
  }
  return Value();
}

absl::StatusOr<Value> Interpreter::EvalSlice(const Value& object, const Expr& e,
                                             const std::shared_ptr<Env>& env) {
  if (!object.is_array() && !object.is_string()) {
    return absl::InvalidArgumentError("Slice object must be an array or string");
  }
  std::optional<double> bounds[3];
  const Expr* parts[3] = {e.slice_start.get(), e.slice_stop.get(), e.slice_step.get()};
  static constexpr std::string_view kNames[3] = {"start", "stop", "step"};
  for (int i = 0; i < 3; ++i) {
    if (parts[i] == nullptr) continue;
    TERN_ASSIGN_OR_RETURN(Value v, Eval(*parts[i], env));
    if (v.is_undefined()) continue;
    if (!v.is_int() || !std::isfinite(v.number())) {
      return absl::InvalidArgumentError(Cat("Slice ", kNames[i], " must be numeric or undefined"));
    }
    bounds[i] = v.number();
  }
  const double step = bounds[2].value_or(1);
  if (object.is_array()) {
    const std::vector<Value>& items = object.array();
    std::vector<Value> out;
    for (size_t i : SliceIndices(items.size(), bounds[0], bounds[1], step)) out.push_back(items[i]);
    return MakeArray(std::move(out));
  }
  const std::vector<std::string> chars = SplitCodePoints(object.str());
  std::string out;
  for (size_t i : SliceIndices(chars.size(), bounds[0], bounds[1], step)) out += chars[i];
  return MakeString(std::move(out));
}

absl::StatusOr<Value> Interpreter::EvalMember(const Expr& e, const std::shared_ptr<Env>& env) {
  TERN_ASSIGN_OR_RETURN(Value object, Eval(*e.lhs, env));
  if (e.is_slice) return EvalSlice(object, e, env);
  if (!e.computed && object.is_mapping()) {  // `obj.name`: no key value needed
    if (const Value* v = object.object().Find(e.name)) return *v;
    if (object.is_object()) return BuiltinMember(*this, object, e.name);
    return Value();
  }
  Value property;
  if (e.computed) {
    TERN_ASSIGN_OR_RETURN(property, Eval(*e.rhs, env));
  } else {
    property = Value::Str(e.name);
  }
  if (object.is_mapping()) {
    if (!property.is_string()) {
      return absl::InvalidArgumentError(
          Cat("Cannot access property with non-string: got ", property.TypeName()));
    }
    if (const Value* v = object.object().Find(property.str())) return *v;
    if (object.is_object()) return BuiltinMember(*this, object, property.str());
    return Value();
  }
  if (object.is_array() || object.is_string()) {
    if (property.is_int()) {
      if (object.is_string()) {
        std::optional<std::string> ch = CharAt(object.str(), property.number());
        if (!ch.has_value()) return Value();
        return Value::Str(*std::move(ch));
      }
      const std::vector<Value>& items = object.array();
      double index = property.number();
      if (std::isnan(index)) index = 0;
      index = std::trunc(index);
      if (index < 0) index += static_cast<double>(items.size());
      if (!(index >= 0 && index < static_cast<double>(items.size()))) return Value();
      return items[static_cast<size_t>(index)];
    }
    if (property.is_string()) return BuiltinMember(*this, object, property.str());
    return absl::InvalidArgumentError(
        Cat("Cannot access property with non-string/non-number: got ", property.TypeName()));
  }
  if (!property.is_string()) {
    return absl::InvalidArgumentError(
        Cat("Cannot access property with non-string: got ", property.TypeName()));
  }
  return Value();
}

absl::StatusOr<CallArgs> Interpreter::EvalArgs(const std::vector<Arg>& args,
                                               const std::shared_ptr<Env>& env) {
  CallArgs out;
  // Like Python, every positional argument is evaluated before any keyword.
  for (const Arg& arg : args) {
    if (arg.kind == Arg::Kind::kPositional) {
      TERN_ASSIGN_OR_RETURN(Value v, Eval(*arg.value, env));
      out.positional.push_back(std::move(v));
    } else if (arg.kind == Arg::Kind::kSpread) {
      TERN_ASSIGN_OR_RETURN(Value v, Eval(*arg.value, env));
      if (!v.is_array()) {
        return absl::InvalidArgumentError(Cat("Cannot unpack non-iterable type: ", v.TypeName()));
      }
      for (const Value& item : v.array()) out.positional.push_back(item);
    }
  }
  auto add_keyword = [&out](std::string name, Value value) -> absl::Status {
    if (out.Keyword(name) != nullptr) {
      return absl::InvalidArgumentError(
          Cat("Got multiple values for keyword argument '", name, "'"));
    }
    out.keywords.emplace_back(std::move(name), std::move(value));
    return absl::OkStatus();
  };
  for (const Arg& arg : args) {
    if (arg.kind == Arg::Kind::kKeyword) {
      TERN_ASSIGN_OR_RETURN(Value v, Eval(*arg.value, env));
      TERN_RETURN_IF_ERROR(add_keyword(arg.name, std::move(v)));
    } else if (arg.kind == Arg::Kind::kKeywordSpread) {
      TERN_ASSIGN_OR_RETURN(Value v, Eval(*arg.value, env));
      if (!v.is_object()) {
        return absl::InvalidArgumentError(
            Cat("Argument after ** must be a mapping, not ", v.TypeName()));
      }
      for (const auto& [key, value] : v.object().entries()) {
        TERN_RETURN_IF_ERROR(add_keyword(key, value));
      }
    }
  }
  TERN_RETURN_IF_ERROR(ChargeItems(out.positional.size() + out.keywords.size()));
  return out;
}

absl::StatusOr<Value> Interpreter::CallFunction(const Value& fn, CallArgs& args,
                                                const std::shared_ptr<Env>& env) {
  if (!fn.is_function()) {
    return absl::InvalidArgumentError(
        Cat("Cannot call something that is not a function: got ", fn.TypeName()));
  }
  return fn.function()(*this, env, args);
}

absl::StatusOr<Value> Interpreter::EvalCall(const Expr& e, const std::shared_ptr<Env>& env) {
  TERN_ASSIGN_OR_RETURN(CallArgs args, EvalArgs(e.args, env));
  TERN_ASSIGN_OR_RETURN(Value fn, Eval(*e.lhs, env));
  return CallFunction(fn, args, env);
}

absl::StatusOr<Value> Interpreter::EvalUnary(const Expr& e, const std::shared_ptr<Env>& env) {
  TERN_ASSIGN_OR_RETURN(Value v, Eval(*e.lhs, env));
  if (e.unary_op == UnaryOp::kNot) return Value::Bool(!Truthy(v));
  const char* op = e.unary_op == UnaryOp::kNeg ? "-" : "+";
  if (!IsNumericLike(v)) {
    return absl::InvalidArgumentError(Cat("Unknown operator \"", op, "\" for ", v.TypeName()));
  }
  const double result = e.unary_op == UnaryOp::kNeg ? -v.number() : v.number();
  return v.is_float() ? Value::Float(result) : Value::Int(result);
}

absl::StatusOr<Value> Interpreter::Concat(const Value& left, const Value& right) {
  // Strings are joined in place, sized first, so an oversized result is
  // refused before it is built.
  const size_t max = limits_.max_output_bytes;
  std::string a_text, b_text;
  const std::string* a = &a_text;
  const std::string* b = &b_text;
  if (left.is_string()) {
    a = &left.str();
  } else {
    TERN_ASSIGN_OR_RETURN(a_text, ToConcatString(left, max));
  }
  if (right.is_string()) {
    b = &right.str();
  } else {
    TERN_ASSIGN_OR_RETURN(b_text, ToConcatString(right, max));
  }
  if (a->size() + b->size() > max) {
    return absl::ResourceExhaustedError("template string value exceeds the output size limit");
  }
  std::string out;
  out.reserve(a->size() + b->size());
  out.append(*a).append(*b);
  return MakeString(std::move(out));
}

absl::StatusOr<Value> Interpreter::EvalBinary(const Expr& e, const std::shared_ptr<Env>& env) {
  TERN_ASSIGN_OR_RETURN(Value left, Eval(*e.lhs, env));
  const BinaryOp op = e.binary_op;
  if (op == BinaryOp::kAnd) return Truthy(left) ? Eval(*e.rhs, env) : left;
  if (op == BinaryOp::kOr) return Truthy(left) ? left : Eval(*e.rhs, env);
  TERN_ASSIGN_OR_RETURN(Value right, Eval(*e.rhs, env));
  if (op == BinaryOp::kEq) return Value::Bool(LooseEquals(left, right));
  if (op == BinaryOp::kNe) return Value::Bool(!LooseEquals(left, right));
  const bool membership = op == BinaryOp::kIn || op == BinaryOp::kNotIn;

  if (left.is_undefined() || right.is_undefined()) {
    if (right.is_undefined() && membership) return Value::Bool(op == BinaryOp::kNotIn);
    return absl::InvalidArgumentError(
        Cat("Cannot perform operation ", OpName(op), " on undefined values"));
  }
  if (left.is_null() || right.is_null()) {
    return absl::InvalidArgumentError("Cannot perform operation on null values");
  }
  if (op == BinaryOp::kConcat ||
      (op == BinaryOp::kAdd && (left.is_string() || right.is_string()))) {
    return Concat(left, right);
  }
  if (op == BinaryOp::kPow && IsNumericLike(left) && IsNumericLike(right)) {
    const double a = left.number(), b = right.number();
    if (a == 0 && b < 0)
      return absl::InvalidArgumentError("0.0 cannot be raised to a negative power");
    const double result = (std::fabs(a) == 1 && std::isinf(b)) ? std::nan("") : std::pow(a, b);
    if (!std::isfinite(result) || std::isnan(a) || std::isnan(b)) {
      return absl::InvalidArgumentError("Exponentiation result is not a finite real number");
    }
    const bool is_float = left.is_float() || right.is_float() || b < 0;
    return is_float ? Value::Float(result) : Value::Int(result);
  }
  if (left.is_number() && right.is_number()) {
    const double a = left.number(), b = right.number();
    const bool is_float = left.is_float() || right.is_float();
    auto num = [is_float](double v) { return is_float ? Value::Float(v) : Value::Int(v); };
    switch (op) {
      case BinaryOp::kAdd:
        return num(a + b);
      case BinaryOp::kSub:
        return num(a - b);
      case BinaryOp::kMul:
        return num(a * b);
      case BinaryOp::kDiv:
        return Value::Float(a / b);
      case BinaryOp::kFloorDiv:
        return num(std::floor(a / b));
      case BinaryOp::kMod:
        return num(std::fmod(a, b));
      case BinaryOp::kLt:
        return Value::Bool(a < b);
      case BinaryOp::kGt:
        return Value::Bool(a > b);
      case BinaryOp::kLe:
        return Value::Bool(a <= b);
      case BinaryOp::kGe:
        return Value::Bool(a >= b);
      default:
        break;
    }
  } else if (left.is_array() && right.is_array()) {
    if (op == BinaryOp::kAdd) {
      std::vector<Value> items = left.array();
      items.insert(items.end(), right.array().begin(), right.array().end());
      return MakeArray(std::move(items));
    }
  } else if (right.is_array() && membership) {
    const auto& items = right.array();
    const bool found = std::any_of(items.begin(), items.end(),
                                   [&](const Value& x) { return StrictEquals(x, left); });
    return Value::Bool(op == BinaryOp::kIn ? found : !found);
  }
  if (left.is_string() && right.is_string()) {
    const std::string& a = left.str();
    const std::string& b = right.str();
    switch (op) {
      case BinaryOp::kIn:
        return Value::Bool(b.find(a) != std::string::npos);
      case BinaryOp::kNotIn:
        return Value::Bool(b.find(a) == std::string::npos);
      // Beyond the reference, which has no string ordering: code point order.
      case BinaryOp::kLt:
        return Value::Bool(a < b);
      case BinaryOp::kGt:
        return Value::Bool(a > b);
      case BinaryOp::kLe:
        return Value::Bool(a <= b);
      case BinaryOp::kGe:
        return Value::Bool(a >= b);
      default:
        break;
    }
  }
  if (left.is_string() && right.is_object() && membership) {
    const bool found = right.object().Find(left.str()) != nullptr;
    return Value::Bool(op == BinaryOp::kIn ? found : !found);
  }
  return absl::InvalidArgumentError(Cat("Unknown operator \"", OpName(op), "\" between ",
                                        left.TypeName(), " and ", right.TypeName()));
}

}  // namespace tern::gateway::jinja
