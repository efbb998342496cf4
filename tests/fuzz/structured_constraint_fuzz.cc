// Fuzzes the constraint compilers and the matcher (structured/constraint.h),
// which take clients' JSON schemas and regular expressions. The first byte
// picks the kind (even: a JSON schema, odd: a regex), the next selects the
// tokens to try, the rest is the text. Properties: ValidateConstraint and
// Compile agree; a refusal is INVALID_ARGUMENT; over a small vocabulary
// (every single byte plus some multi-byte tokens), a bounded walk that
// always takes an allowed token never has it refused, the mask matches
// token-by-token acceptance, and the matcher never claims it may end where
// it must not.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "structured/constraint.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using tern::structured::CompiledConstraint;
using tern::structured::ConstraintMatcher;
using tern::structured::ConstraintSpec;
using tern::structured::TokenMask;
using tern::structured::TokenVocabulary;

std::shared_ptr<const TokenVocabulary> Vocabulary() {
  static const std::shared_ptr<const TokenVocabulary> vocabulary = [] {
    std::vector<std::string> tokens;
    for (int b = 0; b < 256; ++b) tokens.emplace_back(1, static_cast<char>(b));
    for (const char* multi : {"{\"", "\":", "\",", "\"}", "true", "false", "null", "12", "ab",
                              "\\u00", "[]", "{}", ", \"", "\xc3\xa9", "\xe6\x97\xa5"}) {
      tokens.emplace_back(multi);
    }
    tokens.emplace_back("");  // an empty token is never allowed
    std::vector<bool> special(tokens.size(), false);
    tokens.emplace_back("<eos>");
    special.push_back(true);
    return TokenVocabulary::FromTokens(std::move(tokens), std::move(special));
  }();
  return vocabulary;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  ConstraintSpec spec;
  const std::string text(reinterpret_cast<const char*>(data + 2), size - 2);
  if (data[0] & 1) {
    spec.kind = ConstraintSpec::Kind::kRegex;
    spec.regex = text;
  } else {
    spec.kind = ConstraintSpec::Kind::kJsonSchema;
    spec.json_schema = text;
  }
  const absl::Status valid = tern::structured::ValidateConstraint(spec);
  auto compiled = CompiledConstraint::Compile(spec, Vocabulary());
  TERN_FUZZ_CHECK(valid.ok() == compiled.ok());
  if (!compiled.ok()) {
    TERN_FUZZ_CHECK(absl::IsInvalidArgument(compiled.status()));
    return 0;
  }
  const int32_t vocab = Vocabulary()->size();
  ConstraintMatcher matcher(*compiled);
  TokenMask mask(vocab);
  uint32_t pick = data[1];
  for (int step = 0; step < 24 && !matcher.MustEnd(); ++step) {
    matcher.FillAllowedTokens(&mask);
    std::vector<int32_t> allowed;
    for (int32_t t = 0; t < vocab; ++t) {
      ConstraintMatcher probe = matcher;
      const bool accepted = probe.AcceptToken(t).ok();
      TERN_FUZZ_CHECK(accepted == mask.allowed(t));
      if (accepted) allowed.push_back(t);
    }
    if (allowed.empty()) {
      // A dead end is only allowed where the output is complete.
      TERN_FUZZ_CHECK(matcher.CanEnd());
      break;
    }
    pick = pick * 1103515245u + 12345u;
    TERN_FUZZ_CHECK(matcher.AcceptToken(allowed[(pick >> 8) % allowed.size()]).ok());
  }
  return 0;
}
