#include "cli/bench/bench_repeat.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/bench/bench_report.h"

namespace tern::cli {
namespace {

std::string MedianCell(const std::vector<double>& values) {
  if (values.empty()) return "n/a";
  return FormatFigureValue(SpreadOf(values).median);
}

std::string RangeCell(const std::vector<double>& values) {
  if (values.empty()) return "n/a";
  const Spread s = SpreadOf(values);
  const double spread = s.median != 0.0 ? (s.max - s.min) / s.median : 0.0;
  return absl::StrFormat("%s..%s (%.1f%%)", FormatFigureValue(s.min), FormatFigureValue(s.max),
                         100.0 * spread);
}

std::string LossCell(const std::optional<double>& loss) {
  return loss ? absl::StrFormat("%.1f%%", 100.0 * *loss) : std::string("n/a");
}

std::optional<double> MedianLoss(const std::vector<double>& clean,
                                 const std::vector<double>& loaded, bool higher_is_better) {
  if (clean.empty() || loaded.empty()) return std::nullopt;
  const double c = SpreadOf(clean).median, l = SpreadOf(loaded).median;
  if (c <= 0.0 || l <= 0.0) return std::nullopt;
  return LossUnderLoad(c, l, higher_is_better);
}

}  // namespace

Spread SpreadOf(std::vector<double> values) {
  Spread s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  s.count = static_cast<int32_t>(n);
  s.min = values.front();
  s.max = values.back();
  s.median = n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2.0;
  return s;
}

std::string FormatRepeatTable(const std::vector<RepeatedFigure>& figures) {
  std::vector<std::vector<std::string>> cells = {{"figure", "tern median", "tern min..max (spread)",
                                                  "llama.cpp median",
                                                  "llama.cpp min..max (spread)"}};
  for (const RepeatedFigure& f : figures) {
    cells.push_back({f.name, MedianCell(f.tern), RangeCell(f.tern), MedianCell(f.llama_cpp),
                     RangeCell(f.llama_cpp)});
  }
  return FormatTable(cells);
}

double LossUnderLoad(double clean, double loaded, bool higher_is_better) {
  return higher_is_better ? 1.0 - loaded / clean : 1.0 - clean / loaded;
}

std::string FormatInterferenceTable(const std::vector<RepeatedFigure>& clean,
                                    const std::vector<RepeatedFigure>& loaded) {
  std::vector<std::vector<std::string>> cells = {
      {"figure", "tern clean", "tern loaded", "tern loss", "llama.cpp clean", "llama.cpp loaded",
       "llama.cpp loss", "tern loss <= llama.cpp loss"}};
  for (const RepeatedFigure& c : clean) {
    const auto match = std::find_if(loaded.begin(), loaded.end(),
                                    [&](const RepeatedFigure& l) { return l.name == c.name; });
    const RepeatedFigure empty;
    const RepeatedFigure& l = match == loaded.end() ? empty : *match;
    const std::optional<double> ours = MedianLoss(c.tern, l.tern, c.higher_is_better);
    const std::optional<double> theirs = MedianLoss(c.llama_cpp, l.llama_cpp, c.higher_is_better);
    std::string verdict = "n/a";
    if (ours && theirs) verdict = *ours <= *theirs ? "met" : "NOT met";
    cells.push_back({c.name, MedianCell(c.tern), MedianCell(l.tern), LossCell(ours),
                     MedianCell(c.llama_cpp), MedianCell(l.llama_cpp), LossCell(theirs), verdict});
  }
  return FormatTable(cells);
}

BackgroundLoad::BackgroundLoad(int32_t threads) {
  for (int32_t i = 0; i < threads; ++i) {
    threads_.emplace_back([this] {
      // Arithmetic on registers and one cache line: it takes CPU time from
      // whatever shares its core, not memory bandwidth.
      double x = 1.0;
      while (!stop_.load(std::memory_order_relaxed)) {
        for (int k = 0; k < 4096; ++k) x = x * 1.0000001 + 1e-9;
      }
      volatile double sink = x;
      (void)sink;
    });
  }
}

BackgroundLoad::~BackgroundLoad() {
  stop_.store(true, std::memory_order_relaxed);
  for (std::thread& t : threads_) t.join();
}

}  // namespace tern::cli
