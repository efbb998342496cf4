// RegexSplitter: the `Split` pre-tokenizer of a Hugging Face tokenizer.json
// (behavior "Isolated", invert false): text is cut into the matches of a
// pattern and the gaps between them, in order, none empty. Patterns are
// compiled by PCRE2 with UTF and UCP, so \p{L}, \p{N} and \s are Unicode-aware
// and (?i:...) groups and (?!...) lookaheads work as in the reference's
// Oniguruma engine. The pattern is JIT-compiled where PCRE2 supports it.
//
// Also the Unicode character classes the added-token rules need.
//
// Thread-safety: immutable after Create(); Split() may run on any number of
// threads at once (match state is per thread).
#ifndef TERN_GATEWAY_TOKENIZER_BPE_PRE_TOKENIZER_H_
#define TERN_GATEWAY_TOKENIZER_BPE_PRE_TOKENIZER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tern::gateway {

class RegexSplitter {
 public:
  // `literal`: the pattern is a plain string, not a regular expression.
  // InvalidArgument when the pattern does not compile.
  static absl::StatusOr<std::unique_ptr<RegexSplitter>> Create(std::string_view pattern,
                                                               bool literal);
  ~RegexSplitter();
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // Appends the pieces of `text` (valid UTF-8) to `out`; they are views into
  // `text` and cover it exactly. Should the regex engine fail (resource
  // limits on pathological input), the unmatched rest is one piece.
  void Split(std::string_view text, std::vector<std::string_view>& out) const;

 private:
  explicit RegexSplitter(void* code) : code_(code) {}
  void* code_;  // pcre2_code_8*, owned
};

// The pattern of GPT-2's ByteLevel pre-tokenizer (`use_regex: true`).
inline constexpr std::string_view kGpt2SplitPattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// Unicode White_Space, as Rust's char::is_whitespace and regex \s.
bool IsUnicodeWhitespace(char32_t cp);
// Rust regex's Unicode \w: Alphabetic, marks, decimal digits, connector
// punctuation and the joiners.
bool IsUnicodeWordChar(char32_t cp);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_TOKENIZER_BPE_PRE_TOKENIZER_H_
