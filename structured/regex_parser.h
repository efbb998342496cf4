// Parses the regular-expression subset structured outputs accept into a
// syntax tree over Unicode code points:
//
//   literals (UTF-8), escapes \d \D \w \W \s \S \n \r \t \f \v \xHH \uXXXX and
//   escaped punctuation, classes [...] with ranges and ^ negation, `.` (any
//   character but \n), groups (...) and (?:...), alternation |, quantifiers
//   * + ? {n} {n,} {n,m} (a trailing lazy `?` is accepted: for a whole-output
//   match it changes nothing), and the anchors ^ and $ only at the very start
//   and end (the whole output is matched either way).
//
// Anything else (lookaround, backreferences, \b, named groups, possessive
// quantifiers, POSIX classes...) is INVALID_ARGUMENT naming the construct.
//
// Thread safety: pure function.
#ifndef TERN_STRUCTURED_REGEX_PARSER_H_
#define TERN_STRUCTURED_REGEX_PARSER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "structured/utf8_ranges.h"

namespace tern::structured {

// The largest repetition count accepted in {n,m}.
inline constexpr int kMaxRegexRepeat = 1000;

struct RegexNode {
  enum class Kind { kEmpty, kClass, kConcat, kAlternate, kRepeat };
  Kind kind = Kind::kEmpty;
  CodePointSet chars;             // kClass: one character from this set
  std::vector<int32_t> children;  // kConcat, kAlternate; kRepeat: exactly one
  int32_t min = 0;                // kRepeat
  int32_t max = -1;               // kRepeat; -1: unbounded
};

// Nodes refer to each other by index; `root` is the whole pattern.
struct RegexAst {
  std::vector<RegexNode> nodes;
  int32_t root = -1;
};

absl::StatusOr<RegexAst> ParseRegex(const std::string& pattern);

}  // namespace tern::structured

#endif  // TERN_STRUCTURED_REGEX_PARSER_H_
