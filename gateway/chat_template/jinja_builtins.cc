// Builtin globals and the methods of strings and dicts.
#include <time.h>

#include <algorithm>
#include <cmath>

#include "common/status_macros.h"
#include "gateway/chat_template/jinja_filters.h"
#include "gateway/chat_template/jinja_interpreter.h"
#include "gateway/chat_template/jinja_unicode.h"

namespace tern::gateway::jinja {
namespace {

using Fn = NativeFunction;

absl::Status ArgError(std::string_view message) {
  return absl::InvalidArgumentError(AbslView(message));
}

// Python's str.strip(chars) family; without chars, JavaScript whitespace.
std::string StripChars(std::string_view s, const Value* chars, bool left, bool right) {
  if (chars == nullptr || chars->is_null() || chars->is_undefined() || !chars->is_string()) {
    if (left && right) return std::string(JsTrim(s));
    return std::string(left ? JsTrimStart(s) : JsTrimEnd(s));
  }
  const std::vector<std::string> set = SplitCodePoints(chars->str());
  auto in_set = [&set](std::string_view ch) {
    return std::find(set.begin(), set.end(), ch) != set.end();
  };
  std::vector<std::string> cps = SplitCodePoints(s);
  size_t begin = 0, end = cps.size();
  if (left) {
    while (begin < end && in_set(cps[begin])) ++begin;
  }
  if (right) {
    while (end > begin && in_set(cps[end - 1])) --end;
  }
  std::string out;
  for (size_t i = begin; i < end; ++i) out += cps[i];
  return out;
}

std::string TitleCase(std::string_view s) {
  auto is_word = [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  };
  std::string out(s);
  for (size_t i = 0; i < out.size(); ++i) {
    if (is_word(out[i]) && (i == 0 || !is_word(out[i - 1])) && out[i] >= 'a' && out[i] <= 'z') {
      out[i] = static_cast<char>(out[i] - 32);
    }
  }
  return out;
}

// Python str.replace, including the empty pattern (insert between code points).
std::string ReplaceAll(std::string_view s, std::string_view from, std::string_view to,
                       double count) {
  std::string out;
  double remaining = count < 0 ? HUGE_VAL : count;
  if (from.empty()) {
    for (const std::string& ch : SplitCodePoints(s)) {
      if (remaining > 0) out += to, --remaining;
      out += ch;
    }
    if (remaining > 0) out += to;
    return out;
  }
  size_t pos = 0;
  while (remaining > 0) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
    --remaining;
  }
  out.append(s.substr(pos));
  return out;
}

absl::StatusOr<Value> Split(Interpreter& interp, const std::string& s, CallArgs& args) {
  const Value* sep = args.positional.size() > 0 ? &args.positional[0] : args.Keyword("sep");
  const Value* maxsplit_v =
      args.positional.size() > 1 ? &args.positional[1] : args.Keyword("maxsplit");
  if (sep != nullptr && !sep->is_string() && !sep->is_null()) {
    return ArgError("sep argument must be a string or null");
  }
  if (maxsplit_v != nullptr && !maxsplit_v->is_int()) {
    return ArgError("maxsplit argument must be a number");
  }
  const double maxsplit = maxsplit_v == nullptr ? -1 : maxsplit_v->number();
  std::vector<std::string> parts;
  if (sep == nullptr || sep->is_null()) {
    std::string_view text = JsTrimStart(s);
    size_t i = 0;
    while (i < text.size()) {
      const size_t start = i;
      while (i < text.size() && JsWhitespaceAt(text, i) == 0) {
        char32_t cp;
        i += DecodeUtf8(text, i, &cp);
      }
      if (maxsplit >= 0 && static_cast<double>(parts.size()) >= maxsplit) {
        parts.emplace_back(text.substr(start));
        break;
      }
      parts.emplace_back(text.substr(start, i - start));
      while (size_t n = JsWhitespaceAt(text, i)) i += n;
    }
  } else {
    const std::string& delim = sep->str();
    if (delim.empty()) return ArgError("empty separator");
    size_t pos = 0;
    while (true) {
      if (maxsplit >= 0 && static_cast<double>(parts.size()) >= maxsplit) {
        parts.push_back(s.substr(pos));
        break;
      }
      const size_t hit = s.find(delim, pos);
      if (hit == std::string::npos) {
        parts.push_back(s.substr(pos));
        break;
      }
      parts.push_back(s.substr(pos, hit - pos));
      pos = hit + delim.size();
    }
  }
  std::vector<Value> items;
  for (std::string& part : parts) {
    TERN_ASSIGN_OR_RETURN(Value v, interp.MakeString(std::move(part)));
    items.push_back(std::move(v));
  }
  return interp.MakeArray(std::move(items));
}

absl::StatusOr<Value> AffixTest(const std::string& s, CallArgs& args, bool prefix) {
  const char* name = prefix ? "startswith()" : "endswith()";
  auto matches = [&](const std::string& p) {
    return s.size() >= p.size() && s.compare(prefix ? 0 : s.size() - p.size(), p.size(), p) == 0;
  };
  if (args.positional.empty()) {
    return ArgError(Cat(name, " requires at least one argument"));
  }
  const Value& pattern = args.positional[0];
  if (pattern.is_string()) return Value::Bool(matches(pattern.str()));
  if (pattern.is_array()) {
    for (const Value& item : pattern.array()) {
      if (!item.is_string()) return ArgError(Cat(name, " tuple elements must be strings"));
      if (matches(item.str())) return Value::Bool(true);
    }
    return Value::Bool(false);
  }
  return ArgError(Cat(name, " argument must be a string or tuple of strings"));
}

absl::StatusOr<Value> StringMember(Interpreter& interp, const Value& receiver,
                                   std::string_view name) {
  if (name == "length") return Value::Int(static_cast<double>(Utf16Length(receiver.str())));
  auto method = [&receiver](auto body) -> Value {
    return Value::Function([receiver, body](Interpreter& in, const std::shared_ptr<Env>&,
                                            CallArgs& args) -> absl::StatusOr<Value> {
      return body(in, receiver.str(), args);
    });
  };
  auto first = [](CallArgs& a) -> const Value* {
    return a.positional.empty() ? nullptr : &a.positional[0];
  };
  if (name == "upper") {
    return method([](Interpreter& in, const std::string& s, CallArgs&) {
      return in.MakeString(ToUpperCase(s));
    });
  }
  if (name == "lower") {
    return method([](Interpreter& in, const std::string& s, CallArgs&) {
      return in.MakeString(ToLowerCase(s));
    });
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const bool left = name != "rstrip", right = name != "lstrip";
    return method([=](Interpreter& in, const std::string& s, CallArgs& a) {
      return in.MakeString(StripChars(s, first(a), left, right));
    });
  }
  if (name == "title") {
    return method([](Interpreter& in, const std::string& s, CallArgs&) {
      return in.MakeString(TitleCase(s));
    });
  }
  if (name == "capitalize") {
    return method([](Interpreter& in, const std::string& s, CallArgs&) {
      if (s.empty()) return in.MakeString("");
      char32_t cp;
      const size_t n = DecodeUtf8(s, 0, &cp);
      return in.MakeString(ToUpperCase(s.substr(0, n)) + s.substr(n));
    });
  }
  if (name == "startswith" || name == "endswith") {
    const bool prefix = name == "startswith";
    return method([prefix](Interpreter&, const std::string& s, CallArgs& a) {
      return AffixTest(s, a, prefix);
    });
  }
  if (name == "split") {
    return method(
        [](Interpreter& in, const std::string& s, CallArgs& a) { return Split(in, s, a); });
  }
  if (name == "replace") {
    return method([](Interpreter& in, const std::string& s, CallArgs& a) -> absl::StatusOr<Value> {
      if (a.positional.size() < 2) return ArgError("replace() requires at least two arguments");
      const Value& from = a.positional[0];
      const Value& to = a.positional[1];
      if (!from.is_string() || !to.is_string())
        return ArgError("replace() arguments must be strings");
      const Value* count = a.positional.size() > 2 ? &a.positional[2] : a.Keyword("count");
      if (count != nullptr && !count->is_int() && !count->is_null()) {
        return ArgError("replace() count argument must be a number or null");
      }
      const double n = (count == nullptr || count->is_null()) ? -1 : count->number();
      if (n == 0) return in.MakeString(s);
      // Bound the result before building it.
      const size_t hits = from.str().empty() ? Utf16Length(s) + 1 : s.size() / from.str().size();
      if (to.str().size() > from.str().size() &&
          s.size() + hits * (to.str().size() - from.str().size()) > in.limits().max_output_bytes) {
        return absl::ResourceExhaustedError("replace() result exceeds the output size limit");
      }
      return in.MakeString(ReplaceAll(s, from.str(), to.str(), n));
    });
  }
  return Value();
}

}  // namespace

