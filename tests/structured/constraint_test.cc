#include "structured/constraint.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "structured/constraint_impl.h"
#include "tests/structured/constraint_testing.h"

namespace tern::structured {
namespace {

using ::tern::structured::testing::Compile;
using ::tern::structured::testing::SchemaSpec;
using ::tern::structured::testing::SmallVocabulary;

// The mask as the definition says: each token tried on a copy of the matcher.
TokenMask BruteForceMask(const ConstraintMatcher& matcher, int32_t vocab_size) {
  TokenMask mask(vocab_size);
  for (int32_t t = 0; t < vocab_size; ++t) {
    ConstraintMatcher copy = matcher;
    if (copy.AcceptToken(t).ok()) mask.Allow(t);
  }
  return mask;
}

std::vector<int32_t> AllowedIds(const TokenMask& mask) {
  std::vector<int32_t> ids;
  for (int32_t t = 0; t < mask.vocab_size(); ++t) {
    if (mask.allowed(t)) ids.push_back(t);
  }
  return ids;
}

// Generates one output by picking random allowed tokens, checking every
// mask against brute force on the way. Ends when CanEnd and a coin says so.
std::string Generate(const std::shared_ptr<const CompiledConstraint>& constraint,
                     const TokenVocabulary& vocabulary, std::mt19937_64& rng, bool* ended) {
  ConstraintMatcher matcher(constraint);
  std::string out;
  TokenMask mask(vocabulary.size());
  for (int step = 0; step < 3000; ++step) {
    matcher.FillAllowedTokens(&mask);
    EXPECT_EQ(AllowedIds(mask), AllowedIds(BruteForceMask(matcher, vocabulary.size())))
        << "after " << out;
    const std::vector<int32_t> allowed = AllowedIds(mask);
    if (matcher.CanEnd() && (allowed.empty() || rng() % 4 == 0)) {
      *ended = true;
      return out;
    }
    EXPECT_FALSE(allowed.empty()) << "stuck after " << out;
    if (allowed.empty()) break;
    const int32_t token = allowed[rng() % allowed.size()];
    EXPECT_TRUE(matcher.AcceptToken(token).ok());
    out += vocabulary.bytes(token);
  }
  *ended = false;
  return out;
}

int64_t CodePoints(const std::string& s) {
  int64_t n = 0;
  for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

TEST(ConstraintTest, RandomGenerationSatisfiesSchema) {
  const auto vocabulary = SmallVocabulary();
  const auto constraint = Compile(SchemaSpec(R"({"type":"object","properties":{
      "name":{"type":"string","minLength":1,"maxLength":8},
      "age":{"type":"integer","minimum":0,"maximum":120},
      "tags":{"type":"array","items":{"enum":["a","b","c"]},"minItems":1,"maxItems":3},
      "score":{"type":"number","minimum":0,"maximum":1},
      "kind":{"enum":["x","y"]},
      "nick":{"type":["string","null"],"maxLength":4},
      "code":{"type":"string","pattern":"[A-Z]{2}-\\d{1,3}"}},
      "required":["name","age","tags","kind","code"]})"));
  ASSERT_NE(constraint, nullptr);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 40; ++i) {
    bool ended = false;
    const std::string text = Generate(constraint, *vocabulary, rng, &ended);
    ASSERT_TRUE(ended) << text;
    const nlohmann::json doc = nlohmann::json::parse(text);  // throws if invalid
    SCOPED_TRACE(text);
    ASSERT_TRUE(doc.is_object());
    for (const char* key : {"name", "age", "tags", "kind", "code"}) {
      EXPECT_TRUE(doc.contains(key)) << key;
    }
    const int64_t name_length = CodePoints(doc["name"].get<std::string>());
    EXPECT_GE(name_length, 1);
    EXPECT_LE(name_length, 8);
    EXPECT_TRUE(doc["age"].is_number_integer());
    EXPECT_GE(doc["age"].get<int64_t>(), 0);
    EXPECT_LE(doc["age"].get<int64_t>(), 120);
    EXPECT_GE(doc["tags"].size(), 1u);
    EXPECT_LE(doc["tags"].size(), 3u);
    for (const auto& tag : doc["tags"]) {
      EXPECT_TRUE(tag == "a" || tag == "b" || tag == "c");
    }
    if (doc.contains("score")) {
      EXPECT_GE(doc["score"].get<double>(), 0.0);
      EXPECT_LE(doc["score"].get<double>(), 1.0);
    }
    EXPECT_TRUE(doc["kind"] == "x" || doc["kind"] == "y");
    if (doc.contains("nick") && !doc["nick"].is_null()) {
      EXPECT_LE(CodePoints(doc["nick"].get<std::string>()), 4);
    }
    const std::string code = doc["code"].get<std::string>();
    EXPECT_TRUE(code.size() >= 4 && code[2] == '-') << code;
  }
}

TEST(ConstraintTest, RandomGenerationOfRecursiveSchemaAndAnyObject) {
  const auto vocabulary = SmallVocabulary();
  ConstraintSpec object;
  object.kind = ConstraintSpec::Kind::kJsonObject;
  for (const ConstraintSpec& spec : {object, SchemaSpec(R"({"$defs":{"n":{"type":"object",
          "properties":{"v":{"type":"integer","minimum":-5,"maximum":5},
          "k":{"type":"array","items":{"$ref":"#/$defs/n"},"maxItems":2}},
          "required":["v"]}},"$ref":"#/$defs/n"})")}) {
    const auto constraint = Compile(spec);
    ASSERT_NE(constraint, nullptr);
    std::mt19937_64 rng(11);
    int ended_count = 0;
    for (int i = 0; i < 30; ++i) {
      bool ended = false;
      const std::string text = Generate(constraint, *vocabulary, rng, &ended);
      if (!ended) continue;  // a deep random walk may run past the step limit
      ++ended_count;
      const nlohmann::json doc = nlohmann::json::parse(text);
      EXPECT_TRUE(doc.is_object()) << text;
    }
    EXPECT_GT(ended_count, 10);
  }
}

