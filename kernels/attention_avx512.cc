// AVX-512 paged attention (contract: reference.h PagedAttention).
//
// Query rows are tiled as (token, query head of one KV group) pairs, up to
// kMaxRows at a time: the G query heads that share a KV head, times as many
// consecutive tokens as fit (16 / G), so each key and value row is read from
// memory once per tile and reused from L1 by every row of it. Keys are
// consumed kChunk at a time with an online softmax in f32: per row a running
// max and sum, the accumulator rescaled when the max grows. Positions past a
// row's causal limit get probability 0. All buffers are on the stack (about
// 33 KiB at the bounds); shapes outside them go to the reference.

// GCC 12.2's AVX-512 headers seed many intrinsics with _mm512_undefined_*(),
// which -Wuninitialized reports once they are inlined (GCC bug 105593, fixed
// in 12.3); the pragmas must precede the header to cover it.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/reference.h"
#include "kernels/simd_exp.h"
#include "kernels/simd_kernels.h"

#define TERN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))

namespace tern::kernels::avx512 {
namespace {

constexpr int32_t kLanes = 16;
constexpr int32_t kChunk = 16;  // keys per online-softmax step: one score vector
constexpr int32_t kMaxRows = kMaxAttentionRows;
constexpr int32_t kMaxHeadDim = kMaxAttentionHeadDim;

// Lane j of the result is the sum of the 16 lanes of v[j].
TERN_AVX512 inline __m512 SumLanes16(const __m512* v) {
  __m512 t[8];
  for (int i = 0; i < 8; ++i) {
    // Per 128-bit block: a0+a2, b0+b2, a1+a3, b1+b3.
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                         _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  }
  __m512 u[4];
  for (int i = 0; i < 4; ++i) {
    // Per 128-bit block: the block's partial sums of 4 consecutive vectors.
    const __m512d a = _mm512_castps_pd(t[2 * i]), b = _mm512_castps_pd(t[2 * i + 1]);
    u[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // Block k of the result: the sum over the 4 blocks of u[k].
  const __m512 w01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 w23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(w01, w23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(w01, w23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// acc[0, 16 NB) += sum_j probs[j] * v[j][0, 16 NB) for j < count.
template <int NB>
TERN_AVX512 inline void AccumulateValues(const float* probs, const float* const* v, int32_t count,
                                         int32_t offset, float* acc) {
  __m512 a[NB];
  for (int b = 0; b < NB; ++b) a[b] = _mm512_load_ps(acc + b * kLanes);
  for (int32_t j = 0; j < count; ++j) {
    const __m512 p = _mm512_set1_ps(probs[j]);
    const float* row = v[j] + offset;
    for (int b = 0; b < NB; ++b) a[b] = _mm512_fmadd_ps(p, _mm512_loadu_ps(row + b * kLanes), a[b]);
  }
  for (int b = 0; b < NB; ++b) _mm512_store_ps(acc + b * kLanes, a[b]);
}

struct Tile {
  int32_t rows;              // query rows in the tile
  const float* q[kMaxRows];  // each row's query vector
  float* out[kMaxRows];      // each row's output vector
  int32_t length[kMaxRows];  // each row attends to positions [0, length)
};

TERN_AVX512 void AttendTile(const PagedKv& kv, const int32_t* block_table, int32_t kv_head,
                            float scale, const Tile& tile) {
  const int32_t head_dim = kv.head_dim;
  const int32_t vecs = head_dim / kLanes;
  alignas(64) float q[kMaxRows * kMaxHeadDim];
  alignas(64) float acc[kMaxRows * kMaxHeadDim];
  alignas(64) float probs[kMaxRows * kChunk];
  float row_max[kMaxRows], row_sum[kMaxRows];
  int32_t total = 0;
  for (int32_t r = 0; r < tile.rows; ++r) {
    // Scaling q once is the same as scaling every score (up to f32 rounding).
    const __m512 s = _mm512_set1_ps(scale);
    for (int32_t i = 0; i < head_dim; i += kLanes) {
      _mm512_store_ps(q + r * head_dim + i, _mm512_mul_ps(s, _mm512_loadu_ps(tile.q[r] + i)));
      _mm512_store_ps(acc + r * head_dim + i, _mm512_setzero_ps());
    }
    row_max[r] = -INFINITY;
    row_sum[r] = 0.0f;
    total = std::max(total, tile.length[r]);
  }
  const size_t row_stride = static_cast<size_t>(kv.num_kv_heads) * head_dim;
  const size_t head_offset = static_cast<size_t>(kv_head) * head_dim;
  const float* k_rows[kChunk];
  const float* v_rows[kChunk];
  for (int32_t p0 = 0; p0 < total; p0 += kChunk) {
    const int32_t count = std::min(kChunk, total - p0);
    for (int32_t j = 0; j < kChunk; ++j) {
      // Lanes past `count` repeat the first position (in bounds; masked out).
      const int32_t p = p0 + (j < count ? j : 0);
      const size_t slot = static_cast<size_t>(block_table[p / kv.block_size]) * kv.block_size +
                          static_cast<size_t>(p % kv.block_size);
      k_rows[j] = kv.keys + slot * row_stride + head_offset;
      v_rows[j] = kv.values + slot * row_stride + head_offset;
    }
    for (int32_t r = 0; r < tile.rows; ++r) {
      __m512 part[kChunk];
      for (int32_t j = 0; j < kChunk; ++j) part[j] = _mm512_setzero_ps();
      const float* qr = q + r * head_dim;
      for (int32_t i = 0; i < head_dim; i += kLanes) {
        const __m512 qv = _mm512_load_ps(qr + i);
#pragma GCC unroll 16
        for (int32_t j = 0; j < kChunk; ++j) {
          part[j] = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k_rows[j] + i), part[j]);
        }
      }
      // The first chunk always holds position 0, so row_max is finite after it.
      const int32_t valid = std::clamp(tile.length[r] - p0, 0, kChunk);
      const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1u);
      const __m512 scores = _mm512_mask_blend_ps(mask, _mm512_set1_ps(-INFINITY), SumLanes16(part));
      const float new_max = std::max(row_max[r], _mm512_reduce_max_ps(scores));
      if (new_max > row_max[r]) {
        const float alpha = std::exp(row_max[r] - new_max);
        row_sum[r] *= alpha;
        if (p0 > 0) {
          const __m512 a = _mm512_set1_ps(alpha);
          float* ar = acc + r * head_dim;
          for (int32_t i = 0; i < head_dim; i += kLanes) {
            _mm512_store_ps(ar + i, _mm512_mul_ps(a, _mm512_load_ps(ar + i)));
          }
        }
        row_max[r] = new_max;
      }
      const __m512 e =
          _mm512_maskz_mov_ps(mask, Exp(_mm512_sub_ps(scores, _mm512_set1_ps(new_max))));
      row_sum[r] += _mm512_reduce_add_ps(e);
      _mm512_store_ps(probs + r * kChunk, e);
    }
    for (int32_t r = 0; r < tile.rows; ++r) {
      const int32_t valid = std::clamp(tile.length[r] - p0, 0, count);
      const float* pr = probs + r * kChunk;
      float* ar = acc + r * head_dim;
      int32_t b = 0;
      for (; b + 8 <= vecs; b += 8)
        AccumulateValues<8>(pr, v_rows, valid, b * kLanes, ar + b * kLanes);
      if (b + 4 <= vecs) {
        AccumulateValues<4>(pr, v_rows, valid, b * kLanes, ar + b * kLanes);
        b += 4;
      }
      if (b + 2 <= vecs) {
        AccumulateValues<2>(pr, v_rows, valid, b * kLanes, ar + b * kLanes);
        b += 2;
      }
      if (b < vecs) AccumulateValues<1>(pr, v_rows, valid, b * kLanes, ar + b * kLanes);
    }
  }
  for (int32_t r = 0; r < tile.rows; ++r) {
    const __m512 inv = _mm512_set1_ps(1.0f / row_sum[r]);
    for (int32_t i = 0; i < head_dim; i += kLanes) {
      _mm512_storeu_ps(tile.out[r] + i, _mm512_mul_ps(inv, _mm512_load_ps(acc + r * head_dim + i)));
    }
  }
}

}  // namespace

TERN_AVX512 void PagedAttention(const PagedKv& kv, const int32_t* block_table, int32_t start,
                                int32_t num_tokens, const float* q, int32_t num_heads, float scale,
                                float* out) {
  if (num_tokens <= 0) return;
  const int32_t group = num_heads / kv.num_kv_heads;
  if (kv.head_dim % kLanes != 0 || kv.head_dim > kMaxHeadDim || group > kMaxRows) {
    kernels::PagedAttention(kv, block_table, start, num_tokens, q, num_heads, scale, out);
    return;
  }
  const size_t head_dim = static_cast<size_t>(kv.head_dim);
  const int32_t tile_tokens = kMaxRows / group;
  for (int32_t t0 = 0; t0 < num_tokens; t0 += tile_tokens) {
    const int32_t tokens = std::min(tile_tokens, num_tokens - t0);
    for (int32_t h = 0; h < kv.num_kv_heads; ++h) {
      Tile tile;
      tile.rows = tokens * group;
      for (int32_t r = 0; r < tile.rows; ++r) {
        const int32_t t = t0 + r / group;
        const size_t index =
            (static_cast<size_t>(t) * num_heads + h * group + r % group) * head_dim;
        tile.q[r] = q + index;
        tile.out[r] = out + index;
        tile.length[r] = start + t + 1;
      }
      AttendTile(kv, block_table, h, scale, tile);
    }
  }
}

}  // namespace tern::kernels::avx512