absl::StatusOr<Value> BuiltinMember(Interpreter& interp, const Value& receiver,
                                    std::string_view name) {
  if (receiver.is_string()) return StringMember(interp, receiver, name);
  if (receiver.is_array()) {
    if (name == "length") return Value::Int(static_cast<double>(receiver.array().size()));
    return Value();
  }
  if (!receiver.is_object()) return Value();
  auto method = [&receiver](auto body) -> Value {
    return Value::Function([receiver, body](Interpreter& in, const std::shared_ptr<Env>&,
                                            CallArgs& args) -> absl::StatusOr<Value> {
      return body(in, receiver, args);
    });
  };
  if (name == "get") {
    return method([](Interpreter&, const Value& obj, CallArgs& a) -> absl::StatusOr<Value> {
      if (a.positional.empty() || !a.positional[0].is_string()) {
        return ArgError(Cat("Object key must be a string: got ",
                            a.positional.empty() ? "UndefinedValue" : a.positional[0].TypeName()));
      }
      if (const Value* v = obj.object().Find(a.positional[0].str())) return *v;
      if (a.positional.size() > 1) return a.positional[1];
      if (const Value* d = a.Keyword("default")) return *d;
      return Value::Null();
    });
  }
  if (name == "items" || name == "keys" || name == "values") {
    const int which = name == "items" ? 0 : name == "keys" ? 1 : 2;
    return method([which](Interpreter& in, const Value& obj, CallArgs&) -> absl::StatusOr<Value> {
      std::vector<Value> out;
      for (const auto& [key, value] : obj.object().entries()) {
        if (which == 0) {
          out.push_back(Value::Array({Value::Str(key), value}));
        } else if (which == 1) {
          out.push_back(Value::Str(key));
        } else {
          out.push_back(value);
        }
      }
      return in.MakeArray(std::move(out));
    });
  }
  if (name == "dictsort") {
    return method(
        [](Interpreter& in, const Value& obj, CallArgs& a) { return DictSort(in, obj, a); });
  }
  return Value();
}

