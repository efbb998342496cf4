// exp(x) per SIMD lane for the AVX-512 and AVX2 kernels (internal to
// kernels/): x = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite, two-part ln2),
// e^r by the Cephes expf polynomial, then scaling by 2^n so that results
// overflow to inf and underflow through subnormals to 0 as expf does.
// Within 2 ulp of expf; NaN propagates. Inputs below -104 give e^-104, not
// 0: callers that need an exact 0 (masked lanes) mask the result.
//
// Include after <immintrin.h> and the GCC 12.2 -Wuninitialized pragmas (see
// the .cc files); the functions carry their own target attributes.
#ifndef TERN_KERNELS_SIMD_EXP_H_
#define TERN_KERNELS_SIMD_EXP_H_

#include <immintrin.h>

namespace tern::kernels {

namespace avx512 {
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"))) inline __m512 Exp(__m512 x) {
  // Outside [-104, 89] expf is 0 or inf already; the clamp keeps n small.
  // (max/min return their second operand for NaN, so NaN survives.)
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  // vscalefps multiplies by 2^n with IEEE overflow and gradual underflow.
  return _mm512_scalef_ps(y, n);
}
}  // namespace avx512

namespace avx2 {
__attribute__((target("avx2,fma"))) inline __m256 Exp(__m256 x) {
  // max/min return their second operand for NaN, so NaN survives the clamp.
  x = _mm256_min_ps(_mm256_set1_ps(89.0f), _mm256_max_ps(_mm256_set1_ps(-104.0f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n applied as two normal powers of two, 2^floor(n/2) * 2^ceil(n/2), so
  // the result overflows and underflows as expf does. NaN converts to
  // INT_MIN; the product is NaN anyway.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i half = _mm256_srai_epi32(ni, 1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
}
}  // namespace avx2

}  // namespace tern::kernels

#endif  // TERN_KERNELS_SIMD_EXP_H_
