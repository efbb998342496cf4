// A sampler written the plain way, for tests and benchmarks to hold tern's
// against: every candidate sorted. SampleToken must draw exactly what it
// draws (tests/worker/model/sampler_test.cc); tests/bench/sampler_bench.cc
// times both.
#ifndef TERN_TESTS_WORKER_MODEL_SORTING_SAMPLER_H_
#define TERN_TESTS_WORKER_MODEL_SORTING_SAMPLER_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "worker/model/sampler.h"

namespace tern::worker {

// The draw written the plain way: every candidate sorted (probability
// descending, lower id first), top-k, then the shortest prefix reaching top_p
// of the mass, then min-p; one walk over the kept ids in id order.
inline int32_t SortingReferenceDraw(std::vector<float> logits, const SamplingOptions& o,
                                    int64_t position) {
  for (float& l : logits) l *= 1.0f / o.temperature;
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<float> p(logits.size());
  for (size_t i = 0; i < p.size(); ++i) p[i] = std::exp(logits[i] - max_logit);
  std::vector<int32_t> order(p.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  std::sort(order.begin(), order.end(),
            [&p](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  size_t kept = order.size();
  if (o.top_k > 0) kept = std::min(kept, static_cast<size_t>(o.top_k));
  if (o.top_p < 1.0f) {
    double mass = 0.0;
    for (size_t i = 0; i < kept; ++i) mass += p[order[i]];
    const double target = static_cast<double>(o.top_p) * mass;
    double cumulative = 0.0;
    size_t i = 0;
    while (i < kept && cumulative < target) cumulative += p[order[i++]];
    kept = std::max<size_t>(i, 1);
  }
  std::vector<bool> in(p.size(), false);
  for (size_t i = 0; i < kept; ++i) in[order[i]] = p[order[i]] >= o.min_p;
  double mass = 0.0;
  for (size_t id = 0; id < p.size(); ++id) mass += in[id] ? p[id] : 0.0;
  const double target = SamplerUniform(o.seed, position) * mass;
  double cumulative = 0.0;
  int32_t last = 0;
  for (size_t id = 0; id < p.size(); ++id) {
    if (!in[id]) continue;
    last = static_cast<int32_t>(id);
    cumulative += p[id];
    if (target < cumulative) return last;
  }
  return last;
}

}  // namespace tern::worker

#endif  // TERN_TESTS_WORKER_MODEL_SORTING_SAMPLER_H_