// ---- globals ----

namespace {

absl::StatusOr<Value> Namespace(Interpreter& interp, const std::shared_ptr<Env>&, CallArgs& args) {
  if (args.positional.size() > 1) {
    return ArgError(Cat("namespace expected at most 1 argument, got ", args.positional.size()));
  }
  std::vector<std::pair<std::string, Value>> entries;
  auto set = [&entries](const std::string& key, const Value& value) {
    for (auto& entry : entries) {
      if (entry.first == key) {
        entry.second = value;
        return;
      }
    }
    entries.emplace_back(key, value);
  };
  if (!args.positional.empty()) {
    const Value& source = args.positional[0];
    if (source.is_object()) {
      for (const auto& [key, value] : source.object().entries()) set(key, value);
    } else if (source.is_array()) {
      for (const Value& pair : source.array()) {
        std::vector<Value> kv;
        if (pair.is_array()) {
          kv = pair.array();
        } else if (pair.is_string()) {
          for (std::string& ch : SplitCodePoints(pair.str()))
            kv.push_back(Value::Str(std::move(ch)));
        }
        if (kv.size() != 2) {
          return ArgError("namespace expected an object or an iterable of [key, value] pairs");
        }
        if (!kv[0].is_string()) return ArgError("namespace keys must be strings");
        set(kv[0].str(), kv[1]);
      }
    } else {
      return ArgError(Cat("'", source.TypeName(), "' object is not iterable"));
    }
  }
  for (const auto& [key, value] : args.keywords) set(key, value);
  return interp.MakeNamespace(std::move(entries));
}

absl::StatusOr<Value> RaiseException(Interpreter& interp, const std::shared_ptr<Env>&,
                                     CallArgs& args) {
  std::string message;
  if (!args.positional.empty() && !args.positional[0].is_undefined()) {
    TERN_ASSIGN_OR_RETURN(message,
                          ToConcatString(args.positional[0], interp.limits().max_output_bytes));
  }
  return absl::AbortedError(message);
}

absl::StatusOr<Value> Range(Interpreter& interp, const std::shared_ptr<Env>&, CallArgs& args) {
  const auto& p = args.positional;
  if (p.empty() || p.size() > 3) return ArgError("range() takes 1 to 3 arguments");
  for (const Value& v : p) {
    if (!v.is_number() || !std::isfinite(v.number())) {
      return ArgError("range() arguments must be numbers");
    }
  }
  double start = 0, stop, step = 1;
  if (p.size() == 1) {
    stop = p[0].number();
  } else {
    start = p[0].number();
    stop = p[1].number();
    if (p.size() == 3) step = p[2].number();
  }
  if (step == 0) return ArgError("range() step must not be zero");
  const double count = std::max(0.0, std::ceil((stop - start) / step));
  if (count > static_cast<double>(interp.limits().max_list_items)) {
    return absl::ResourceExhaustedError("range() is too long");
  }
  std::vector<Value> out;
  out.reserve(static_cast<size_t>(count));
  for (double i = start; step > 0 ? i < stop : i > stop; i += step) {
    out.push_back(std::floor(i) == i ? Value::Int(i) : Value::Float(i));
  }
  return interp.MakeArray(std::move(out));
}

absl::StatusOr<Value> StrftimeNow(Interpreter& interp, const std::shared_ptr<Env>&,
                                  CallArgs& args) {
  if (args.positional.empty() || !args.positional[0].is_string()) {
    return ArgError("strftime_now() expects a format string");
  }
  static constexpr const char* kMonths[] = {"January",   "February", "March",    "April",
                                            "May",       "June",     "July",     "August",
                                            "September", "October",  "November", "December"};
  const time_t now = time(nullptr);
  struct tm tm;
  localtime_r(&now, &tm);
  auto pad2 = [](int n) { return n < 10 ? Cat("0", n) : Cat(n); };
  const std::string& fmt = args.positional[0].str();
  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%' || i + 1 == fmt.size()) {
      out.push_back(fmt[i]);
      continue;
    }
    const char c = fmt[i + 1];
    switch (c) {
      case 'Y':
        out += Cat(tm.tm_year + 1900);
        break;
      case 'm':
        out += pad2(tm.tm_mon + 1);
        break;
      case 'd':
        out += pad2(tm.tm_mday);
        break;
      case 'b':
        out += std::string(kMonths[tm.tm_mon]).substr(0, 3);
        break;
      case 'B':
        out += kMonths[tm.tm_mon];
        break;
      case 'H':
        out += pad2(tm.tm_hour);
        break;
      case 'M':
        out += pad2(tm.tm_min);
        break;
      case '%':
        out += '%';
        break;
      default:
        out.push_back('%');
        continue;  // unknown directives stay as written
    }
    ++i;
  }
  return interp.MakeString(std::move(out));
}

}  // namespace

void InstallGlobals(Env& env) {
  env.Set("true", Value::Bool(true));
  env.Set("false", Value::Bool(false));
  env.Set("none", Value::Null());
  env.Set("True", Value::Bool(true));
  env.Set("False", Value::Bool(false));
  env.Set("None", Value::Null());
  env.Set("namespace", Value::Function(Namespace));
  env.Set("raise_exception", Value::Function(RaiseException));
  env.Set("range", Value::Function(Range));
  env.Set("strftime_now", Value::Function(StrftimeNow));
}

}  // namespace tern::gateway::jinja
