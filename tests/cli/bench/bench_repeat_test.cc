#include "cli/bench/bench_repeat.h"

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "cli/bench/bench_relative.h"
#include "gtest/gtest.h"

namespace tern::cli {
namespace {

// The cells of the table line whose first cell is `name`.
std::vector<std::string> Row(const std::string& table, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(table, '\n')) {
    std::vector<std::string> cells;
    for (absl::string_view cell : absl::StrSplit(line, '|')) {
      cells.emplace_back(absl::StripAsciiWhitespace(cell));
    }
    if (!cells.empty() && cells[0] == name) return cells;
  }
  return {};
}

TEST(SpreadTest, MedianOfOddAndEvenCountsWithMinAndMax) {
  const Spread odd = SpreadOf({3.0, 1.0, 2.0});
  EXPECT_EQ(odd.median, 2.0);
  EXPECT_EQ(odd.min, 1.0);
  EXPECT_EQ(odd.max, 3.0);
  EXPECT_EQ(odd.count, 3);
  EXPECT_EQ(SpreadOf({4.0, 1.0, 2.0, 3.0}).median, 2.5);
  EXPECT_EQ(SpreadOf({}).count, 0);
}

TEST(LossUnderLoadTest, RatesLoseWhenTheyFallAndTimesWhenTheyGrow) {
  EXPECT_DOUBLE_EQ(LossUnderLoad(10.0, 7.0, /*higher_is_better=*/true), 0.3);
  EXPECT_DOUBLE_EQ(LossUnderLoad(1.0, 2.0, /*higher_is_better=*/false), 0.5);
  EXPECT_LT(LossUnderLoad(10.0, 11.0, /*higher_is_better=*/true), 0.0);
}

TEST(RepeatTableTest, ShowsMedianRangeAndSpreadPerSide) {
  RepeatedFigure f{"decode batch 1 (tok/s)", true, {10.0, 12.0, 11.0}, {}};
  const std::string table = FormatRepeatTable({f});
  const std::vector<std::string> row = Row(table, "decode batch 1 (tok/s)");
  ASSERT_EQ(row.size(), 5u) << table;
  EXPECT_EQ(row[1], "11.0");
  EXPECT_EQ(row[2], "10.0..12.0 (18.2%)");
  EXPECT_EQ(row[3], "n/a");
}

TEST(InterferenceTableTest, MetOnlyWhenTernLosesNoMoreThanLlamaCpp) {
  const std::vector<RepeatedFigure> clean = {{"decode batch 1 (tok/s)", true, {10.0}, {5.0}},
                                             {"prefill 512 (tok/s)", true, {100.0}, {50.0}},
                                             {"TTFT 512 cold (s)", false, {1.0}, {}}};
  const std::vector<RepeatedFigure> loaded = {{"prefill 512 (tok/s)", true, {90.0}, {40.0}},
                                              {"decode batch 1 (tok/s)", true, {6.0}, {4.0}},
                                              {"TTFT 512 cold (s)", false, {1.25}, {}}};
  const std::string table = FormatInterferenceTable(clean, loaded);
  const std::vector<std::string> decode = Row(table, "decode batch 1 (tok/s)");
  ASSERT_EQ(decode.size(), 8u) << table;
  EXPECT_EQ(decode[3], "40.0%");
  EXPECT_EQ(decode[6], "20.0%");
  EXPECT_EQ(decode[7], "NOT met");
  const std::vector<std::string> prefill = Row(table, "prefill 512 (tok/s)");
  ASSERT_EQ(prefill.size(), 8u) << table;
  EXPECT_EQ(prefill[3], "10.0%");
  EXPECT_EQ(prefill[7], "met");
  const std::vector<std::string> ttft = Row(table, "TTFT 512 cold (s)");
  ASSERT_EQ(ttft.size(), 8u) << table;
  EXPECT_EQ(ttft[3], "20.0%");
  EXPECT_EQ(ttft[7], "n/a");
}

TEST(RelativeTableTest, EachServerAsAShareOfTheInProcessFigure) {
  RelativeFigure decode{"decode batch 1 (tok/s)", {10.0, 9.0, 11.0}, {{9.5, 9.5, 9.5}, {5.0}}};
  const std::string table = FormatRelativeTable({decode}, {"API", "llama-server"});
  EXPECT_NE(table.find("API / in-process"), std::string::npos) << table;
  const std::vector<std::string> row = Row(table, "decode batch 1 (tok/s)");
  ASSERT_EQ(row.size(), 6u) << table;
  EXPECT_EQ(row[1], "10.0 (9.00..11.0)");
  EXPECT_EQ(row[3], "95.0%");
  EXPECT_EQ(row[4], "5.00");
  EXPECT_EQ(row[5], "50.0%");
}

TEST(RelativeTableTest, WithoutTheEngineLaterServersCompareWithTheFirst) {
  RelativeFigure decode{"decode batch 1 (tok/s)", {}, {{8.0}, {4.0}}};
  const std::string table = FormatRelativeTable({decode}, {"API", "other"});
  EXPECT_EQ(table.find("in-process"), std::string::npos) << table;
  const std::vector<std::string> row = Row(table, "decode batch 1 (tok/s)");
  ASSERT_EQ(row.size(), 4u) << table;
  EXPECT_EQ(row[3], "50.0%");
}

TEST(BackgroundLoadTest, StopsItsThreadsWhenDestroyed) {
  // Destruction joins; a thread that never saw the stop flag would hang here.
  BackgroundLoad load(2);
}

}  // namespace
}  // namespace tern::cli
