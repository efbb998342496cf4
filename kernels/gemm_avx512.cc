// AVX-512 bf16-weight matmuls: f32 FMA on weights widened in registers, and
// the vdpbf16ps variant. Compiled for AVX-512 through function target
// attributes; dispatch.cc calls them only where the CPU has the features.

// GCC 12.2's AVX-512 headers seed many intrinsics with _mm512_undefined_*(),
// which -Wuninitialized reports once they are inlined (GCC bug 105593, fixed
// in 12.3); the pragmas must precede the header to cover it.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/dispatch.h"
#include "kernels/simd_kernels.h"

#define TERN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define TERN_AVX512_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16")))

namespace tern::kernels::avx512 {
namespace {

// Two schemes, picked by the number of tokens n (measured on AMD Zen 4 at
// Llama-3.2-1B shapes; see tests/bench/kernels_bench.cc):
//  - direct (n <= 32): W streams from memory once per call, widened in
//    registers; each group of weight rows is reused by token tiles of up to 4
//    (4 rows x 4 tokens = 16 accumulators), from L1/L2. n == 1 (GEMV) takes
//    the rows of CurrentGemvTuning() at a time: by default one (a single
//    sequential stream, rows prefetched 2 ahead into L2), as measured best on
//    Zen 5; 8 (8 concurrent row streams, the next 8 rows prefetched) was
//    tuned by hand on Zen 4.
//  - panel (n > 32): 4 rows x 1024 columns of W are widened once into an f32
//    panel in L1 and reused by every 6-token register tile (4 x 6 = 24
//    accumulators of 32 zmm registers), so the widening cost vanishes; each
//    1024-column pass keeps its activations (n x 1024 floats) in L2.
constexpr size_t kDirectRows = 4;
constexpr size_t kDirectMaxTokens = 4;
constexpr size_t kPanelMinTokens = 33;
constexpr size_t kTileRows = 4;
constexpr size_t kPanelMaxTokens = 6;
constexpr size_t kPanelCols = 1024;
// The vdpbf16ps variant rounds x to bf16 (nearest even) and takes one
// vdpbf16ps per 32 columns per row per token: lane i of a row's accumulator
// sums the column pairs 16k + i of one block of kDotBlockCols columns, and
// each block's lane sums are reduced (Sum4) and added to y in column order.
// Both of its schemes keep exactly this order, so a token's result is the
// same bit for bit whatever the number of tokens sharing the call (the
// engine batches decode steps and prefill chunks of other sequences).
//  - direct (n < 8): W read in place as in the f32 direct scheme, x rounded
//    as it is loaded; bound by W's stream from memory.
//  - blocked (n >= 8): blocks of up to 128 tokens x 1024 columns of x are
//    rounded once into a stack buffer (256 KiB, in L2), laid out so that each
//    register tile reads its x as one sequential stream; 4 rows of the same
//    columns of W (8 KiB, in L1) serve every 6-token tile (24 accumulators).
// Measured on AMD Zen 5 at Llama-3.2-1B shapes, one thread: 331 GFLOP/s at
// 512 tokens (the f32 panel: 120), 243 at 32.
constexpr size_t kDotMinBlockedTokens = 8;
constexpr size_t kDotBlockCols = 1024;
constexpr size_t kDotBlockRows = 4;
constexpr size_t kDotTileTokens = 6;
constexpr size_t kDotBlockTokens = 128;

TERN_AVX512 inline __mmask16 Mask16(size_t count) {
  return static_cast<__mmask16>((1u << std::min<size_t>(count, 16)) - 1u);
}

// bf16 is the upper half of an f32: zero-extend to 32 bits and shift.
TERN_AVX512 inline __m512 WidenBf16(__m256i v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}
TERN_AVX512 inline __m512 LoadBf16(const uint16_t* p) {
  return WidenBf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
TERN_AVX512 inline __m512 LoadBf16Masked(const uint16_t* p, __mmask16 m) {
  return WidenBf16(_mm256_maskz_loadu_epi16(m, p));
}

// A 512-bit load holds 32 bf16 values: shifting each 32-bit lane left by 16
// widens the even-indexed ones, clearing the low half widens the odd ones,
// with no cross-lane zero-extension (slow for 512-bit vectors on some CPUs,
// AMD Zen 4 among them). Direct tiles split x the same way, once per row group.
TERN_AVX512 inline __m512 EvenBf16(__m512i v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
TERN_AVX512 inline __m512 OddBf16(__m512i v) {
  return _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
}

// Lane i < 4 of the result is the sum of the 16 lanes of the i-th argument.
TERN_AVX512 inline __m512 Sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // Halve each vector, packing two vectors per register, then four.
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
  // 128-bit block i now holds 4 partial sums of the i-th vector.
  __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                           _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
  s = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(2, 3, 0, 1)));
  const __m512i first_lanes = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_permutexvar_ps(first_lanes, s);
}

// Sum4 of the accumulators of rows 4g .. 4g + 3 of token j in a tile of R
// rows; past the last row it repeats it (lane i of Sum4 depends on its i-th
// argument only, and those lanes are never stored).
template <size_t R, int T>
TERN_AVX512 inline __m512 GroupSums(const __m512 (&acc)[R][T], size_t g, int j) {
  const auto row = [g](size_t i) { return std::min(4 * g + i, R - 1); };
  return Sum4(acc[row(0)][j], acc[row(1)][j], acc[row(2)][j], acc[row(3)][j]);
}

// Stores (or adds, when `accumulate`) the first min(rows, 4) lanes of s.
// Full-width masked moves on purpose: GCC folds a 128-bit masked store of a
// zmm's low lanes into a masked vextractf32x4, which faults on the masked-off
// lanes on some CPUs (seen on AMD Zen 4) where vmovups suppresses the fault.
TERN_AVX512 inline void StoreSums(__m512 s, size_t rows, bool accumulate, float* y) {
  const __mmask16 m = static_cast<__mmask16>((1u << std::min<size_t>(rows, 4)) - 1u);
  if (accumulate) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, y));
  _mm512_mask_storeu_ps(y, m, s);
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

