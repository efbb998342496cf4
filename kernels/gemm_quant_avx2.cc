// AVX2 matmuls over 8-bit weights (int8 offset bytes, FP8 E4M3): each weight
// is widened to f32 in registers and multiplied in f32 FMA, the row scale
// applied once per output. The same scheme as gemm_quant_avx512.cc with
// 8-wide vectors; AVX2 has no masked byte loads, so the last partial chunk of
// a row goes through small zero-padded copies.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/simd_kernels.h"

#define TERN_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace tern::kernels::avx2 {
namespace {

constexpr size_t kRows = 4;
constexpr size_t kPanelCols = 1024;  // 4 x 1024 f32 = 16 KiB of stack
constexpr size_t kTileTokens = 3;    // 3 tokens x 4 rows = 12 of 16 ymm registers

// See gemm_quant_avx512.cc for both widenings.
struct Int8Codec {
  static constexpr float kUnit = 1.0f;
  TERN_AVX2 static __m256 Widen(__m128i bytes) {
    const __m128i q = _mm_xor_si128(bytes, _mm_set1_epi8(static_cast<char>(0x80)));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
  }
};
struct Fp8Codec {
  static constexpr float kUnit = 256.0f;
  TERN_AVX2 static __m256 Widen(__m128i bytes) {
    __m128i h = _mm_slli_epi16(_mm_cvtepi8_epi16(bytes), 7);
    h = _mm_and_si128(h, _mm_set1_epi16(static_cast<short>(0xbfff)));
    return _mm256_cvtph_ps(h);
  }
};

// 8 weights from p (only the low 8 bytes of the load are used).
template <typename Codec>
TERN_AVX2 inline __m256 Load8(const uint8_t* p) {
  return Codec::Widen(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
// The last `count` < 8 weights, zero-padded (0 widens to a finite value).
template <typename Codec>
TERN_AVX2 inline __m256 LoadTail(const uint8_t* p, size_t count) {
  alignas(16) uint8_t bytes[16] = {};
  std::memcpy(bytes, p, count);
  return Codec::Widen(_mm_load_si128(reinterpret_cast<const __m128i*>(bytes)));
}
TERN_AVX2 inline __m256 LoadTailF32(const float* p, size_t count) {
  alignas(32) float v[8] = {};
  std::memcpy(v, p, count * sizeof(float));
  return _mm256_load_ps(v);
}

TERN_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <typename Codec>
TERN_AVX2 void GemvGroup(const uint8_t* w, const float* scales, size_t count, size_t cols,
                         const float* x, bool prefetch_next, float* y) {
  const uint8_t* p[kRows];
  for (size_t i = 0; i < kRows; ++i) p[i] = w + std::min(i, count - 1) * cols;
  const size_t next = prefetch_next ? kRows * cols : 0;
  __m256 acc0[kRows], acc1[kRows];
  for (size_t i = 0; i < kRows; ++i) acc0[i] = acc1[i] = _mm256_setzero_ps();
  size_t c = 0;
  for (; c + 16 <= cols; c += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8);
#pragma GCC unroll 4
    for (size_t i = 0; i < kRows; ++i) {
      if ((c & 63) == 0) _mm_prefetch(reinterpret_cast<const char*>(p[i] + c) + next, _MM_HINT_T1);
      acc0[i] = _mm256_fmadd_ps(Load8<Codec>(p[i] + c), x0, acc0[i]);
      acc1[i] = _mm256_fmadd_ps(Load8<Codec>(p[i] + c + 8), x1, acc1[i]);
    }
  }
  for (; c < cols; c += 8) {
    const size_t left = std::min<size_t>(8, cols - c);
    const __m256 xv = left == 8 ? _mm256_loadu_ps(x + c) : LoadTailF32(x + c, left);
    for (size_t i = 0; i < kRows; ++i) {
      const __m256 wv = left == 8 ? Load8<Codec>(p[i] + c) : LoadTail<Codec>(p[i] + c, left);
      acc0[i] = _mm256_fmadd_ps(wv, xv, acc0[i]);
    }
  }
  for (size_t i = 0; i < count; ++i) {
    y[i] = scales[i] * Codec::kUnit * HorizontalSum(_mm256_add_ps(acc0[i], acc1[i]));
  }
}

// y[t, i] += panel row i . x[t] over `width` columns (the panel is
// zero-padded to a multiple of 8), for T tokens and the first `count` rows;
// T is a template argument so the accumulators stay in registers.
template <size_t T>
TERN_AVX2 void PanelTile(const float (*panel)[kPanelCols], size_t width, const float* x, size_t ldx,
                         float* y, size_t ldy, size_t count) {
  __m256 acc[T][kRows];
  for (size_t t = 0; t < T; ++t) {
    for (size_t i = 0; i < kRows; ++i) acc[t][i] = _mm256_setzero_ps();
  }
  for (size_t c = 0; c < width; c += 8) {
    const size_t left = std::min<size_t>(8, width - c);
    __m256 wv[kRows];
    for (size_t i = 0; i < kRows; ++i) wv[i] = _mm256_load_ps(&panel[i][c]);
    for (size_t t = 0; t < T; ++t) {
      const float* xp = x + t * ldx + c;
      const __m256 xv = left == 8 ? _mm256_loadu_ps(xp) : LoadTailF32(xp, left);
      for (size_t i = 0; i < kRows; ++i) acc[t][i] = _mm256_fmadd_ps(wv[i], xv, acc[t][i]);
    }
  }
  for (size_t t = 0; t < T; ++t) {
    for (size_t i = 0; i < count; ++i) y[t * ldy + i] += HorizontalSum(acc[t][i]);
  }
}

template <typename Codec>
TERN_AVX2 void MatmulTokens(const uint8_t* w, const float* scales, size_t rows, size_t cols,
                            const float* x, size_t n, float* y) {
  // Columns outer (as in gemm_quant_avx512.cc): a panel pass's activations
  // stay in cache while every row group uses them.
  alignas(32) float panel[kRows][kPanelCols];
  std::memset(y, 0, n * rows * sizeof(float));
  for (size_t c0 = 0; c0 < cols; c0 += kPanelCols) {
    const size_t width = std::min(kPanelCols, cols - c0);
    for (size_t r0 = 0; r0 < rows; r0 += kRows) {
      const size_t count = std::min(kRows, rows - r0);
      for (size_t i = 0; i < kRows; ++i) {
        const uint8_t* row = w + (r0 + std::min(i, count - 1)) * cols + c0;
        for (size_t c = 0; c < width; c += 8) {
          const size_t left = std::min<size_t>(8, width - c);
          _mm256_store_ps(&panel[i][c],
                          left == 8 ? Load8<Codec>(row + c) : LoadTail<Codec>(row + c, left));
        }
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
          default:
            PanelTile<3>(panel, width, xt, cols, yt, rows, count);
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
TERN_AVX2 void Matmul(const uint8_t* w, const float* scales, size_t rows, size_t cols,
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

}  // namespace tern::kernels::avx2
