// AVX2 + FMA paged attention (contract: reference.h PagedAttention), the
// scheme of attention_avx512.cc with 8-float vectors: query rows tiled as
// (token, query head of one KV group) pairs, up to kMaxRows per tile so each
// key and value row is read once per tile; keys consumed kChunk at a time
// with an online softmax in f32. Stack buffers only; shapes outside the
// bounds go to the reference.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/reference.h"
#include "kernels/simd_exp.h"
#include "kernels/simd_kernels.h"

#define TERN_AVX2 __attribute__((target("avx2,fma")))

namespace tern::kernels::avx2 {
namespace {

constexpr int32_t kLanes = 8;
constexpr int32_t kChunk = 8;  // keys per online-softmax step: one score vector
constexpr int32_t kMaxRows = kMaxAttentionRows;
constexpr int32_t kMaxHeadDim = kMaxAttentionHeadDim;

// Lane j of the result is the sum of the 8 lanes of v[j].
TERN_AVX2 inline __m256 SumLanes8(const __m256* v) {
  // Per 128-bit half: the half's sums of v[0..3] (y0) and v[4..7] (y1).
  const __m256 y0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 y1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(y0, y1, 0x20), _mm256_permute2f128_ps(y0, y1, 0x31));
}

TERN_AVX2 inline float HorizontalMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

TERN_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// acc[0, 8 NB) += sum_j probs[j] * v[j][0, 8 NB) for j < count.
template <int NB>
TERN_AVX2 inline void AccumulateValues(const float* probs, const float* const* v, int32_t count,
                                       int32_t offset, float* acc) {
  __m256 a[NB];
  for (int b = 0; b < NB; ++b) a[b] = _mm256_load_ps(acc + b * kLanes);
  for (int32_t j = 0; j < count; ++j) {
    const __m256 p = _mm256_broadcast_ss(probs + j);
    const float* row = v[j] + offset;
    for (int b = 0; b < NB; ++b) a[b] = _mm256_fmadd_ps(p, _mm256_loadu_ps(row + b * kLanes), a[b]);
  }
  for (int b = 0; b < NB; ++b) _mm256_store_ps(acc + b * kLanes, a[b]);
}

struct Tile {
  int32_t rows;              // query rows in the tile
  const float* q[kMaxRows];  // each row's query vector
  float* out[kMaxRows];      // each row's output vector
  int32_t length[kMaxRows];  // each row attends to positions [0, length)
};

TERN_AVX2 void AttendTile(const PagedKv& kv, const int32_t* block_table, int32_t kv_head,
                          float scale, const Tile& tile) {
  const int32_t head_dim = kv.head_dim;
  const int32_t vecs = head_dim / kLanes;
  alignas(32) float q[kMaxRows * kMaxHeadDim];
  alignas(32) float acc[kMaxRows * kMaxHeadDim];
  alignas(32) float probs[kMaxRows * kChunk];
  float row_max[kMaxRows], row_sum[kMaxRows];
  int32_t total = 0;
  for (int32_t r = 0; r < tile.rows; ++r) {
    // Scaling q once is the same as scaling every score (up to f32 rounding).
    const __m256 s = _mm256_set1_ps(scale);
    for (int32_t i = 0; i < head_dim; i += kLanes) {
      _mm256_store_ps(q + r * head_dim + i, _mm256_mul_ps(s, _mm256_loadu_ps(tile.q[r] + i)));
      _mm256_store_ps(acc + r * head_dim + i, _mm256_setzero_ps());
    }
    row_max[r] = -INFINITY;
    row_sum[r] = 0.0f;
    total = std::max(total, tile.length[r]);
  }
  const size_t row_stride = static_cast<size_t>(kv.num_kv_heads) * head_dim;
  const size_t head_offset = static_cast<size_t>(kv_head) * head_dim;
  const __m256i lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
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
      __m256 part[kChunk];
      for (int32_t j = 0; j < kChunk; ++j) part[j] = _mm256_setzero_ps();
      const float* qr = q + r * head_dim;
      for (int32_t i = 0; i < head_dim; i += kLanes) {
        const __m256 qv = _mm256_load_ps(qr + i);
#pragma GCC unroll 8
        for (int32_t j = 0; j < kChunk; ++j) {
          part[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k_rows[j] + i), part[j]);
        }
      }
      // The first chunk always holds position 0, so row_max is finite after it.
      const int32_t valid = std::clamp(tile.length[r] - p0, 0, kChunk);
      const __m256 mask =
          _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(valid), lane_index));
      const __m256 scores = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), SumLanes8(part), mask);
      const float new_max = std::max(row_max[r], HorizontalMax(scores));
      if (new_max > row_max[r]) {
        const float alpha = std::exp(row_max[r] - new_max);
        row_sum[r] *= alpha;
        if (p0 > 0) {
          const __m256 a = _mm256_set1_ps(alpha);
          float* ar = acc + r * head_dim;
          for (int32_t i = 0; i < head_dim; i += kLanes) {
            _mm256_store_ps(ar + i, _mm256_mul_ps(a, _mm256_load_ps(ar + i)));
          }
        }
        row_max[r] = new_max;
      }
      const __m256 e = _mm256_and_ps(mask, Exp(_mm256_sub_ps(scores, _mm256_set1_ps(new_max))));
      row_sum[r] += HorizontalSum(e);
      _mm256_store_ps(probs + r * kChunk, e);
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
    const __m256 inv = _mm256_set1_ps(1.0f / row_sum[r]);
    for (int32_t i = 0; i < head_dim; i += kLanes) {
      _mm256_storeu_ps(tile.out[r] + i, _mm256_mul_ps(inv, _mm256_load_ps(acc + r * head_dim + i)));
    }
  }
}

}  // namespace

TERN_AVX2 void PagedAttention(const PagedKv& kv, const int32_t* block_table, int32_t start,
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

}  // namespace tern::kernels::avx2
