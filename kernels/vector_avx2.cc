// AVX2 + FMA element-wise kernels (see vector_avx512.cc); tails of fewer than
// 8 values run in scalar code with the same formulas.
#include <immintrin.h>

#include <cmath>

#include "kernels/simd_exp.h"
#include "kernels/simd_kernels.h"

#define TERN_AVX2 __attribute__((target("avx2,fma")))

namespace tern::kernels::avx2 {
namespace {

TERN_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

TERN_AVX2 inline double HorizontalSum(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}

}  // namespace

TERN_AVX2 void RmsNorm(const float* x, const float* weight, size_t size, float eps, float* out) {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    lo = _mm256_fmadd_pd(a, a, lo);
    hi = _mm256_fmadd_pd(b, b, hi);
  }
  double sum_sq = HorizontalSum(_mm256_add_pd(lo, hi));
  for (size_t j = i; j < size; ++j) sum_sq += static_cast<double>(x[j]) * x[j];
  const float mean_sq = static_cast<float>(sum_sq / static_cast<double>(size));
  const float inv = 1.0f / std::sqrt(mean_sq + eps);
  const __m256 inv_rms = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= size; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), inv_rms);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(v, _mm256_loadu_ps(weight + i)));
  }
  for (; i < size; ++i) out[i] = (x[i] * inv) * weight[i];
}

TERN_AVX2 void SiluMul(float* gate, const float* up, size_t size) {
  const __m256 one = _mm256_set1_ps(1.0f);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = Exp(_mm256_sub_ps(_mm256_setzero_ps(), g));
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  for (; i < size; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

TERN_AVX2 void Softmax(float* v, size_t size) {
  if (size == 0) return;
  __m256 max_v = _mm256_set1_ps(v[0]);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) max_v = _mm256_max_ps(max_v, _mm256_loadu_ps(v + i));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(max_v), _mm256_extractf128_ps(max_v, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  float max_value = _mm_cvtss_f32(m4);
  for (; i < size; ++i) max_value = v[i] > max_value ? v[i] : max_value;
  const __m256 max_b = _mm256_set1_ps(max_value);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  for (i = 0; i + 8 <= size; i += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(v + i), max_b));
    _mm256_storeu_ps(v + i, e);
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  double sum = HorizontalSum(_mm256_add_pd(lo, hi));
  for (; i < size; ++i) {
    v[i] = std::exp(v[i] - max_value);
    sum += v[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  const __m256 inv_b = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= size; i += 8)
    _mm256_storeu_ps(v + i, _mm256_mul_ps(_mm256_loadu_ps(v + i), inv_b));
  for (; i < size; ++i) v[i] *= inv;
}

TERN_AVX2 float DotF32(const float* a, const float* b, size_t size) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= size; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  if (i + 8 <= size) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    i += 8;
  }
  float sum = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < size; ++i) sum += a[i] * b[i];
  return sum;
}

TERN_AVX2 void Axpy(float scale, const float* x, float* out, size_t size) {
  const __m256 s = _mm256_set1_ps(scale);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(s, _mm256_loadu_ps(x + i), _mm256_loadu_ps(out + i)));
  }
  for (; i < size; ++i) out[i] += scale * x[i];
}

TERN_AVX2 void Add(float* acc, const float* x, size_t size) {
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), _mm256_loadu_ps(x + i)));
  }
  for (; i < size; ++i) acc[i] += x[i];
}

}  // namespace tern::kernels::avx2