// Bytes from the group of `group` rows at r0 to the group `distance` groups
// ahead, for prefetching, or to the last full group before it: 0 (a harmless
// prefetch of the current line) when no full group follows.
inline size_t PrefetchOffset(size_t r0, size_t group, size_t rows, size_t cols,
                             size_t distance = 1) {
  const size_t full_groups_after = (rows - r0) / group;  // this one included, when full
  const size_t ahead = std::min(distance, full_groups_after > 0 ? full_groups_after - 1 : 0);
  return ahead * group * cols * sizeof(uint16_t);
}

TERN_AVX512 inline void Prefetch(const uint16_t* p, size_t offset_bytes) {
  _mm_prefetch(reinterpret_cast<const char*>(p) + offset_bytes, _MM_HINT_T1);
}

// ---- f32 FMA, small n: W widened in registers as it streams ----

// y[j, 0..rows) = W . x[j] for T tokens and R weight rows read in place:
// R * T accumulators, x split into even / odd halves once per R rows.
template <size_t R, int T>
TERN_AVX512 void DirectTile(RowPtrs<R> w, size_t next, size_t cols, const float* x, size_t ldx,
                            float* y, size_t ldy, size_t rows) {
  const __m512i even_index =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd_index = _mm512_add_epi32(even_index, _mm512_set1_epi32(1));
  __m512 acc[R][T];
  for (size_t r = 0; r < R; ++r) {
    for (int j = 0; j < T; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  size_t c = 0;
  for (; c + 32 <= cols; c += 32) {
    __m512 x_even[T], x_odd[T];
#pragma GCC unroll 4
    for (int j = 0; j < T; ++j) {
      const __m512 x0 = _mm512_loadu_ps(x + j * ldx + c);
      const __m512 x1 = _mm512_loadu_ps(x + j * ldx + c + 16);
      x_even[j] = _mm512_permutex2var_ps(x0, even_index, x1);
      x_odd[j] = _mm512_permutex2var_ps(x0, odd_index, x1);
    }
#pragma GCC unroll 8
    for (size_t r = 0; r < R; ++r) {
      Prefetch(w.p[r] + c, next);
      const __m512i v = _mm512_loadu_si512(w.p[r] + c);
      const __m512 w_even = EvenBf16(v), w_odd = OddBf16(v);
#pragma GCC unroll 4
      for (int j = 0; j < T; ++j) {
        acc[r][j] = _mm512_fmadd_ps(w_even, x_even[j], acc[r][j]);
        acc[r][j] = _mm512_fmadd_ps(w_odd, x_odd[j], acc[r][j]);
      }
    }
  }
  for (; c < cols; c += 16) {
    const __mmask16 m = Mask16(cols - c);
#pragma GCC unroll 8
    for (size_t r = 0; r < R; ++r) {
      const __m512 wv = LoadBf16Masked(w.p[r] + c, m);
#pragma GCC unroll 4
      for (int j = 0; j < T; ++j) {
        acc[r][j] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + j * ldx + c), acc[r][j]);
      }
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < T; ++j) {
    // Constant trip count, so acc stays in registers (indices fold).
#pragma GCC unroll 4
    for (size_t g = 0; g < (R + 3) / 4; ++g) {
      if (4 * g >= rows) break;
      StoreSums(GroupSums<R, T>(acc, g, j), rows - 4 * g, false, y + j * ldy + 4 * g);
    }
  }
}

// Tile sizes for n tokens: ceil(n / max) tiles whose sizes differ by at most
// one (8 tokens with max 6 run as 4 + 4, not 6 + 2).
inline size_t NextTileTokens(size_t done, size_t n, size_t max) {
  const size_t tiles_left = (n - done + max - 1) / max;
  return (n - done) / tiles_left;
}

// A direct tile for R rows and 1..kDirectMaxTokens tokens (DirectTile,
// DotDirectTile): tiles[T] takes T tokens.
template <size_t R>
using DirectTileFn = void (*)(RowPtrs<R> w, size_t next, size_t cols, const float* x, size_t ldx,
                              float* y, size_t ldy, size_t rows);
template <size_t R>
constexpr DirectTileFn<R> kFmaDirectTiles[kDirectMaxTokens + 1] = {
    nullptr, DirectTile<R, 1>, DirectTile<R, 2>, DirectTile<R, 3>, DirectTile<R, 4>};

// The GEMV's tiles (one token): the R-row direct tiles for T = 1 only.
template <size_t R>
constexpr DirectTileFn<R> kFmaGemvTiles[2] = {nullptr, DirectTile<R, 1>};

// W in groups of R rows, each read by token tiles of up to kDirectMaxTokens
// (tiles[T] takes T tokens), the rows `prefetch_groups` groups ahead
// prefetched into L2.
template <size_t R>
TERN_AVX512 void DirectMatmul(const DirectTileFn<R>* tiles, const uint16_t* w, size_t rows,
                              size_t cols, const float* x, size_t n, float* y,
                              size_t prefetch_groups = 1) {
  for (size_t r0 = 0; r0 < rows; r0 += R) {
    const size_t nr = std::min(R, rows - r0);
    const RowPtrs<R> wr = Rows<R>(w + r0 * cols, cols, nr);
    // The first token tile prefetches the next rows; later ones re-read this
    // group from cache.
    size_t next = PrefetchOffset(r0, R, rows, cols, prefetch_groups);
    for (size_t t = 0; t < n;) {
      const size_t size = NextTileTokens(t, n, kDirectMaxTokens);
      tiles[size](wr, next, cols, x + t * cols, cols, y + t * rows + r0, rows, nr);
      next = 0;
      t += size;
    }
  }
}

// ---- f32 FMA, larger n: widened panel x register tile ----

// Widens W rows [0, rows) x columns [0, count) (row stride `cols`) into 4
// panel rows of `depth` floats (count rounded up to 16), zero-filled, and
// prefetches the same columns of the next 4 rows into L2.
TERN_AVX512 void FillPanel(const uint16_t* w, size_t cols, size_t rows, size_t count, size_t depth,
                           size_t next, float* panel) {
  for (size_t r = 0; r < kTileRows; ++r) {
    float* dst = panel + r * depth;
    if (r >= rows) {
      for (size_t c = 0; c < depth; c += 16) _mm512_store_ps(dst + c, _mm512_setzero_ps());
      continue;
    }
    const uint16_t* src = w + r * cols;
    size_t c = 0;
    for (; c + 32 <= count; c += 32) {
      Prefetch(src + c, next);
      _mm512_store_ps(dst + c, LoadBf16(src + c));
      _mm512_store_ps(dst + c + 16, LoadBf16(src + c + 16));
    }
    for (; c < count; c += 16) _mm512_store_ps(dst + c, LoadBf16Masked(src + c, Mask16(count - c)));
  }
}

// y[j, 0..rows) (+)= panel . x[j] for the T tokens of the tile.
template <int T>
TERN_AVX512 void PanelTile(const float* panel, size_t depth, const float* x, size_t ldx,
                           size_t count, float* y, size_t ldy, size_t rows, bool accumulate) {
  __m512 acc[kTileRows][T];
  for (size_t r = 0; r < kTileRows; ++r) {
    for (int j = 0; j < T; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  size_t c = 0;
  for (; c + 16 <= count; c += 16) {
    const __m512 w0 = _mm512_load_ps(panel + c);
    const __m512 w1 = _mm512_load_ps(panel + depth + c);
    const __m512 w2 = _mm512_load_ps(panel + 2 * depth + c);
    const __m512 w3 = _mm512_load_ps(panel + 3 * depth + c);
#pragma GCC unroll 6
    for (int j = 0; j < T; ++j) {
      const __m512 xv = _mm512_loadu_ps(x + j * ldx + c);
      acc[0][j] = _mm512_fmadd_ps(w0, xv, acc[0][j]);
      acc[1][j] = _mm512_fmadd_ps(w1, xv, acc[1][j]);
      acc[2][j] = _mm512_fmadd_ps(w2, xv, acc[2][j]);
      acc[3][j] = _mm512_fmadd_ps(w3, xv, acc[3][j]);
    }
  }
  if (c < count) {
    // The panel is zero past `count`; x must not be read there.
    const __mmask16 m = Mask16(count - c);
    const __m512 w0 = _mm512_load_ps(panel + c);
    const __m512 w1 = _mm512_load_ps(panel + depth + c);
    const __m512 w2 = _mm512_load_ps(panel + 2 * depth + c);
    const __m512 w3 = _mm512_load_ps(panel + 3 * depth + c);
#pragma GCC unroll 6
    for (int j = 0; j < T; ++j) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + j * ldx + c);
      acc[0][j] = _mm512_fmadd_ps(w0, xv, acc[0][j]);
      acc[1][j] = _mm512_fmadd_ps(w1, xv, acc[1][j]);
      acc[2][j] = _mm512_fmadd_ps(w2, xv, acc[2][j]);
      acc[3][j] = _mm512_fmadd_ps(w3, xv, acc[3][j]);
    }
  }
#pragma GCC unroll 6
  for (int j = 0; j < T; ++j) {
    StoreSums(Sum4(acc[0][j], acc[1][j], acc[2][j], acc[3][j]), rows, accumulate, y + j * ldy);
  }
}

TERN_AVX512 void PanelTokens(const float* panel, size_t depth, const float* x, size_t ldx,
                             size_t count, size_t n, float* y, size_t ldy, size_t rows,
                             bool accumulate) {
  for (size_t t = 0; t < n;) {
    const size_t size = NextTileTokens(t, n, kPanelMaxTokens);
    const float* xt = x + t * ldx;
    float* yt = y + t * ldy;
    switch (size) {
      case 6:
        PanelTile<6>(panel, depth, xt, ldx, count, yt, ldy, rows, accumulate);
        break;
      case 5:
        PanelTile<5>(panel, depth, xt, ldx, count, yt, ldy, rows, accumulate);
        break;
      case 4:
        PanelTile<4>(panel, depth, xt, ldx, count, yt, ldy, rows, accumulate);
        break;
      case 3:
        PanelTile<3>(panel, depth, xt, ldx, count, yt, ldy, rows, accumulate);
        break;
      case 2:
        PanelTile<2>(panel, depth, xt, ldx, count, yt, ldy, rows, accumulate);
        break;
      default:
        PanelTile<1>(panel, depth, xt, ldx, count, yt, ldy, rows, accumulate);
        break;
    }
    t += size;
  }
}

TERN_AVX512 void PanelMatmul(const uint16_t* w, size_t rows, size_t cols, const float* x, size_t n,
                             float* y) {
  alignas(64) float panel[kTileRows * kPanelCols];
  for (size_t c0 = 0; c0 < cols; c0 += kPanelCols) {
    const size_t count = std::min(kPanelCols, cols - c0);
    const size_t depth = (count + 15) & ~size_t{15};
    for (size_t r0 = 0; r0 < rows; r0 += kTileRows) {
      const size_t nr = std::min(kTileRows, rows - r0);
      FillPanel(w + r0 * cols + c0, cols, nr, count, depth,
                PrefetchOffset(r0, kTileRows, rows, cols), panel);
      PanelTokens(panel, depth, x + c0, cols, count, n, y + r0, rows, nr, c0 > 0);
    }
  }
}

// ---- vdpbf16ps ----

TERN_AVX512_BF16 inline __m512bh XToBf16(const float* x) {
  return _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x));
}
TERN_AVX512_BF16 inline __m512bh XToBf16Masked(const float* x, size_t count) {
  const __m512 lo = _mm512_maskz_loadu_ps(Mask16(count), x);
  const __m512 hi = _mm512_maskz_loadu_ps(count > 16 ? Mask16(count - 16) : 0, x + 16);
  return _mm512_cvtne2ps_pbh(hi, lo);
}

