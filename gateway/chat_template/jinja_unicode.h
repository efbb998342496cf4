// UTF-8 helpers for the chat-template engine. Template strings are UTF-8,
// but the reference dialect (@huggingface/jinja) runs on JavaScript strings,
// so these helpers reproduce JavaScript's notion of whitespace (String.trim,
// regex \s), of length (UTF-16 code units) and of case mapping.
//
// All functions are pure and thread-safe. Invalid UTF-8 never crashes: a bad
// byte decodes as U+FFFD and advances by one byte.
#ifndef TERN_GATEWAY_CHAT_TEMPLATE_JINJA_UNICODE_H_
#define TERN_GATEWAY_CHAT_TEMPLATE_JINJA_UNICODE_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/strings/string_view.h"

namespace tern::gateway::jinja {

// Decodes the code point starting at s[pos] (pos < s.size()) into *cp and
// returns the number of bytes it occupies (1..4).
size_t DecodeUtf8(std::string_view s, size_t pos, char32_t* cp);

// Appends the UTF-8 encoding of cp (surrogates and out-of-range values are
// written as U+FFFD).
void AppendUtf8(char32_t cp, std::string* out);

// True when every byte sequence in s is well-formed UTF-8.
bool IsValidUtf8(std::string_view s);

// JavaScript WhiteSpace + LineTerminator (what String.prototype.trim and the
// regex class \s remove or match).
bool IsJsWhitespace(char32_t cp);

// Byte length of the JavaScript whitespace character at s[pos], 0 if none.
size_t JsWhitespaceAt(std::string_view s, size_t pos);

// Byte length of the JavaScript whitespace character ending at s[end-1],
// 0 if none.
size_t JsWhitespaceBefore(std::string_view s, size_t end);

std::string_view JsTrim(std::string_view s);
std::string_view JsTrimStart(std::string_view s);
std::string_view JsTrimEnd(std::string_view s);

// Number of UTF-16 code units (JavaScript's String.length).
size_t Utf16Length(std::string_view s);

// The code points of s, each as its own UTF-8 string (Array.from(str)).
std::vector<std::string> SplitCodePoints(std::string_view s);

// Unicode upper/lower case of s (simple mappings, plus ß -> SS as in
// JavaScript's toUpperCase).
std::string ToUpperCase(std::string_view s);
std::string ToLowerCase(std::string_view s);

namespace cat_internal {
inline void Append(std::string* out, std::string_view s) { out->append(s); }
inline void Append(std::string* out, const char* s) { out->append(s); }
inline void Append(std::string* out, const std::string& s) { out->append(s); }
inline void Append(std::string* out, absl::string_view s) { out->append(s.data(), s.size()); }
template <typename T>
requires std::is_integral_v<T>
void Append(std::string* out, T v) { out->append(std::to_string(v)); }
}  // namespace cat_internal

// Concatenates strings (std::string_view too, which this Abseil's StrCat
// does not take) and integers.
template <typename... Args>
std::string Cat(const Args&... args) {
  std::string out;
  (cat_internal::Append(&out, args), ...);
  return out;
}

// std::string_view as absl::string_view (distinct types in this Abseil).
inline absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

}  // namespace tern::gateway::jinja

#endif  // TERN_GATEWAY_CHAT_TEMPLATE_JINJA_UNICODE_H_
