// AVX-512 and AVX2 versions of the sampling helpers (sampling.h).
//  - log-softmax statistics: the max in vectors, then exp in f32 (simd_exp.h,
//    within 2 ulp) summed in f64; the log in f64. Fully masked inputs (max
//    -inf) and empty ones go to the reference.
//  - top-N: once N values are held, 16 (8) values at a time are compared with
//    the N-th best, and only lanes that beat it are inserted, in id order, so
//    the result is the reference's exactly.

// GCC 12.2's AVX-512 headers seed many intrinsics with _mm512_undefined_*(),
// which -Wuninitialized reports once they are inlined (GCC bug 105593, fixed
// in 12.3); the pragmas must precede the header to cover it.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cmath>
#include <limits>

#include "kernels/sampling.h"
#include "kernels/simd_exp.h"
#include "kernels/simd_kernels.h"
#include "kernels/top_n_selector.h"

#define TERN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define TERN_AVX2 __attribute__((target("avx2,fma")))

namespace tern::kernels {

namespace avx512 {
namespace {
TERN_AVX512 inline __mmask16 Mask16(size_t count) {
  return static_cast<__mmask16>((1u << (count < 16 ? count : 16)) - 1u);
}
}  // namespace

TERN_AVX512 LogSoftmaxStats LogSoftmaxStatsOf(const float* v, size_t size) {
  const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
  __m512 max_v = neg_inf;
  for (size_t i = 0; i < size; i += 16) {
    // maxps returns its second operand when either is NaN: NaN is skipped,
    // as the reference's comparison skips it.
    max_v = _mm512_max_ps(_mm512_mask_loadu_ps(neg_inf, Mask16(size - i), v + i), max_v);
  }
  const float max_value = _mm512_reduce_max_ps(max_v);
  if (max_value == -INFINITY) return ComputeLogSoftmaxStats(absl::MakeConstSpan(v, size));
  const __m512 max_b = _mm512_set1_ps(max_value);
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (size_t i = 0; i < size; i += 16) {
    const __mmask16 m = Mask16(size - i);
    const __m512 e =
        _mm512_maskz_mov_ps(m, Exp(_mm512_sub_ps(_mm512_mask_loadu_ps(neg_inf, m, v + i), max_b)));
    lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    hi = _mm512_add_pd(
        hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
  }
  const double sum = _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
  return {max_value, max_value + std::log(sum)};
}

TERN_AVX512 size_t TopN(const float* v, size_t size, ScoredToken* out, size_t n) {
  if (n == 0 || size == 0) return 0;
  TopNSelector selector(out, n < size ? n : size);
  size_t i = 0;
  for (; i < size && (!selector.full() || i % 16 != 0); ++i) {
    selector.Offer(static_cast<int32_t>(i), v[i]);
  }
  for (; i + 16 <= size; i += 16) {
    // Ordered compare: NaN lanes are false.
    __mmask16 beats = _mm512_cmp_ps_mask(_mm512_loadu_ps(v + i),
                                         _mm512_set1_ps(selector.threshold()), _CMP_GT_OQ);
    while (beats != 0) {
      const size_t j = static_cast<size_t>(__builtin_ctz(beats));
      beats = static_cast<__mmask16>(beats & (beats - 1));
      selector.Offer(static_cast<int32_t>(i + j), v[i + j]);
    }
  }
  for (; i < size; ++i) selector.Offer(static_cast<int32_t>(i), v[i]);
  return selector.Finish();
}
}  // namespace avx512

namespace avx2 {

TERN_AVX2 LogSoftmaxStats LogSoftmaxStatsOf(const float* v, size_t size) {
  float max_value = -INFINITY;
  __m256 max_v = _mm256_set1_ps(-INFINITY);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) max_v = _mm256_max_ps(_mm256_loadu_ps(v + i), max_v);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, max_v);
  for (float x : lanes) max_value = x > max_value ? x : max_value;
  for (size_t k = i; k < size; ++k) max_value = v[k] > max_value ? v[k] : max_value;
  if (max_value == -INFINITY) return ComputeLogSoftmaxStats(absl::MakeConstSpan(v, size));
  const __m256 max_b = _mm256_set1_ps(max_value);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  for (i = 0; i + 8 <= size; i += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(v + i), max_b));
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  alignas(32) double sums[4];
  _mm256_store_pd(sums, _mm256_add_pd(lo, hi));
  double sum = (sums[0] + sums[1]) + (sums[2] + sums[3]);
  for (; i < size; ++i) sum += std::exp(v[i] - max_value);
  return {max_value, max_value + std::log(sum)};
}

TERN_AVX2 size_t TopN(const float* v, size_t size, ScoredToken* out, size_t n) {
  if (n == 0 || size == 0) return 0;
  TopNSelector selector(out, n < size ? n : size);
  size_t i = 0;
  for (; i < size && (!selector.full() || i % 8 != 0); ++i) {
    selector.Offer(static_cast<int32_t>(i), v[i]);
  }
  for (; i + 8 <= size; i += 8) {
    // Ordered compare: NaN lanes are false.
    unsigned beats = static_cast<unsigned>(_mm256_movemask_ps(
        _mm256_cmp_ps(_mm256_loadu_ps(v + i), _mm256_set1_ps(selector.threshold()), _CMP_GT_OQ)));
    while (beats != 0) {
      const size_t j = static_cast<size_t>(__builtin_ctz(beats));
      beats &= beats - 1;
      selector.Offer(static_cast<int32_t>(i + j), v[i + j]);
    }
  }
  for (; i < size; ++i) selector.Offer(static_cast<int32_t>(i), v[i]);
  return selector.Finish();
}

}  // namespace avx2
}  // namespace tern::kernels
