// Scalar reference helpers for sampling over a vocabulary-sized vector of
// logits: log-softmax statistics and top-N selection. The vector levels in
// dispatch.h (KernelSet::log_softmax_stats, top_n) are checked against these.
//
// Pure functions over caller-owned spans: no allocation, no threads, no I/O;
// safe to call from any thread.
#ifndef TERN_KERNELS_SAMPLING_H_
#define TERN_KERNELS_SAMPLING_H_

#include <cstddef>
#include <cstdint>

#include "absl/types/span.h"

namespace tern::kernels {

// log softmax(v)[i] = v[i] - log_sum_exp.
struct LogSoftmaxStats {
  // The largest value (-inf for an empty vector or one of only -inf).
  float max = 0.0f;
  // log(sum_i exp(v[i])) = max + log(sum_i exp(v[i] - max)), in f64; -inf
  // when every value is -inf (or v is empty), NaN when any value is NaN.
  // -inf entries (masked tokens) contribute nothing.
  double log_sum_exp = 0.0;
};

// Reference: exp and sum in f64.
LogSoftmaxStats ComputeLogSoftmaxStats(absl::Span<const float> v);

// A token id and its value (a logit, a log-probability).
struct ScoredToken {
  int32_t id = 0;
  float value = 0.0f;
};

// Writes the min(out.size(), v.size()) largest values of v with their
// indices into out, largest first; equal values keep the lower id first.
// NaN values are never selected (they are not greater than anything).
// Returns the number written: min(out.size(), number of non-NaN values).
// O(v.size()) when few values beat the running N-th best (the usual case);
// at worst O(v.size() * min(N, 32)) for small N, O(v.size() log N) beyond.
size_t SelectTopN(absl::Span<const float> v, absl::Span<ScoredToken> out);

}  // namespace tern::kernels

#endif  // TERN_KERNELS_SAMPLING_H_
