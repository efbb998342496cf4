// AVX-512 matmuls over 8-bit weights (int8 offset bytes, FP8 E4M3): each
// weight is widened to f32 in registers and multiplied in f32 FMA, the row
// scale applied once per output. Compiled for AVX-512 through function target
// attributes; dispatch.cc calls them only where the CPU has the features.

// GCC 12.2's AVX-512 headers seed many intrinsics with _mm512_undefined_*(),
// which -Wuninitialized reports once they are inlined (GCC bug 105593); the
// pragmas must precede the header to cover it.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/simd_kernels.h"

#define TERN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))

namespace tern::kernels::avx512 {
namespace {

// Decode (n == 1) streams 4 weight rows at once, 32 columns per step with two
// accumulators per row (8 independent FMA chains hide the FMA latency behind
// the widening work), and prefetches the next 4 rows into L2 so the row
// streams keep enough misses in flight to reach the streaming bandwidth.
// Several tokens (n > 1) widen a panel of 4 rows x kPanelCols columns into
// f32 once (16 KiB of stack, in L1), reused by every tile of up to 6 tokens
// (4 x 6 = 24 accumulators, 4 weight vectors: 28 of 32 zmm registers); wide
// panels keep the per-panel horizontal sums a small part of the work.
constexpr size_t kRows = 4;
constexpr size_t kPanelCols = 1024;
constexpr size_t kTileTokens = 6;

TERN_AVX512 inline __mmask16 Mask16(size_t count) {
  return static_cast<__mmask16>((1u << std::min<size_t>(count, 16)) - 1u);
}

// Offset bytes (q + 128) to f32: flipping the top bit gives q as a signed
// byte, sign-extended to 32 bits and converted exactly.
struct Int8Codec {
  static constexpr float kUnit = 1.0f;
  TERN_AVX512 static __m512 Widen(__m128i bytes) {
    const __m128i q = _mm_xor_si128(bytes, _mm_set1_epi8(static_cast<char>(0x80)));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
  }
};

// E4M3 to f32 through f16, exactly: sign-extending the byte to 16 bits and
// shifting left by 7 puts the exponent and mantissa in the f16 fields and the
// sign in bits 15 and 14; clearing bit 14 leaves an f16 equal to the E4M3
// value times 2^-8 (the exponent biases are 15 and 7; E4M3 subnormals become
// f16 subnormals, which vcvtph2ps widens exactly). kUnit puts the 2^8 back
// into the row scale, so no multiply per weight.
struct Fp8Codec {
  static constexpr float kUnit = 256.0f;
  TERN_AVX512 static __m512 Widen(__m128i bytes) {
    __m256i h = _mm256_slli_epi16(_mm256_cvtepi8_epi16(bytes), 7);
    h = _mm256_and_si256(h, _mm256_set1_epi16(static_cast<short>(0xbfff)));
    return _mm512_cvtph_ps(h);
  }
};

template <typename Codec>
TERN_AVX512 inline __m512 Load16(const uint8_t* p) {
  return Codec::Widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
template <typename Codec>
TERN_AVX512 inline __m512 Load16Masked(const uint8_t* p, __mmask16 m) {
  // Masked-off bytes read as 0, which both codecs widen to a finite value;
  // the matching x lanes are masked to 0 too.
  return Codec::Widen(_mm_maskz_loadu_epi8(m, p));
}

// One GEMV group: y[r] = scale[r] * W[r] . x for up to kRows rows (rows past
// `count` repeat the last row and are not stored).
template <typename Codec>
TERN_AVX512 void GemvGroup(const uint8_t* w, const float* scales, size_t count, size_t cols,
                           const float* x, bool prefetch_next, float* y) {
  const uint8_t* p[kRows];
  for (size_t i = 0; i < kRows; ++i) p[i] = w + std::min(i, count - 1) * cols;
  const size_t next = prefetch_next ? kRows * cols : 0;
  __m512 acc0[kRows], acc1[kRows];
  for (size_t i = 0; i < kRows; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
  size_t c = 0;
  for (; c + 32 <= cols; c += 32) {
    const __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16);
#pragma GCC unroll 4
    for (size_t i = 0; i < kRows; ++i) {
      if ((c & 63) == 0) _mm_prefetch(reinterpret_cast<const char*>(p[i] + c) + next, _MM_HINT_T1);
      acc0[i] = _mm512_fmadd_ps(Load16<Codec>(p[i] + c), x0, acc0[i]);
      acc1[i] = _mm512_fmadd_ps(Load16<Codec>(p[i] + c + 16), x1, acc1[i]);
    }
  }
  for (; c < cols; c += 16) {
    const __mmask16 m = Mask16(cols - c);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + c);
    for (size_t i = 0; i < kRows; ++i) {
      acc0[i] = _mm512_fmadd_ps(Load16Masked<Codec>(p[i] + c, m), xv, acc0[i]);
    }
  }
  for (size_t i = 0; i < count; ++i) {
    y[i] = scales[i] * Codec::kUnit * _mm512_reduce_add_ps(_mm512_add_ps(acc0[i], acc1[i]));
  }
}

// y[t, i] += panel row i . x[t] over `width` columns, for T tokens (x and y
// rows `ldx` / `ldy` apart) and the first `count` rows. T is a template
// argument so the T x kRows accumulators stay in registers.
template <size_t T>
TERN_AVX512 void PanelTile(const float (*panel)[kPanelCols], size_t width, const float* x,
                           size_t ldx, float* y, size_t ldy, size_t count) {
  __m512 acc[T][kRows];
  for (size_t t = 0; t < T; ++t) {
    for (size_t i = 0; i < kRows; ++i) acc[t][i] = _mm512_setzero_ps();
  }
  size_t c = 0;
  for (; c + 16 <= width; c += 16) {
    __m512 wv[kRows];
    for (size_t i = 0; i < kRows; ++i) wv[i] = _mm512_load_ps(&panel[i][c]);
#pragma GCC unroll 6
    for (size_t t = 0; t < T; ++t) {
      const __m512 xv = _mm512_loadu_ps(x + t * ldx + c);
      for (size_t i = 0; i < kRows; ++i) acc[t][i] = _mm512_fmadd_ps(wv[i], xv, acc[t][i]);
    }
  }
  if (c < width) {
    const __mmask16 m = Mask16(width - c);
    __m512 wv[kRows];
    for (size_t i = 0; i < kRows; ++i) wv[i] = _mm512_load_ps(&panel[i][c]);
    for (size_t t = 0; t < T; ++t) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * ldx + c);
      for (size_t i = 0; i < kRows; ++i) acc[t][i] = _mm512_fmadd_ps(wv[i], xv, acc[t][i]);
    }
  }
  for (size_t t = 0; t < T; ++t) {
    for (size_t i = 0; i < count; ++i) y[t * ldy + i] += _mm512_reduce_add_ps(acc[t][i]);
  }
}

