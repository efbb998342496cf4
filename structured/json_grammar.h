// Grammar rules for JSON text in the compact form structured outputs use: no
// whitespace except at most one space after ':' and ','. Strings are valid
// UTF-8 with JSON's escapes (no raw control characters; \u escapes of
// surrogates are left out, so non-BMP characters are written raw).
//
// Thread safety: a JsonGrammar belongs to one thread, like its builder.
#ifndef TERN_STRUCTURED_JSON_GRAMMAR_H_
#define TERN_STRUCTURED_JSON_GRAMMAR_H_

#include <cstdint>
#include <optional>
#include <string>

#include "structured/grammar.h"

namespace tern::structured {

// A bound of a numeric range.
struct NumberBound {
  int64_t value = 0;
  bool exclusive = false;
};

class JsonGrammar {
 public:
  // Adds rules to `builder`, which must outlive this object. Shared rules
  // are made once, on first use.
  explicit JsonGrammar(GrammarBuilder* builder) : b_(builder) {}

  int32_t OptionalSpace();  // "" | " "
  int32_t AnyValue();
  int32_t AnyObject();
  int32_t AnyString();  // with the quotes
  // A string of between min_chars and max_chars (-1: no limit) characters.
  int32_t StringOfLength(int64_t min_chars, int64_t max_chars);
  int32_t AnyNumber();   // JSON number syntax; exponents of at most two digits
  int32_t AnyInteger();  // -?(0|[1-9][0-9]*)
  // Integers in [min, max]; -1 when the range is empty.
  int32_t IntegerInRange(std::optional<int64_t> min, std::optional<int64_t> max);
  // Decimal numbers (no exponent) within the bounds; -1 when none.
  int32_t NumberInRange(std::optional<NumberBound> min, std::optional<NumberBound> max);
  // Exactly these bytes.
  int32_t Literal(const std::string& text);

  GrammarBuilder* builder() { return b_; }

 private:
  int32_t Digits();      // [0-9]*
  int32_t StringChar();  // one character of string content, escapes included
  // Non-negative integers in [lo, hi] (hi -1: unbounded), canonical digits.
  int32_t Magnitude(int64_t lo, int64_t hi);
  void AddDigitRanges(int32_t rule, const Sequence& prefix, const std::string& lo,
                      const std::string& hi);
  // Non-negative decimals x with lo <(=) x <(=) hi (hi absent: unbounded).
  int32_t NonNegativeDecimal(NumberBound lo, std::optional<NumberBound> hi);

  GrammarBuilder* b_;
  int32_t space_ = -1;
  int32_t value_ = -1;
  int32_t object_ = -1;
  int32_t string_ = -1;
  int32_t string_char_ = -1;
  int32_t number_ = -1;
  int32_t integer_ = -1;
  int32_t digits_ = -1;
};

}  // namespace tern::structured

#endif  // TERN_STRUCTURED_JSON_GRAMMAR_H_