// Small n: y[j, 0..rows) = W . bf16(x[j]) for T tokens and R weight rows read
// in place, x rounded as it is loaded. Lane i of a row's accumulator sums the
// column pairs 16k + i of one kDotBlockCols block; each block's sums are
// reduced and added to y in column order.
template <size_t R, int T>
TERN_AVX512_BF16 void DotDirectTile(RowPtrs<R> w, size_t next, size_t cols, const float* x,
                                    size_t ldx, float* y, size_t ldy, size_t rows) {
  __m512 acc[R][T];
  for (size_t c0 = 0; c0 < cols; c0 += kDotBlockCols) {
    for (size_t r = 0; r < R; ++r) {
      for (int j = 0; j < T; ++j) acc[r][j] = _mm512_setzero_ps();
    }
    const size_t end = std::min(cols, c0 + kDotBlockCols);
    for (size_t c = c0; c < end; c += 32) {
      const size_t left = end - c;
      const bool full = left >= 32;
      const __mmask32 m = full ? ~__mmask32{0} : (__mmask32{1} << left) - 1;
      __m512bh xv[T];
#pragma GCC unroll 4
      for (int j = 0; j < T; ++j) {
        xv[j] = full ? XToBf16(x + j * ldx + c) : XToBf16Masked(x + j * ldx + c, left);
      }
#pragma GCC unroll 8
      for (size_t r = 0; r < R; ++r) {
        Prefetch(w.p[r] + c, next);
        const __m512bh wv = (__m512bh)(full ? _mm512_loadu_si512(w.p[r] + c)
                                            : _mm512_maskz_loadu_epi16(m, w.p[r] + c));
#pragma GCC unroll 4
        for (int j = 0; j < T; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], wv, xv[j]);
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < T; ++j) {
#pragma GCC unroll 4
      for (size_t g = 0; g < (R + 3) / 4; ++g) {
        if (4 * g >= rows) break;
        StoreSums(GroupSums<R, T>(acc, g, j), rows - 4 * g, c0 > 0, y + j * ldy + 4 * g);
      }
    }
  }
}

