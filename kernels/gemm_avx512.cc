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
//    8 rows at a time: 8 concurrent row streams plus a prefetch of the next 8
//    rows into L2 keep enough misses in flight to reach the streaming-read
//    bandwidth.
//  - panel (n > 32): 4 rows x 1024 columns of W are widened once into an f32
//    panel in L1 and reused by every 6-token register tile (4 x 6 = 24
//    accumulators of 32 zmm registers), so the widening cost vanishes; each
//    1024-column pass keeps its activations (n x 1024 floats) in L2.
constexpr size_t kGemvRows = 8;
constexpr size_t kDirectRows = 4;
constexpr size_t kDirectMaxTokens = 4;
constexpr size_t kPanelMinTokens = 33;
constexpr size_t kTileRows = 4;
constexpr size_t kPanelMaxTokens = 6;
constexpr size_t kPanelCols = 1024;
// The vdpbf16ps variant takes the f32 FMA paths for n < 8, where W's
// stream from memory bounds the time and the packing below would not pay
// (measured on AMD Zen 5 at Llama-3.2-1B shapes: from 8 tokens on the packed
// path is faster, 2x at 32 and 3x at 512). For n >= 8:
//  - blocks of up to 256 tokens x 128 column pairs of x are rounded to bf16
//    once, on the stack (128 KiB, in L2);
//  - for each 32-row block of W the same columns are packed pair-wise: row
//    r's (W[r,k], W[r,k+1]) as one 32-bit lane, 32 rows per pair (16 KiB, in
//    L1);
//  - a register tile of 32 rows x up to 12 tokens (24 accumulators) takes one
//    vdpbf16ps per 16 rows per token per column pair, x's pair broadcast from
//    memory. Lanes are rows, so there are no horizontal sums.
constexpr size_t kPackMinTokens = 8;
constexpr size_t kPackRows = 32;
constexpr size_t kPackPairs = 128;
constexpr size_t kPackMaxTokens = 256;
constexpr size_t kPackTileTokens = 12;
// The output rows are taken kPackChunkRows at a time, all columns of W for
// one chunk before the next, so that y's accumulating chunk (256 tokens x 512
// rows, 512 KiB) stays in L2 instead of going to memory once per column
// block. 512 measured best on AMD Zen 5 at Llama-3.2-1B shapes (128 and 256
// lose to cache-set conflicts of y's power-of-two row stride).
constexpr size_t kPackChunkRows = 512;

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

// Bytes from the group of `group` rows at r0 to the next group, for
// prefetching: 0 (a harmless prefetch of the current line) when no full group
// follows.
inline size_t NextGroupOffset(size_t r0, size_t group, size_t rows, size_t cols) {
  return r0 + 2 * group <= rows ? group * cols * sizeof(uint16_t) : 0;
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
#pragma GCC unroll 2
    for (size_t g = 0; g < R / 4; ++g) {
      if (4 * g >= rows) break;
      StoreSums(Sum4(acc[4 * g][j], acc[4 * g + 1][j], acc[4 * g + 2][j], acc[4 * g + 3][j]),
                rows - 4 * g, false, y + j * ldy + 4 * g);
    }
  }
}

// Tile sizes for n tokens: ceil(n / max) tiles whose sizes differ by at most
// one (8 tokens with max 6 run as 4 + 4, not 6 + 2).
inline size_t NextTileTokens(size_t done, size_t n, size_t max) {
  const size_t tiles_left = (n - done + max - 1) / max;
  return (n - done) / tiles_left;
}

template <size_t R>
TERN_AVX512 void DirectMatmul(const uint16_t* w, size_t rows, size_t cols, const float* x, size_t n,
                              float* y) {
  for (size_t r0 = 0; r0 < rows; r0 += R) {
    const size_t nr = std::min(R, rows - r0);
    const RowPtrs<R> wr = Rows<R>(w + r0 * cols, cols, nr);
    // The first token tile prefetches the next rows; later ones re-read this
    // group from cache.
    size_t next = NextGroupOffset(r0, R, rows, cols);
    for (size_t t = 0; t < n;) {
      const size_t size = NextTileTokens(t, n, kDirectMaxTokens);
      const float* xt = x + t * cols;
      float* yt = y + t * rows + r0;
      switch (size) {
        case 4:
          DirectTile<R, 4>(wr, next, cols, xt, cols, yt, rows, nr);
          break;
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
                NextGroupOffset(r0, kTileRows, rows, cols), panel);
      PanelTokens(panel, depth, x + c0, cols, count, n, y + r0, rows, nr, c0 > 0);
    }
  }
}

// ---- vdpbf16ps, larger n: packed W x bf16 x ----