TEST(ConstraintTest, MaskMatchesBruteForceAlongAFixedText) {
  const auto vocabulary = SmallVocabulary();
  const auto constraint = Compile(SchemaSpec(R"({"type":"object","properties":{
      "a":{"type":"string"},"b":{"type":"array","items":{"type":"number"}}},
      "required":["a"],"additionalProperties":{"type":"boolean"}})"));
  ASSERT_NE(constraint, nullptr);
  const std::string text = "{\"a\": \"x\\u00e9\xE2\x82\xAC\\n\", \"b\":[1.5e3, -0, 2], \"c\":true}";
  ConstraintMatcher matcher(constraint);
  TokenMask mask(vocabulary->size());
  for (size_t i = 0; i <= text.size(); ++i) {
    matcher.FillAllowedTokens(&mask);
    ASSERT_EQ(AllowedIds(mask), AllowedIds(BruteForceMask(matcher, vocabulary->size())))
        << "after " << text.substr(0, i);
    if (i < text.size()) {
      ASSERT_TRUE(matcher.AcceptBytes(text.substr(i, 1)).ok()) << i;
    }
  }
  EXPECT_TRUE(matcher.CanEnd());
  EXPECT_TRUE(matcher.MustEnd());
  matcher.FillAllowedTokens(&mask);
  EXPECT_EQ(mask.CountAllowed(), 0);
}

TEST(ConstraintTest, SpecialAndEmptyTokensAreNeverAllowed) {
  const auto vocabulary = SmallVocabulary();
  const auto constraint = Compile(SchemaSpec(R"({"type":"string"})"));
  ConstraintMatcher matcher(constraint);
  ASSERT_TRUE(matcher.AcceptBytes("\"").ok());
  TokenMask mask(vocabulary->size());
  matcher.FillAllowedTokens(&mask);
  for (int32_t t = 0; t < vocabulary->size(); ++t) {
    if (vocabulary->is_special(t) || vocabulary->bytes(t).empty()) {
      EXPECT_FALSE(mask.allowed(t)) << t;
      EXPECT_EQ(matcher.AcceptToken(t).code(), absl::StatusCode::kFailedPrecondition);
    }
  }
}

