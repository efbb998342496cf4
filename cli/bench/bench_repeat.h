// Repeated and disturbed measurements for `tern bench engine --repeat N
// --interference`: the median and spread of each figure over the runs, the
// share of a figure lost while a background load competes for the CPUs, and
// that background load itself.
//
// Thread contract: the functions are pure and thread-safe; a BackgroundLoad
// is created and destroyed by one thread.
#ifndef TERN_CLI_BENCH_BENCH_REPEAT_H_
#define TERN_CLI_BENCH_BENCH_REPEAT_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace tern::cli {

struct Spread {
  double median = 0.0;  // the mean of the middle two for an even count
  double min = 0.0;
  double max = 0.0;
  int32_t count = 0;
};
// Zeros when `values` is empty.
Spread SpreadOf(std::vector<double> values);

// One figure over repeated runs: its value in each run, per side (empty when
// that side did not measure it).
struct RepeatedFigure {
  std::string name;  // "decode batch 1 (tok/s)"
  bool higher_is_better = true;
  std::vector<double> tern;
  std::vector<double> llama_cpp;
};

// figure | tern median | tern min..max (spread) | llama.cpp median | ...,
// where spread = (max - min) / median.
std::string FormatRepeatTable(const std::vector<RepeatedFigure>& figures);

// The share of the clean figure lost under load: 1 - loaded/clean when
// higher is better, 1 - clean/loaded otherwise (negative: it gained).
double LossUnderLoad(double clean, double loaded, bool higher_is_better);

// Per figure (matched by name, in `clean`'s order): medians clean and loaded
// and the loss, for tern and llama.cpp, and "met" when tern lost no larger a
// share than llama.cpp (its ratio to llama.cpp held up), "NOT met"
// otherwise, "n/a" without llama.cpp's figure.
std::string FormatInterferenceTable(const std::vector<RepeatedFigure>& clean,
                                    const std::vector<RepeatedFigure>& loaded);

// `threads` unpinned threads that compute until the object is destroyed,
// standing in for another busy process on the machine.
class BackgroundLoad {
 public:
  explicit BackgroundLoad(int32_t threads);
  ~BackgroundLoad();  // stops and joins the threads
  BackgroundLoad(const BackgroundLoad&) = delete;
  BackgroundLoad& operator=(const BackgroundLoad&) = delete;

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_BENCH_REPEAT_H_