TERN_AVX512_BF16 inline __m512bh XToBf16(const float* x) {
  return _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x));
}
TERN_AVX512_BF16 inline __m512bh XToBf16Masked(const float* x, size_t count) {
  const __m512 lo = _mm512_maskz_loadu_ps(Mask16(count), x);
  const __m512 hi = _mm512_maskz_loadu_ps(count > 16 ? Mask16(count - 16) : 0, x + 16);
  return _mm512_cvtne2ps_pbh(hi, lo);
}
// out[p] = lane p of every in[r] (a 16 x 16 transpose of 32-bit lanes):
// unpacks of 32- and 64-bit lanes transpose the 4 x 4 blocks inside each
// 128-bit lane, then two rounds of 128-bit shuffles move the blocks.
TERN_AVX512 inline void Transpose16x16(const __m512i in[16], __m512i out[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(in[2 * i], in[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(in[2 * i], in[2 * i + 1]);
  }
  // u[4g + e], 128-bit lane L: rows 4g..4g+3 of lane 4L + e.
  for (int g = 0; g < 4; ++g) {
    u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int e = 0; e < 4; ++e) {
    const __m512i v0 = _mm512_shuffle_i32x4(u[e], u[4 + e], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i v1 = _mm512_shuffle_i32x4(u[e], u[4 + e], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i v3 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], _MM_SHUFFLE(3, 2, 3, 2));
    out[e] = _mm512_shuffle_i32x4(v0, v2, _MM_SHUFFLE(2, 0, 2, 0));
    out[4 + e] = _mm512_shuffle_i32x4(v0, v2, _MM_SHUFFLE(3, 1, 3, 1));
    out[8 + e] = _mm512_shuffle_i32x4(v1, v3, _MM_SHUFFLE(2, 0, 2, 0));
    out[12 + e] = _mm512_shuffle_i32x4(v1, v3, _MM_SHUFFLE(3, 1, 3, 1));
  }
}

// Packs W rows [0, rows) (row stride `cols`, rows <= kPackRows) x columns
// [0, count) into pair-major order: packed[p * kPackRows + r] holds
// (W[r, 2p], W[r, 2p + 1]) as bf16 pairs, for p up to `count` / 2 rounded
// up to 16 pairs; rows past `rows` and columns past `count` are zero.
TERN_AVX512 void PackPairs(const uint16_t* w, size_t cols, size_t rows, size_t count,
                           uint32_t* packed) {
  for (size_t c = 0; c < count; c += 32) {
    const size_t left = count - c;
    const __mmask32 m = left >= 32 ? ~__mmask32{0} : (__mmask32{1} << left) - 1;
    for (size_t half = 0; half < kPackRows / 16; ++half) {
      __m512i in[16], out[16];
#pragma GCC unroll 16
      for (size_t i = 0; i < 16; ++i) {
        const size_t r = half * 16 + i;
        in[i] = r < rows ? _mm512_maskz_loadu_epi16(m, w + r * cols + c) : _mm512_setzero_si512();
      }
      Transpose16x16(in, out);
      uint32_t* dst = packed + (c / 2) * kPackRows + half * 16;
#pragma GCC unroll 16
      for (size_t p = 0; p < 16; ++p) _mm512_store_si512(dst + p * kPackRows, out[p]);
    }
  }
}

// Prefetches W rows [0, rows) x columns [0, count) into L2.
TERN_AVX512 void PrefetchBlock(const uint16_t* w, size_t cols, size_t rows, size_t count) {
  for (size_t r = 0; r < rows; ++r) {
    const char* row = reinterpret_cast<const char*>(w + r * cols);
    for (size_t b = 0; b < count * sizeof(uint16_t); b += 64) _mm_prefetch(row + b, _MM_HINT_T1);
  }
}

// Rounds x rows [0, n) (row stride ldx) x columns [0, count) to bf16 into
// xb (row stride kPackPairs * 2), zero past `count` up to the next pair.
TERN_AVX512_BF16 void ConvertX(const float* x, size_t ldx, size_t n, size_t count, uint16_t* xb) {
  for (size_t j = 0; j < n; ++j) {
    const float* src = x + j * ldx;
    uint16_t* dst = xb + j * kPackPairs * 2;
    size_t c = 0;
    for (; c + 32 <= count; c += 32) _mm512_storeu_si512(dst + c, (__m512i)XToBf16(src + c));
    if (c < count) {
      const size_t left = count - c;
      const size_t stored = (left + 1) & ~size_t{1};
      const __mmask32 m = stored >= 32 ? ~__mmask32{0} : (__mmask32{1} << stored) - 1;
      _mm512_mask_storeu_epi16(dst + c, m, (__m512i)XToBf16Masked(src + c, left));
    }
  }
}

// y[j, 0..rows) (+)= packed W . xb[j] for the T tokens of the tile, over
// `pairs` column pairs; rows <= kPackRows.
template <int T>
TERN_AVX512_BF16 void PackedTile(const uint32_t* packed, size_t pairs, const uint16_t* xb, float* y,
                                 size_t ldy, size_t rows, bool accumulate) {
  __m512 acc0[T], acc1[T];
  for (int j = 0; j < T; ++j) acc0[j] = acc1[j] = _mm512_setzero_ps();
  const uint32_t* xp = reinterpret_cast<const uint32_t*>(xb);
  for (size_t p = 0; p < pairs; ++p) {
    const __m512bh w0 = (__m512bh)_mm512_load_si512(packed + p * kPackRows);
    const __m512bh w1 = (__m512bh)_mm512_load_si512(packed + p * kPackRows + 16);
#pragma GCC unroll 12
    for (int j = 0; j < T; ++j) {
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(static_cast<int>(xp[j * kPackPairs + p]));
      acc0[j] = _mm512_dpbf16_ps(acc0[j], w0, xv);
      acc1[j] = _mm512_dpbf16_ps(acc1[j], w1, xv);
    }
  }
  const __mmask16 m0 = Mask16(rows);
  const __mmask16 m1 = rows > 16 ? Mask16(rows - 16) : 0;
#pragma GCC unroll 12
  for (int j = 0; j < T; ++j) {
    float* yj = y + j * ldy;
    if (accumulate) {
      acc0[j] = _mm512_add_ps(acc0[j], _mm512_maskz_loadu_ps(m0, yj));
      acc1[j] = _mm512_add_ps(acc1[j], _mm512_maskz_loadu_ps(m1, yj + 16));
    }
    _mm512_mask_storeu_ps(yj, m0, acc0[j]);
    _mm512_mask_storeu_ps(yj + 16, m1, acc1[j]);
  }
}

// The tiles of up to kPackTileTokens tokens over n tokens of xb.
TERN_AVX512_BF16 void PackedTokens(const uint32_t* packed, size_t pairs, const uint16_t* xb,
                                   size_t n, float* y, size_t ldy, size_t rows, bool accumulate) {
  using Tile = void (*)(const uint32_t*, size_t, const uint16_t*, float*, size_t, size_t, bool);
  static constexpr Tile kTiles[kPackTileTokens + 1] = {
      nullptr,        PackedTile<1>,  PackedTile<2>, PackedTile<3>, PackedTile<4>,
      PackedTile<5>,  PackedTile<6>,  PackedTile<7>, PackedTile<8>, PackedTile<9>,
      PackedTile<10>, PackedTile<11>, PackedTile<12>};
  for (size_t t = 0; t < n;) {
    const size_t size = NextTileTokens(t, n, kPackTileTokens);
    kTiles[size](packed, pairs, xb + t * kPackPairs * 2, y + t * ldy, ldy, rows, accumulate);
    t += size;
  }
}

TERN_AVX512_BF16 void PackedDotMatmul(const uint16_t* w, size_t rows, size_t cols, const float* x,
                                      size_t n, float* y) {
  alignas(64) uint16_t xb[kPackMaxTokens * kPackPairs * 2];
  alignas(64) uint32_t packed[kPackPairs * kPackRows];
  constexpr size_t kBlockCols = 2 * kPackPairs;
  for (size_t t0 = 0; t0 < n; t0 += kPackMaxTokens) {
    const size_t tokens = std::min(kPackMaxTokens, n - t0);
    for (size_t chunk = 0; chunk < rows; chunk += kPackChunkRows) {
      const size_t chunk_end = std::min(rows, chunk + kPackChunkRows);
      for (size_t c0 = 0; c0 < cols; c0 += kBlockCols) {
        const size_t count = std::min(kBlockCols, cols - c0);
        const size_t pairs = (count + 1) / 2;
        ConvertX(x + t0 * cols + c0, cols, tokens, count, xb);
        for (size_t r0 = chunk; r0 < chunk_end; r0 += kPackRows) {
          const size_t nr = std::min(kPackRows, chunk_end - r0);
          PackPairs(w + r0 * cols + c0, cols, nr, count, packed);
          // The next block's rows come into L2 while this one computes: 32
          // short rows are too many streams for the hardware prefetchers.
          size_t next_r = r0 + kPackRows, next_c = c0;
          if (next_r >= chunk_end) {
            next_r = chunk;
            next_c = c0 + kBlockCols;
            if (next_c >= cols) {
              next_r = chunk_end;
              next_c = 0;
            }
          }
          if (next_r < rows) {
            PrefetchBlock(w + next_r * cols + next_c, cols, std::min(kPackRows, rows - next_r),
                          std::min(kBlockCols, cols - next_c));
          }
          PackedTokens(packed, pairs, xb, tokens, y + t0 * rows + r0, rows, nr, c0 > 0);
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
    DirectMatmul<kGemvRows>(w, rows, cols, x, n, y);
  } else if (n < kPanelMinTokens) {
    DirectMatmul<kDirectRows>(w, rows, cols, x, n, y);
  } else {
    PanelMatmul(w, rows, cols, x, n, y);
  }
}

TERN_AVX512_BF16 void MatmulBf16Dot(const uint16_t* w, size_t rows, size_t cols, const float* x,
                                    size_t n, float* y) {
  if (n < kPackMinTokens || rows == 0 || cols == 0) {
    MatmulBf16Fma(w, rows, cols, x, n, y);
  } else {
    PackedDotMatmul(w, rows, cols, x, n, y);
  }
}

}  // namespace tern::kernels::avx512
