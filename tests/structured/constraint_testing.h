// Helpers for the structured tests: specs, a small vocabulary, and whole-text
// matching through the public API.
#ifndef TERN_TESTS_STRUCTURED_CONSTRAINT_TESTING_H_
#define TERN_TESTS_STRUCTURED_CONSTRAINT_TESTING_H_

#include <memory>
#include <string>
#include <vector>

#include "structured/constraint.h"

namespace tern::structured::testing {

inline ConstraintSpec SchemaSpec(const std::string& schema) {
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::kJsonSchema;
  spec.json_schema = schema;
  return spec;
}

inline ConstraintSpec RegexSpec(const std::string& regex) {
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::kRegex;
  spec.regex = regex;
  return spec;
}

// Every single byte as a token, then a few multi-byte ones and two specials.
inline std::shared_ptr<const TokenVocabulary> SmallVocabulary() {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(std::string(1, static_cast<char>(b)));
  for (const char* t :
       {"{\"",  "\":", "\": ", "\",", ", \"", "true",  "false", "null", "12", "0.",
        "-1",   "abc", "name", "\"}", "}}",   "[]",    "{}",    "\"\"", "é",  "\xe2\x82",
        "\xac", ", ",  "e+",   "00",  "\\n",  "\\u00", "ab\"",  "\"a",  " "}) {
    tokens.push_back(t);
  }
  tokens.push_back("");
  tokens.push_back("<|eot|>");
  tokens.push_back("<|pad|>");
  std::vector<bool> special(tokens.size(), false);
  special[tokens.size() - 1] = special[tokens.size() - 2] = true;
  return TokenVocabulary::FromTokens(std::move(tokens), std::move(special));
}

inline std::shared_ptr<const CompiledConstraint> Compile(const ConstraintSpec& spec) {
  static const auto* const kVocabulary =
      new std::shared_ptr<const TokenVocabulary>(SmallVocabulary());
  auto compiled = CompiledConstraint::Compile(spec, *kVocabulary);
  return compiled.ok() ? *compiled : nullptr;
}

// `text` is a whole match of `spec`.
inline bool Matches(const ConstraintSpec& spec, const std::string& text) {
  auto compiled = Compile(spec);
  if (compiled == nullptr) return false;
  ConstraintMatcher matcher(compiled);
  return matcher.AcceptBytes(text).ok() && matcher.CanEnd();
}

// `text` is a prefix of some match of `spec`.
inline bool IsPrefix(const ConstraintSpec& spec, const std::string& text) {
  auto compiled = Compile(spec);
  if (compiled == nullptr) return false;
  ConstraintMatcher matcher(compiled);
  return matcher.AcceptBytes(text).ok();
}

}  // namespace tern::structured::testing

#endif  // TERN_TESTS_STRUCTURED_CONSTRAINT_TESTING_H_