template <size_t R>
constexpr DirectTileFn<R> kDotDirectTiles[kDirectMaxTokens + 1] = {
    nullptr, DotDirectTile<R, 1>, DotDirectTile<R, 2>, DotDirectTile<R, 3>, DotDirectTile<R, 4>};
template <size_t R>
constexpr DirectTileFn<R> kDotGemvTiles[2] = {nullptr, DotDirectTile<R, 1>};

// The GEMV (n == 1) with the rows and prefetch distance of
// CurrentGemvTuning(), over the one-token tiles of 4, 8 and 16 rows.
struct GemvTiles {
  const DirectTileFn<1>* rows1;
  const DirectTileFn<2>* rows2;
  const DirectTileFn<4>* rows4;
  const DirectTileFn<8>* rows8;
  const DirectTileFn<16>* rows16;
};
constexpr GemvTiles kFmaGemv = {kFmaGemvTiles<1>, kFmaGemvTiles<2>, kFmaGemvTiles<4>,
                                kFmaGemvTiles<8>, kFmaGemvTiles<16>};
constexpr GemvTiles kDotGemv = {kDotGemvTiles<1>, kDotGemvTiles<2>, kDotGemvTiles<4>,
                                kDotGemvTiles<8>, kDotGemvTiles<16>};

void TunedGemv(const GemvTiles& tiles, const uint16_t* w, size_t rows, size_t cols, const float* x,
               float* y) {
  const GemvTuning t = CurrentGemvTuning();
  const size_t ahead = static_cast<size_t>(t.prefetch_groups);
  switch (t.rows) {
    case 1:
      DirectMatmul<1>(tiles.rows1, w, rows, cols, x, 1, y, ahead);
      return;
    case 2:
      DirectMatmul<2>(tiles.rows2, w, rows, cols, x, 1, y, ahead);
      return;
    case 4:
      DirectMatmul<4>(tiles.rows4, w, rows, cols, x, 1, y, ahead);
      return;
    case 16:
      DirectMatmul<16>(tiles.rows16, w, rows, cols, x, 1, y, ahead);
      return;
    default:
      DirectMatmul<8>(tiles.rows8, w, rows, cols, x, 1, y, ahead);
      return;
  }
}

