#include "gateway/openai/stop_matcher.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tern::gateway {
namespace {

// Feeds `pieces` one by one; returns everything released, and whether it stopped.
std::pair<std::string, bool> Feed(StopMatcher& matcher, const std::vector<std::string>& pieces,
                                  std::vector<std::string>* released = nullptr) {
  std::string out;
  for (const std::string& piece : pieces) {
    std::string part = matcher.Push(piece);
    if (released != nullptr) released->push_back(part);
    out += part;
  }
  if (!matcher.stopped()) out += matcher.Flush();
  return {out, matcher.stopped()};
}

TEST(StopMatcherTest, WithoutStopsPassesTextThrough) {
  StopMatcher matcher({});
  EXPECT_EQ(matcher.Push("Hello"), "Hello");
  EXPECT_EQ(matcher.Push(" world"), " world");
  EXPECT_EQ(matcher.Flush(), "");
  EXPECT_FALSE(matcher.stopped());
}

TEST(StopMatcherTest, CutsBeforeStopInsideOnePiece) {
  StopMatcher matcher({"END"});
  EXPECT_EQ(matcher.Push("abc END def"), "abc ");
  EXPECT_TRUE(matcher.stopped());
  EXPECT_EQ(matcher.Push("more"), "");
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopMatcherTest, MatchesAcrossPieceBoundaries) {
  StopMatcher matcher({"</answer>"});
  std::vector<std::string> released;
  const auto [out, stopped] = Feed(matcher, {"42 </", "ans", "wer> trailing"}, &released);
  EXPECT_TRUE(stopped);
  EXPECT_EQ(out, "42 ");
  // The possible start of the stop string was held back, not emitted.
  EXPECT_EQ(released[0], "42 ");
  EXPECT_EQ(released[1], "");
  EXPECT_EQ(released[2], "");
}

TEST(StopMatcherTest, ReleasesHeldTextWhenTheMatchFails) {
  StopMatcher matcher({"STOP"});
  std::vector<std::string> released;
  const auto [out, stopped] = Feed(matcher, {"ST", "OPPED? no: STO", "RM"}, &released);
  // "ST"+"OP" completes "STOP" in the second piece.
  EXPECT_TRUE(stopped);
  EXPECT_EQ(out, "");

  StopMatcher other({"STOP"});
  released.clear();
  const auto [out2, stopped2] = Feed(other, {"ST", "ORM ahead", " and S"}, &released);
  EXPECT_FALSE(stopped2);
  EXPECT_EQ(out2, "STORM ahead and S");
  EXPECT_EQ(released[0], "");
  EXPECT_EQ(released[1], "STORM ahead");
  EXPECT_EQ(released[2], " and ");
}

TEST(StopMatcherTest, EarliestOfSeveralStopsWins) {
  StopMatcher matcher({"world", "lo w"});
  const auto [out, stopped] = Feed(matcher, {"hello", " world"});
  EXPECT_TRUE(stopped);
  EXPECT_EQ(out, "hel");
}

TEST(StopMatcherTest, HoldsBackTheLongestPossiblePrefix) {
  StopMatcher matcher({"abcd", "cx"});
  // "c" could start "cx"; "bc" could start "abcd"? no ("abcd" starts with 'a'); "abc" could.
  EXPECT_EQ(matcher.Push("zzabc"), "zz");
  EXPECT_EQ(matcher.Push("d"), "");
  EXPECT_TRUE(matcher.stopped());
}

TEST(StopMatcherTest, IncludeStopInOutputKeepsTheStopString) {
  StopMatcher matcher({"\n\n"}, /*include_stop_in_output=*/true);
  const auto [out, stopped] = Feed(matcher, {"line one\n", "\nline two"});
  EXPECT_TRUE(stopped);
  EXPECT_EQ(out, "line one\n\n");
}

TEST(StopMatcherTest, MultiByteStopAcrossCharacterPieces) {
  // "世界" is E4 B8 96 E7 95 8C; the detokenizer hands over whole characters.
  StopMatcher matcher({"世界"});
  std::vector<std::string> released;
  const auto [out, stopped] = Feed(matcher, {"你好", "世", "界！"}, &released);
  EXPECT_TRUE(stopped);
  EXPECT_EQ(out, "你好");
  EXPECT_EQ(released[1], "");  // "世" held: it may start the stop string
}

TEST(StopMatcherTest, ReleasedTextNeverSplitsACharacter) {
  // Stop strings sharing a lead byte with the text must not cut inside a
  // character: "é" (C3 A9) vs stop "è" (C3 A8).
  StopMatcher matcher({"è!"});
  std::vector<std::string> released;
  const auto [out, stopped] = Feed(matcher, {"café", " crème", " è", "?"}, &released);
  EXPECT_FALSE(stopped);
  EXPECT_EQ(out, "café crème è?");
  for (const std::string& part : released) {
    // Every released piece is valid UTF-8 on its own: no dangling lead byte.
    ASSERT_FALSE(!part.empty() && (static_cast<unsigned char>(part.back()) & 0xC0) == 0xC0) << part;
  }
  EXPECT_EQ(released[2], " ");  // " è" -> "è" held back
}

TEST(StopMatcherTest, EmojiStopSplitOverPieces) {
  StopMatcher matcher({"🙂 bye"});
  const auto [out, stopped] = Feed(matcher, {"ok 🙂", " b", "ye now"});
  EXPECT_TRUE(stopped);
  EXPECT_EQ(out, "ok ");
}

TEST(StopMatcherTest, FlushReleasesAPartialMatchAtTheEnd) {
  StopMatcher matcher({"###"});
  EXPECT_EQ(matcher.Push("title ##"), "title ");
  EXPECT_EQ(matcher.Flush(), "##");
  EXPECT_FALSE(matcher.stopped());
}

TEST(StopMatcherTest, EmptyStopStringsAreIgnored) {
  StopMatcher matcher({"", "x"});
  EXPECT_EQ(matcher.Push("abc"), "abc");
  EXPECT_EQ(matcher.Push("dxe"), "d");
  EXPECT_TRUE(matcher.stopped());
}

TEST(StopMatcherTest, StopAtVeryStart) {
  StopMatcher matcher({"Hello"});
  const auto [out, stopped] = Feed(matcher, {"Hel", "lo there"});
  EXPECT_TRUE(stopped);
  EXPECT_EQ(out, "");
}

}  // namespace
}  // namespace tern::gateway