// Several tokens: columns in panels of kPanelCols (the outer loop, so each
// pass's activations, n x kPanelCols floats, stay in L2 while every row
// group uses them), rows in groups of kRows widened once per panel, y
// accumulated across panels then scaled.
template <typename Codec>
TERN_AVX512 void MatmulTokens(const uint8_t* w, const float* scales, size_t rows, size_t cols,
                              const float* x, size_t n, float* y) {
  alignas(64) float panel[kRows][kPanelCols];
  std::memset(y, 0, n * rows * sizeof(float));
  for (size_t c0 = 0; c0 < cols; c0 += kPanelCols) {
    const size_t width = std::min(kPanelCols, cols - c0);
    for (size_t r0 = 0; r0 < rows; r0 += kRows) {
      const size_t count = std::min(kRows, rows - r0);
      for (size_t i = 0; i < kRows; ++i) {
        const uint8_t* row = w + (r0 + std::min(i, count - 1)) * cols + c0;
        size_t c = 0;
        for (; c + 16 <= width; c += 16) _mm512_store_ps(&panel[i][c], Load16<Codec>(row + c));
        if (c < width)
          _mm512_store_ps(&panel[i][c], Load16Masked<Codec>(row + c, Mask16(width - c)));
      }
      for (size_t t0 = 0; t0 < n; t0 += kTileTokens) {
        const float* xt = x + t0 * cols + c0;
        float* yt = y + t0 * rows + r0;
        switch (std::min(kTileTokens, n - t0)) {
          case 1:
            PanelTile<1>(panel, width, xt, cols, yt, rows, count);
            break;
          case 2:
            PanelTile<2>(panel, width, xt, cols, yt, rows, count);
            break;
          case 3:
            PanelTile<3>(panel, width, xt, cols, yt, rows, count);
            break;
          case 4:
            PanelTile<4>(panel, width, xt, cols, yt, rows, count);
            break;
          case 5:
            PanelTile<5>(panel, width, xt, cols, yt, rows, count);
            break;
          default:
            PanelTile<6>(panel, width, xt, cols, yt, rows, count);
            break;
        }
      }
    }
  }
  for (size_t t = 0; t < n; ++t) {
    float* yt = y + t * rows;
    for (size_t r = 0; r < rows; ++r) yt[r] *= scales[r] * Codec::kUnit;
  }
}

template <typename Codec>
TERN_AVX512 void Matmul(const uint8_t* w, const float* scales, size_t rows, size_t cols,
                        const float* x, size_t n, float* y) {
  if (rows == 0 || n == 0) return;
  if (n == 1) {
    for (size_t r0 = 0; r0 < rows; r0 += kRows) {
      const size_t count = std::min(kRows, rows - r0);
      GemvGroup<Codec>(w + r0 * cols, scales + r0, count, cols, x, r0 + 2 * kRows <= rows, y + r0);
    }
    return;
  }
  MatmulTokens<Codec>(w, scales, rows, cols, x, n, y);
}

}  // namespace

void MatmulInt8(const uint8_t* w, const float* row_scales, size_t rows, size_t cols, const float* x,
                size_t n, float* y) {
  Matmul<Int8Codec>(w, row_scales, rows, cols, x, n, y);
}

void MatmulFp8(const uint8_t* w, const float* row_scales, size_t rows, size_t cols, const float* x,
               size_t n, float* y) {
  Matmul<Fp8Codec>(w, row_scales, rows, cols, x, n, y);
}

}  // namespace tern::kernels::avx512
