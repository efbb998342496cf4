// AVX-512 element-wise kernels: RMSNorm, SiLU-gated multiply, softmax, and
// the f32 dot product / axpy / add that attention and residuals use. Tails
// are handled with masked loads and stores, never by reading past the end.

// GCC 12.2's AVX-512 headers seed many intrinsics with _mm512_undefined_*(),
// which -Wuninitialized reports once they are inlined (GCC bug 105593, fixed
// in 12.3); the pragmas must precede the header to cover it.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cmath>

#include "kernels/simd_exp.h"
#include "kernels/simd_kernels.h"

#define TERN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))

namespace tern::kernels::avx512 {
namespace {

TERN_AVX512 inline __mmask16 Mask16(size_t count) {
  return static_cast<__mmask16>((1u << (count < 16 ? count : 16)) - 1u);
}

// Adds the squares of 16 floats, widened to f64, into two f64 accumulators.
TERN_AVX512 inline void AddSquares(__m512 v, __m512d& lo, __m512d& hi) {
  const __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
  const __m512d b =
      _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  lo = _mm512_fmadd_pd(a, a, lo);
  hi = _mm512_fmadd_pd(b, b, hi);
}

TERN_AVX512 inline void AddWidened(__m512 v, __m512d& lo, __m512d& hi) {
  lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
  hi = _mm512_add_pd(
      hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

}  // namespace

TERN_AVX512 void RmsNorm(const float* x, const float* weight, size_t size, float eps, float* out) {
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (size_t i = 0; i < size; i += 16)
    AddSquares(_mm512_maskz_loadu_ps(Mask16(size - i), x + i), lo, hi);
  const double sum_sq = _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
  const float mean_sq = static_cast<float>(sum_sq / static_cast<double>(size));
  const __m512 inv_rms = _mm512_set1_ps(1.0f / std::sqrt(mean_sq + eps));
  for (size_t i = 0; i < size; i += 16) {
    const __mmask16 m = Mask16(size - i);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv_rms);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, weight + i)));
  }
}

TERN_AVX512 void SiluMul(float* gate, const float* up, size_t size) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (size_t i = 0; i < size; i += 16) {
    const __mmask16 m = Mask16(size - i);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 silu =
        _mm512_div_ps(g, _mm512_add_ps(one, Exp(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    _mm512_mask_storeu_ps(gate + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, up + i)));
  }
}

TERN_AVX512 void Softmax(float* v, size_t size) {
  if (size == 0) return;
  __m512 max_v = _mm512_set1_ps(v[0]);
  for (size_t i = 0; i < size; i += 16) {
    max_v = _mm512_mask_max_ps(max_v, Mask16(size - i), max_v,
                               _mm512_maskz_loadu_ps(Mask16(size - i), v + i));
  }
  const __m512 max_b = _mm512_set1_ps(_mm512_reduce_max_ps(max_v));
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (size_t i = 0; i < size; i += 16) {
    const __mmask16 m = Mask16(size - i);
    // Masked-off lanes hold exp(-inf) = 0, so they add nothing.
    const __m512 x = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, v + i);
    const __m512 e = Exp(_mm512_sub_ps(x, max_b));
    _mm512_mask_storeu_ps(v + i, m, e);
    AddWidened(e, lo, hi);
  }
  const __m512 inv =
      _mm512_set1_ps(static_cast<float>(1.0 / _mm512_reduce_add_pd(_mm512_add_pd(lo, hi))));
  for (size_t i = 0; i < size; i += 16) {
    const __mmask16 m = Mask16(size - i);
    _mm512_mask_storeu_ps(v + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, v + i), inv));
  }
}

TERN_AVX512 float DotF32(const float* a, const float* b, size_t size) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= size; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i < size; i += 16) {
    const __mmask16 m = Mask16(size - i);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

TERN_AVX512 void Axpy(float scale, const float* x, float* out, size_t size) {
  const __m512 s = _mm512_set1_ps(scale);
  for (size_t i = 0; i < size; i += 16) {
    const __mmask16 m = Mask16(size - i);
    _mm512_mask_storeu_ps(
        out + i, m,
        _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, out + i)));
  }
}

TERN_AVX512 void Add(float* acc, const float* x, size_t size) {
  for (size_t i = 0; i < size; i += 16) {
    const __mmask16 m = Mask16(size - i);
    _mm512_mask_storeu_ps(
        acc + i, m,
        _mm512_add_ps(_mm512_maskz_loadu_ps(m, acc + i), _mm512_maskz_loadu_ps(m, x + i)));
  }
}

}  // namespace tern::kernels::avx512
