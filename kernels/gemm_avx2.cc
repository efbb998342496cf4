// AVX2 + FMA bf16-weight matmul (f32 FMA on weights widened in registers), for
// CPUs without AVX-512.
#include <immintrin.h>

#include <algorithm>

#include "kernels/dispatch.h"
#include "kernels/reference.h"
#include "kernels/simd_kernels.h"

#define TERN_AVX2 __attribute__((target("avx2,fma")))

namespace tern::kernels::avx2 {
namespace {

// W streams from memory once per call, widened in registers (vpmovzxwd is
// cheap at 256 bits), with the next row group prefetched into L2; each group
// is reused from cache by token tiles of 4 rows x up to 3 tokens (12
// accumulators of 16 ymm registers). n == 1 takes the rows and prefetch
// distance of CurrentGemvTuning(): 4 rows as asked, any other count as 8
// rows (8 row streams; 16 would not fit the registers).
// A widened-panel scheme as in gemm_avx512.cc measured slower here at every n.
constexpr size_t kTileRows = 4;
constexpr size_t kMaxTileTokens = 3;

TERN_AVX2 inline __m256 LoadBf16(const uint16_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

// Lane i of the result is the sum of the 8 lanes of the i-th argument.
TERN_AVX2 inline __m128 Sum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 ab = _mm256_hadd_ps(a, b);  // a01 a23 b01 b23 | a45 a67 b45 b67
  const __m256 cd = _mm256_hadd_ps(c, d);
  const __m256 abcd = _mm256_hadd_ps(ab, cd);  // a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
  return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// R row pointers starting at `w`; past the last of `rows` they repeat it (in
// bounds, and the extra sums are never stored).
template <size_t R>
struct RowPtrs {
  const uint16_t* p[R];
};
template <size_t R>
inline RowPtrs<R> Rows(const uint16_t* w, size_t stride, size_t rows) {
  RowPtrs<R> r;
  for (size_t i = 0; i < R; ++i) r.p[i] = w + std::min(i, rows - 1) * stride;
  return r;
}

// Bytes to the group of `group` rows `distance` groups ahead, or to the last
// full group before it (0 when no full group follows).
inline size_t PrefetchOffset(size_t r0, size_t group, size_t rows, size_t cols, size_t distance) {
  const size_t full_groups_after = (rows - r0) / group;  // this one included, when full
  const size_t ahead = std::min(distance, full_groups_after > 0 ? full_groups_after - 1 : 0);
  return ahead * group * cols * sizeof(uint16_t);
}

TERN_AVX2 inline void Prefetch(const uint16_t* p, size_t offset_bytes) {
  _mm_prefetch(reinterpret_cast<const char*>(p) + offset_bytes, _MM_HINT_T1);
}

// y[j, 0..rows) = W . x[j] for T tokens and R weight rows read in place, with
// the next R rows prefetched into L2 (one prefetch per 64-byte line).
template <size_t R, int T>
TERN_AVX2 void DirectTile(RowPtrs<R> w, size_t next, size_t cols, const float* x, size_t ldx,
                          float* y, size_t ldy, size_t rows) {
  __m256 acc[R][T];
  for (size_t r = 0; r < R; ++r) {
    for (int j = 0; j < T; ++j) acc[r][j] = _mm256_setzero_ps();
  }
  size_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    if (c % 32 == 0) {
      for (size_t r = 0; r < R; ++r) Prefetch(w.p[r] + c, next);
    }
#pragma GCC unroll 8
    for (size_t r = 0; r < R; ++r) {
      const __m256 wv = LoadBf16(w.p[r] + c);
#pragma GCC unroll 4
      for (int j = 0; j < T; ++j) {
        acc[r][j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + j * ldx + c), acc[r][j]);
      }
    }
  }
  for (int j = 0; j < T; ++j) {
    // Constant trip count, so acc stays in registers (indices fold).
#pragma GCC unroll 2
    for (size_t g = 0; g < R / 4; ++g) {
      const size_t r0 = 4 * g;
      if (r0 >= rows) break;
      alignas(16) float sums[4];
      _mm_store_ps(sums, Sum4(acc[r0][j], acc[r0 + 1][j], acc[r0 + 2][j], acc[r0 + 3][j]));
      for (size_t r = r0; r < std::min(rows, r0 + 4); ++r) {
        float tail = 0.0f;
        for (size_t i = c; i < cols; ++i) tail += Bf16ToFloat(w.p[r][i]) * x[j * ldx + i];
        y[j * ldy + r] = sums[r - r0] + tail;
      }
    }
  }
}

// Tile sizes for n tokens: ceil(n / max) tiles whose sizes differ by at most
// one.
inline size_t NextTileTokens(size_t done, size_t n, size_t max) {
  const size_t tiles_left = (n - done + max - 1) / max;
  return (n - done) / tiles_left;
}

template <size_t R>  // a multiple of 4
TERN_AVX2 void DirectMatmul(const uint16_t* w, size_t rows, size_t cols, const float* x, size_t n,
                            float* y, size_t prefetch_groups) {
  for (size_t r0 = 0; r0 < rows; r0 += R) {
    const size_t nr = std::min(R, rows - r0);
    const RowPtrs<R> wr = Rows<R>(w + r0 * cols, cols, nr);
    // The first token tile prefetches the next rows; later ones re-read this
    // group from cache.
    size_t next = PrefetchOffset(r0, R, rows, cols, prefetch_groups);
    for (size_t t = 0; t < n;) {
      const size_t size = NextTileTokens(t, n, kMaxTileTokens);
      const float* xt = x + t * cols;
      float* yt = y + t * rows + r0;
      switch (size) {
        case 3:
          DirectTile<R, 3>(wr, next, cols, xt, cols, yt, rows, nr);
          break;
        case 2:
          DirectTile<R, 2>(wr, next, cols, xt, cols, yt, rows, nr);
          break;
        default:
          DirectTile<R, 1>(wr, next, cols, xt, cols, yt, rows, nr);
          break;
      }
      next = 0;
      t += size;
    }
  }
}

}  // namespace

TERN_AVX2 void MatmulBf16Fma(const uint16_t* w, size_t rows, size_t cols, const float* x, size_t n,
                             float* y) {
  if (rows == 0 || n == 0) return;
  if (n == 1) {
    const GemvTuning t = CurrentGemvTuning();
    const size_t ahead = static_cast<size_t>(t.prefetch_groups);
    if (t.rows == 4) {
      DirectMatmul<4>(w, rows, cols, x, n, y, ahead);
    } else {
      DirectMatmul<8>(w, rows, cols, x, n, y, ahead);
    }
  } else {
    DirectMatmul<kTileRows>(w, rows, cols, x, n, y, 1);
  }
}

}  // namespace tern::kernels::avx2
