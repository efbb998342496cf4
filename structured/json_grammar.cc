#include "structured/json_grammar.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tern::structured {
namespace {

// Beyond this magnitude a bound is treated as absent (and negation is safe).
constexpr int64_t kMaxBound = 1'000'000'000'000'000'000;

Sequence Concat(Sequence a, const Sequence& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Symbol Digit() { return Symbol::Bytes(ByteSet::Range('0', '9')); }

}  // namespace

int32_t JsonGrammar::OptionalSpace() {
  if (space_ < 0) space_ = b_->AddRule("space", {{}, LiteralSequence(" ")});
  return space_;
}

int32_t JsonGrammar::Digits() {
  if (digits_ < 0) {
    digits_ = b_->AddRule("digits");
    b_->AddAlternative(digits_, {});
    b_->AddAlternative(digits_, {Digit(), Symbol::Rule(digits_)});
  }
  return digits_;
}

int32_t JsonGrammar::StringChar() {
  if (string_char_ >= 0) return string_char_;
  const Symbol c = Symbol::Bytes(ByteSet::Range(0x80, 0xBF));
  const auto range = [](uint8_t lo, uint8_t hi) { return Symbol::Bytes(ByteSet::Range(lo, hi)); };
  ByteSet ascii = ByteSet::Range(0x20, 0x7F).Minus(ByteSet::Single('"'));
  ascii = ascii.Minus(ByteSet::Single('\\'));
  ByteSet three = ByteSet::Range(0xE1, 0xEC);
  three.AddRange(0xEE, 0xEF);
  ByteSet hex = ByteSet::Range('0', '9');
  hex.AddRange('a', 'f');
  hex.AddRange('A', 'F');
  ByteSet hex_lead = hex.Minus(ByteSet::Single('d')).Minus(ByteSet::Single('D'));
  ByteSet short_escapes;
  for (char e : std::string("\"\\/bfnrt")) short_escapes.Add(static_cast<uint8_t>(e));
  ByteSet d;
  d.Add('d');
  d.Add('D');
  const Symbol h = Symbol::Bytes(hex);
  string_char_ = b_->AddRule(
      "string_char",
      {
          {Symbol::Bytes(ascii)},
          {range(0xC2, 0xDF), c},
          {Symbol::Byte(0xE0), range(0xA0, 0xBF), c},
          {Symbol::Bytes(three), c, c},
          {Symbol::Byte(0xED), range(0x80, 0x9F), c},
          {Symbol::Byte(0xF0), range(0x90, 0xBF), c, c},
          {range(0xF1, 0xF3), c, c, c},
          {Symbol::Byte(0xF4), range(0x80, 0x8F), c, c},
          {Symbol::Byte('\\'), Symbol::Bytes(short_escapes)},
          {Symbol::Byte('\\'), Symbol::Byte('u'), Symbol::Bytes(hex_lead), h, h, h},
          {Symbol::Byte('\\'), Symbol::Byte('u'), Symbol::Bytes(d), range('0', '7'), h, h},
      });
  return string_char_;
}

int32_t JsonGrammar::AnyString() {
  if (string_ < 0) string_ = StringOfLength(0, -1);
  return string_;
}

int32_t JsonGrammar::StringOfLength(int64_t min_chars, int64_t max_chars) {
  if (min_chars == 0 && max_chars < 0 && string_ >= 0) return string_;
  const int32_t ch = StringChar();
  const int64_t states = max_chars >= 0 ? max_chars : min_chars;
  // body[c]: c characters written so far.
  std::vector<int32_t> body(states + 1);
  for (int64_t c = 0; c <= states; ++c) {
    body[c] = b_->AddRule(absl::StrCat("string_body", c));
  }
  for (int64_t c = 0; c <= states; ++c) {
    if (c >= min_chars) b_->AddAlternative(body[c], {});
    if (c < states) {
      b_->AddAlternative(body[c], {Symbol::Rule(ch), Symbol::Rule(body[c + 1])});
    } else if (max_chars < 0) {
      b_->AddAlternative(body[c], {Symbol::Rule(ch), Symbol::Rule(body[c])});
    }
  }
  return b_->AddRule("string", {{Symbol::Byte('"'), Symbol::Rule(body[0]), Symbol::Byte('"')}});
}

int32_t JsonGrammar::AnyInteger() {
  if (integer_ < 0) integer_ = IntegerInRange(std::nullopt, std::nullopt);
  return integer_;
}

int32_t JsonGrammar::AnyNumber() {
  if (number_ >= 0) return number_;
  const int32_t digits = Digits();
  const int32_t frac =
      b_->AddRule("fraction", {{}, {Symbol::Byte('.'), Digit(), Symbol::Rule(digits)}});
  const int32_t sign = b_->AddRule(
      "exponent_sign", {{}, {Symbol::Bytes(ByteSet::Range('+', '+'))}, {Symbol::Byte('-')}});
  ByteSet e;
  e.Add('e');
  e.Add('E');
  // At most two exponent digits: longer ones overflow doubles in the
  // parsers clients use, and no real value needs them.
  const int32_t exponent =
      b_->AddRule("exponent", {{},
                               {Symbol::Bytes(e), Symbol::Rule(sign), Digit()},
                               {Symbol::Bytes(e), Symbol::Rule(sign), Digit(), Digit()}});
  number_ = b_->AddRule("number",
                        {{Symbol::Rule(AnyInteger()), Symbol::Rule(frac), Symbol::Rule(exponent)}});
  return number_;
}

int32_t JsonGrammar::Literal(const std::string& text) {
  return b_->AddRule(absl::StrCat("literal ", text.substr(0, 32)), {LiteralSequence(text)});
}

int32_t JsonGrammar::AnyValue() {
  if (value_ >= 0) return value_;
  value_ = b_->AddRule("value");
  const int32_t space = OptionalSpace();
  const int32_t elements = b_->AddRule("array_elements");
  b_->AddAlternative(elements, {});
  b_->AddAlternative(elements, {Symbol::Byte(','), Symbol::Rule(space), Symbol::Rule(value_),
                                Symbol::Rule(elements)});
  const int32_t array = b_->AddRule("array", {LiteralSequence("[]"),
                                              {Symbol::Byte('['), Symbol::Rule(value_),
                                               Symbol::Rule(elements), Symbol::Byte(']')}});
  for (const char* word : {"true", "false", "null"}) {
    b_->AddAlternative(value_, LiteralSequence(word));
  }
  b_->AddAlternative(value_, {Symbol::Rule(AnyObject())});
  b_->AddAlternative(value_, {Symbol::Rule(array)});
  b_->AddAlternative(value_, {Symbol::Rule(AnyString())});
  b_->AddAlternative(value_, {Symbol::Rule(AnyNumber())});
  return value_;
}

int32_t JsonGrammar::AnyObject() {
  if (object_ >= 0) return object_;
  object_ = b_->AddRule("object");
  const int32_t space = OptionalSpace();
  const int32_t value = AnyValue();
  const int32_t member = b_->AddRule("member", {{Symbol::Rule(AnyString()), Symbol::Byte(':'),
                                                 Symbol::Rule(space), Symbol::Rule(value)}});
  const int32_t members = b_->AddRule("members");
  b_->AddAlternative(members, {});
  b_->AddAlternative(members, {Symbol::Byte(','), Symbol::Rule(space), Symbol::Rule(member),
                               Symbol::Rule(members)});
  b_->AddAlternative(object_, LiteralSequence("{}"));
  b_->AddAlternative(
      object_, {Symbol::Byte('{'), Symbol::Rule(member), Symbol::Rule(members), Symbol::Byte('}')});
  return object_;
}

void JsonGrammar::AddDigitRanges(int32_t rule, const Sequence& prefix, const std::string& lo,
                                 const std::string& hi) {
  if (lo.empty()) {
    b_->AddAlternative(rule, prefix);
    return;
  }
  if (lo[0] == hi[0]) {
    AddDigitRanges(rule, Concat(prefix, {Symbol::Byte(lo[0])}), lo.substr(1), hi.substr(1));
    return;
  }
  const size_t k = lo.size() - 1;
  const std::string rest_lo = lo.substr(1);
  const std::string rest_hi = hi.substr(1);
  const bool lo_zeros = rest_lo.find_first_not_of('0') == std::string::npos;
  const bool hi_nines = rest_hi.find_first_not_of('9') == std::string::npos;
  char first = lo[0];
  char last = hi[0];
  if (!lo_zeros) {
    AddDigitRanges(rule, Concat(prefix, {Symbol::Byte(first)}), rest_lo, std::string(k, '9'));
    ++first;
  }
  if (!hi_nines) --last;
  if (first <= last) {
    Sequence seq = Concat(prefix, {Symbol::Bytes(ByteSet::Range(first, last))});
    for (size_t i = 0; i < k; ++i) seq.push_back(Digit());
    b_->AddAlternative(rule, std::move(seq));
  }
  if (!hi_nines) {
    AddDigitRanges(rule, Concat(prefix, {Symbol::Byte(hi[0])}), std::string(k, '0'), rest_hi);
  }
}

int32_t JsonGrammar::Magnitude(int64_t lo, int64_t hi) {
  const int32_t rule = b_->AddRule(absl::StrCat("magnitude[", lo, ",", hi, "]"));
  const std::string lo_s = std::to_string(lo);
  const std::string hi_s = hi >= 0 ? std::to_string(hi) : std::string(lo_s.size(), '9');
  for (size_t n = lo_s.size(); n <= hi_s.size(); ++n) {
    std::string a = lo_s;
    if (n != lo_s.size()) {
      a.assign(n, '0');
      a[0] = '1';
    }
    const std::string b = n == hi_s.size() ? hi_s : std::string(n, '9');
    AddDigitRanges(rule, {}, a, b);
  }
  if (hi < 0) {
    Sequence longer = {Symbol::Bytes(ByteSet::Range('1', '9'))};
    for (size_t i = 0; i < lo_s.size(); ++i) longer.push_back(Digit());
    longer.push_back(Symbol::Rule(Digits()));
    b_->AddAlternative(rule, std::move(longer));
  }
  return rule;
}

int32_t JsonGrammar::IntegerInRange(std::optional<int64_t> min, std::optional<int64_t> max) {
  // Plain values (INT64 extremes for "none") keep the arithmetic simple.
  const bool has_min = min.has_value() && *min >= -kMaxBound;
  const bool has_max = max.has_value() && *max <= kMaxBound;
  const int64_t lo = has_min ? *min : INT64_MIN;
  const int64_t hi = has_max ? *max : INT64_MAX;
  if (lo > hi) return -1;
  const int32_t rule = b_->AddRule("integer");
  if (hi >= 0) {
    b_->AddAlternative(rule,
                       {Symbol::Rule(Magnitude(std::max<int64_t>(lo, 0), has_max ? hi : -1))});
  }
  if (lo < 0) {
    const int64_t magnitude_lo = hi < 0 ? -hi : 0;  // "-0" is 0, and starts "-0.5"
    b_->AddAlternative(
        rule, {Symbol::Byte('-'), Symbol::Rule(Magnitude(magnitude_lo, has_min ? -lo : -1))});
  }
  return rule;
}

int32_t JsonGrammar::NonNegativeDecimal(NumberBound lo, std::optional<NumberBound> hi) {
  const int64_t l = lo.value;
  const int32_t digits = Digits();
  std::vector<Sequence> alternatives;
  const int64_t a_lo = lo.exclusive ? l + 1 : l;
  if (!hi || a_lo <= hi->value - 1) {
    const int32_t any_fraction =
        b_->AddRule("fraction", {{}, {Symbol::Byte('.'), Digit(), Symbol::Rule(digits)}});
    alternatives.push_back(
        {Symbol::Rule(Magnitude(a_lo, hi ? hi->value - 1 : -1)), Symbol::Rule(any_fraction)});
  }
  if (lo.exclusive && (!hi || l < hi->value)) {
    // lo itself, with a fraction that is not all zeros.
    const int32_t nonzero = b_->AddRule("nonzero_digits");
    b_->AddAlternative(nonzero, {Symbol::Byte('0'), Symbol::Rule(nonzero)});
    b_->AddAlternative(nonzero, {Symbol::Bytes(ByteSet::Range('1', '9')), Symbol::Rule(digits)});
    alternatives.push_back(
        Concat(LiteralSequence(std::to_string(l)), {Symbol::Byte('.'), Symbol::Rule(nonzero)}));
  }
  if (hi && !hi->exclusive && (l < hi->value || (l == hi->value && !lo.exclusive))) {
    // hi itself, with a fraction of zeros at most.
    const int32_t zeros = b_->AddRule("zeros");
    b_->AddAlternative(zeros, {});
    b_->AddAlternative(zeros, {Symbol::Byte('0'), Symbol::Rule(zeros)});
    const int32_t zero_fraction = b_->AddRule(
        "zero_fraction", {{}, {Symbol::Byte('.'), Symbol::Byte('0'), Symbol::Rule(zeros)}});
    alternatives.push_back(
        Concat(LiteralSequence(std::to_string(hi->value)), {Symbol::Rule(zero_fraction)}));
  }
  if (alternatives.empty()) return -1;
  return b_->AddRule("decimal", std::move(alternatives));
}

int32_t JsonGrammar::NumberInRange(std::optional<NumberBound> min, std::optional<NumberBound> max) {
  if (min && min->value < -kMaxBound) min.reset();
  if (max && max->value > kMaxBound) max.reset();
  if (!min && !max) return AnyNumber();
  std::vector<Sequence> alternatives;
  if (!max || max->value > 0 || (max->value == 0 && !max->exclusive)) {
    const NumberBound lo = min && min->value >= 0 ? *min : NumberBound{0, false};
    const int32_t positive = NonNegativeDecimal(lo, max);
    if (positive >= 0) alternatives.push_back({Symbol::Rule(positive)});
  }
  if (!min || min->value < 0) {
    // -x with x bounded by the negated bounds.
    const NumberBound lo =
        !max || max->value > 0 ? NumberBound{0, false} : NumberBound{-max->value, max->exclusive};
    std::optional<NumberBound> hi;
    if (min) hi = NumberBound{-min->value, min->exclusive};
    const int32_t negative = NonNegativeDecimal(lo, hi);
    if (negative >= 0) alternatives.push_back({Symbol::Byte('-'), Symbol::Rule(negative)});
  }
  if (alternatives.empty()) return -1;
  return b_->AddRule("number_in_range", std::move(alternatives));
}

}  // namespace tern::structured