TEST(ConstraintTest, FailedAcceptLeavesMatcherUnchanged) {
  const auto constraint = Compile(SchemaSpec(R"({"type":"number"})"));
  ConstraintMatcher matcher(constraint);
  ASSERT_TRUE(matcher.AcceptBytes("12").ok());
  EXPECT_TRUE(matcher.CanEnd());
  EXPECT_FALSE(matcher.MustEnd());
  EXPECT_EQ(matcher.AcceptBytes("3x").code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(matcher.AcceptBytes("3").ok());  // "3x" left no trace
  EXPECT_TRUE(matcher.CanEnd());
  ConstraintMatcher copy = matcher;
  EXPECT_TRUE(copy.AcceptBytes(".5").ok());
  EXPECT_FALSE(matcher.AcceptBytes("e").ok() && matcher.CanEnd());
}

TEST(ConstraintTest, CachedMasksEqualFreshOnes) {
  const auto vocabulary = SmallVocabulary();
  const auto constraint = Compile(SchemaSpec(R"({"type":"array","items":{"type":"string"}})"));
  ConstraintMatcher a(constraint);
  ASSERT_TRUE(a.AcceptBytes("[\"ab").ok());
  ConstraintMatcher b(constraint);
  ASSERT_TRUE(b.AcceptBytes("[\"xyzw").ok());  // same parser state as `a`
  TokenMask first(vocabulary->size());
  TokenMask second(vocabulary->size());
  a.FillAllowedTokens(&first);
  b.FillAllowedTokens(&second);
  EXPECT_EQ(first.words(), second.words());
  EXPECT_GT(constraint->impl().cache.hits(), 0);
}

TEST(ConstraintTest, ThreadsShareOneConstraintAndItsCache) {
  const auto vocabulary = SmallVocabulary();
  const auto constraint = Compile(SchemaSpec(R"({"type":"object","properties":{
      "a":{"type":"string","maxLength":6},"b":{"type":"array","items":{"type":"integer"},
      "maxItems":3}},"required":["a","b"]})"));
  ASSERT_NE(constraint, nullptr);
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      std::mt19937_64 rng(100 + k);
      TokenMask mask(vocabulary->size());
      for (int run = 0; run < 10; ++run) {
        ConstraintMatcher matcher(constraint);
        for (int step = 0; step < 200 && !matcher.MustEnd(); ++step) {
          matcher.FillAllowedTokens(&mask);
          if (AllowedIds(mask) != AllowedIds(BruteForceMask(matcher, vocabulary->size()))) {
            ++failures[k];
          }
          const std::vector<int32_t> allowed = AllowedIds(mask);
          if (allowed.empty() || (matcher.CanEnd() && rng() % 3 == 0)) break;
          if (!matcher.AcceptToken(allowed[rng() % allowed.size()]).ok()) ++failures[k];
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

TEST(ConstraintTest, CacheKeysAndConstraintCache) {
  ConstraintSpec a = SchemaSpec("{}");
  ConstraintSpec b = SchemaSpec("{}");
  EXPECT_EQ(a.CacheKey(), b.CacheKey());
  ConstraintSpec c;
  c.kind = ConstraintSpec::Kind::kChoice;
  c.choices = {"a", "b"};
  ConstraintSpec d = c;
  d.choices = {"ab"};
  EXPECT_NE(c.CacheKey(), d.CacheKey());
  EXPECT_NE(a.CacheKey(), c.CacheKey());

  ConstraintCache cache(SmallVocabulary(), 2);
  auto first = cache.GetOrCompile(a);
  ASSERT_TRUE(first.ok());
  auto again = cache.GetOrCompile(b);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(first->get(), again->get());
  EXPECT_EQ(cache.GetOrCompile(SchemaSpec(R"({"not":{}})")).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(cache.GetOrCompile(c).ok());
  ASSERT_TRUE(cache.GetOrCompile(d).ok());  // evicts `a`
  auto recompiled = cache.GetOrCompile(a);
  ASSERT_TRUE(recompiled.ok());
  EXPECT_NE(first->get(), recompiled->get());
}

TEST(ConstraintTest, NoneIsValidButNotCompilable) {
  ConstraintSpec none;
  EXPECT_TRUE(ValidateConstraint(none).ok());
  EXPECT_FALSE(CompiledConstraint::Compile(none, SmallVocabulary()).ok());
}

}  // namespace
}  // namespace tern::structured
