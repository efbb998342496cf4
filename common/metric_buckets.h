// Histogram bucket edges shared by the tiers' metrics: vLLM's, so that a
// panel written for vLLM reads the same on tern (docs/metrics.md).
#ifndef TERN_COMMON_METRIC_BUCKETS_H_
#define TERN_COMMON_METRIC_BUCKETS_H_

#include <vector>

namespace tern::metric_buckets {

// Seconds: time to first token.
inline std::vector<double> TimeToFirstToken() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
}

// Seconds: between consecutive tokens of one sequence.
inline std::vector<double> InterTokenLatency() {
  return {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
          0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
}

// Seconds: end-to-end request latency and queue time.
inline std::vector<double> RequestLatency() {
  return {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
          30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
}

// Tokens per request (prompt or generation): 1, 2, 5, 10, 20, 50, ... up to 500000.
inline std::vector<double> RequestTokens() {
  std::vector<double> edges;
  for (double decade = 1; decade <= 100000; decade *= 10) {
    for (double step : {1.0, 2.0, 5.0}) edges.push_back(decade * step);
  }
  return edges;
}

}  // namespace tern::metric_buckets

#endif  // TERN_COMMON_METRIC_BUCKETS_H_