// Larger n: y[j, 0..rows) (+)= the same sums over one block of `count`
// columns for the T tokens of a tile, x already rounded into xb (this tile's
// part of ConvertXBlock's layout), R rows of W read from L1 by every tile.
template <size_t R, int T>
TERN_AVX512_BF16 void DotBlockTile(RowPtrs<R> w, size_t next, size_t count, const uint16_t* xb,
                                   float* y, size_t ldy, size_t rows, bool accumulate) {
  __m512 acc[R][T];
  for (size_t r = 0; r < R; ++r) {
    for (int j = 0; j < T; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  for (size_t c = 0; c < count; c += 32) {
    const size_t left = count - c;
    const __mmask32 m = left >= 32 ? ~__mmask32{0} : (__mmask32{1} << left) - 1;
#pragma GCC unroll 8
    for (size_t r = 0; r < R; ++r) {
      Prefetch(w.p[r] + c, next);
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, w.p[r] + c);
#pragma GCC unroll 6
      for (int j = 0; j < T; ++j) {
        const __m512bh xv = (__m512bh)_mm512_load_si512(xb + c * T + j * 32);
        acc[r][j] = _mm512_dpbf16_ps(acc[r][j], wv, xv);
      }
    }
  }
#pragma GCC unroll 6
  for (int j = 0; j < T; ++j) {
    StoreSums(Sum4(acc[0][j], acc[1][j], acc[2][j], acc[3][j]), rows, accumulate, y + j * ldy);
  }
}

// Rounds x rows [0, n) (row stride ldx) x columns [0, count) to bf16 into xb,
// laid out for DotBlockTile: for each token tile (NextTileTokens), 32-column
// chunks one after another, each holding the tile's tokens one after another
// (a tile reads its x as one sequential stream); zero past `count` up to a
// multiple of 32.
TERN_AVX512_BF16 void ConvertXBlock(const float* x, size_t ldx, size_t n, size_t count,
                                    uint16_t* xb) {
  const size_t padded = (count + 31) & ~size_t{31};
  for (size_t t = 0; t < n;) {
    const size_t size = NextTileTokens(t, n, kDotTileTokens);
    uint16_t* tile = xb + t * padded;
    for (size_t j = 0; j < size; ++j) {
      const float* src = x + (t + j) * ldx;
      size_t c = 0;
      for (; c + 32 <= count; c += 32) {
        _mm512_store_si512(tile + c * size + j * 32, (__m512i)XToBf16(src + c));
      }
      if (c < count) {
        _mm512_store_si512(tile + c * size + j * 32, (__m512i)XToBf16Masked(src + c, count - c));
      }
    }
    t += size;
  }
}

TERN_AVX512_BF16 void DotBlockedMatmul(const uint16_t* w, size_t rows, size_t cols, const float* x,
                                       size_t n, float* y) {
  using Tile = void (*)(RowPtrs<kDotBlockRows>, size_t, size_t, const uint16_t*, float*, size_t,
                        size_t, bool);
  static constexpr Tile kTiles[kDotTileTokens + 1] = {nullptr,
                                                      DotBlockTile<kDotBlockRows, 1>,
                                                      DotBlockTile<kDotBlockRows, 2>,
                                                      DotBlockTile<kDotBlockRows, 3>,
                                                      DotBlockTile<kDotBlockRows, 4>,
                                                      DotBlockTile<kDotBlockRows, 5>,
                                                      DotBlockTile<kDotBlockRows, 6>};
  alignas(64) uint16_t xb[kDotBlockTokens * kDotBlockCols];
  for (size_t t0 = 0; t0 < n; t0 += kDotBlockTokens) {
    const size_t tokens = std::min(kDotBlockTokens, n - t0);
    for (size_t c0 = 0; c0 < cols; c0 += kDotBlockCols) {
      const size_t count = std::min(kDotBlockCols, cols - c0);
      const size_t padded = (count + 31) & ~size_t{31};
      ConvertXBlock(x + t0 * cols + c0, cols, tokens, count, xb);
      for (size_t r0 = 0; r0 < rows; r0 += kDotBlockRows) {
        const size_t nr = std::min(kDotBlockRows, rows - r0);
        const RowPtrs<kDotBlockRows> wr = Rows<kDotBlockRows>(w + r0 * cols + c0, cols, nr);
        // The first token tile brings the next rows' block into L2.
        size_t next = PrefetchOffset(r0, kDotBlockRows, rows, cols);
        for (size_t t = 0; t < tokens;) {
          const size_t size = NextTileTokens(t, tokens, kDotTileTokens);
          kTiles[size](wr, next, count, xb + t * padded, y + (t0 + t) * rows + r0, rows, nr,
                       c0 > 0);
          next = 0;
          t += size;
        }
      }
    }
  }
}

}  // namespace

