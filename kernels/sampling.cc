#include "kernels/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/top_n_selector.h"

namespace tern::kernels {

LogSoftmaxStats ComputeLogSoftmaxStats(absl::Span<const float> v) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  LogSoftmaxStats stats;
  stats.max = kNegInf;
  for (float x : v) stats.max = x > stats.max ? x : stats.max;
  if (stats.max == kNegInf) {
    // Empty or fully masked; a NaN among -inf still poisons the result.
    bool nan = false;
    for (float x : v) nan = nan || std::isnan(x);
    stats.log_sum_exp = nan ? std::numeric_limits<double>::quiet_NaN() : kNegInf;
    return stats;
  }
  // x - max <= 0, so exp never overflows (+inf max gives NaN: inf - inf).
  double sum = 0.0;
  for (float x : v) sum += std::exp(static_cast<double>(x) - stats.max);
  stats.log_sum_exp = stats.max + std::log(sum);
  return stats;
}

size_t SelectTopN(absl::Span<const float> v, absl::Span<ScoredToken> out) {
  TopNSelector selector(out.data(), std::min(out.size(), v.size()));
  if (out.empty() || v.empty()) return 0;
  for (size_t i = 0; i < v.size(); ++i) selector.Offer(static_cast<int32_t>(i), v[i]);
  return selector.Finish();
}

}  // namespace tern::kernels
