#include "structured/regex_compiler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/structured/constraint_testing.h"

namespace tern::structured {
namespace {

using ::tern::structured::testing::IsPrefix;
using ::tern::structured::testing::Matches;
using ::tern::structured::testing::RegexSpec;
using ::testing::HasSubstr;

// Whole-input DFA match, independent of the grammar and matcher.
bool DfaMatches(const std::string& pattern, const std::string& text) {
  auto dfa = CompileRegex(pattern);
  EXPECT_TRUE(dfa.ok()) << pattern << ": " << dfa.status();
  if (!dfa.ok()) return false;
  int32_t state = dfa->start;
  for (char c : text) {
    state = dfa->next[state][static_cast<uint8_t>(c)];
    if (state < 0) return false;
  }
  return dfa->accepting[state];
}

TEST(RegexCompilerTest, LiteralsClassesAndQuantifiers) {
  EXPECT_TRUE(DfaMatches("abc", "abc"));
  EXPECT_FALSE(DfaMatches("abc", "abcd"));
  EXPECT_TRUE(DfaMatches("^a[0-9]+$", "a123"));
  EXPECT_FALSE(DfaMatches("a[0-9]+", "a"));
  EXPECT_TRUE(DfaMatches("a{2,3}", "aaa"));
  EXPECT_FALSE(DfaMatches("a{2,3}", "aaaa"));
  EXPECT_TRUE(DfaMatches("a{2,}", "aaaaaa"));
  EXPECT_TRUE(DfaMatches("(ab|cd)*e?", "abcdab"));
  EXPECT_TRUE(DfaMatches("(?:x|y){3}", "xyx"));
  EXPECT_TRUE(DfaMatches("\\d\\w\\s\\.", "7_ ."));
  EXPECT_FALSE(DfaMatches("\\d", "a"));
  EXPECT_TRUE(DfaMatches("[^a-c]", "d"));
  EXPECT_FALSE(DfaMatches("[^a-c]", "b"));
  EXPECT_TRUE(DfaMatches("[^a-c]", "\xE2\x82\xAC"));
  EXPECT_FALSE(DfaMatches("[^a-c]", "\xFF"));
  EXPECT_TRUE(DfaMatches(".", "\xF0\x9F\x98\x80"));
  EXPECT_FALSE(DfaMatches(".", "\n"));
  EXPECT_TRUE(DfaMatches("[\\d-]+", "1-2"));
  EXPECT_TRUE(DfaMatches("é+", "\xC3\xA9\xC3\xA9"));
  EXPECT_TRUE(DfaMatches("[à-ÿ]", "\xC3\xA9"));
  EXPECT_TRUE(DfaMatches("a*?b", "aab"));
  EXPECT_TRUE(DfaMatches("\\u00e9\\x41",
                         "\xC3\xA9"
                         "A"));
  EXPECT_TRUE(DfaMatches("", ""));
  EXPECT_TRUE(DfaMatches("(a*)*", "aaa"));
  EXPECT_TRUE(DfaMatches("a{,", "a{,"));  // not a quantifier: literal
}

TEST(RegexCompilerTest, UnsupportedConstructsAreNamed) {
  const struct {
    const char* pattern;
    const char* message;
  } kCases[] = {
      {"(?=a)", "unsupported group '(?='"},
      {"(?<n>a)", "unsupported group '(?<'"},
      {"\\1", "unsupported escape '\\1'"},
      {"a\\b", "unsupported escape '\\b'"},
      {"a^b", "anchor '^'"},
      {"a$b", "anchor '$'"},
      {"a++", "possessive"},
      {"[[:alpha:]]", "POSIX"},
      {"(a", "missing ')'"},
      {"a)", "unbalanced ')'"},
      {"*a", "quantifier without an operand"},
      {"[z-a]", "out of order"},
      {"a{2000}", "repetition count"},
  };
  for (const auto& c : kCases) {
    auto dfa = CompileRegex(c.pattern);
    ASSERT_FALSE(dfa.ok()) << c.pattern;
    EXPECT_EQ(dfa.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(dfa.status().message(), HasSubstr(c.message)) << c.pattern;
  }
}

TEST(RegexCompilerTest, RegexKindMatchesWholeOutput) {
  const auto spec = RegexSpec("(yes|no)-[0-9]{2}");
  EXPECT_TRUE(Matches(spec, "yes-12"));
  EXPECT_TRUE(IsPrefix(spec, "ye"));
  EXPECT_FALSE(IsPrefix(spec, "yes-123"));
  EXPECT_FALSE(IsPrefix(spec, "maybe"));
  EXPECT_FALSE(Matches(spec, "no-1"));
  EXPECT_EQ(ValidateConstraint(RegexSpec("(?!x)")).code(), absl::StatusCode::kInvalidArgument);
}

TEST(RegexCompilerTest, ChoiceIsExactlyOneString) {
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::kChoice;
  spec.choices = {"positive", "negative", "neutral", "neg"};
  EXPECT_TRUE(Matches(spec, "positive"));
  EXPECT_TRUE(Matches(spec, "neg"));
  EXPECT_TRUE(IsPrefix(spec, "nega"));
  EXPECT_FALSE(Matches(spec, "nega"));
  EXPECT_FALSE(IsPrefix(spec, "positives"));
  spec.choices.clear();
  EXPECT_EQ(ValidateConstraint(spec).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tern::structured