TERN_AVX512 void MatmulBf16Fma(const uint16_t* w, size_t rows, size_t cols, const float* x,
                               size_t n, float* y) {
  if (rows == 0 || n == 0) return;
  if (cols == 0) {
    for (size_t i = 0; i < n * rows; ++i) y[i] = 0.0f;
  } else if (n == 1) {
    TunedGemv(kFmaGemv, w, rows, cols, x, y);
  } else if (n < kPanelMinTokens) {
    DirectMatmul<kDirectRows>(kFmaDirectTiles<kDirectRows>, w, rows, cols, x, n, y);
  } else {
    PanelMatmul(w, rows, cols, x, n, y);
  }
}

TERN_AVX512_BF16 void MatmulBf16Dot(const uint16_t* w, size_t rows, size_t cols, const float* x,
                                    size_t n, float* y) {
  if (rows == 0 || n == 0 || cols == 0) {
    MatmulBf16Fma(w, rows, cols, x, n, y);
  } else if (n == 1) {
    TunedGemv(kDotGemv, w, rows, cols, x, y);
  } else if (n < kDotMinBlockedTokens) {
    DirectMatmul<kDirectRows>(kDotDirectTiles<kDirectRows>, w, rows, cols, x, n, y);
  } else {
    DotBlockedMatmul(w, rows, cols, x, n, y);
  }
}

}  // namespace tern::kernels::avx512
