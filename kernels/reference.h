// Scalar reference kernels for the Llama forward pass: bf16 conversion, bf16
// GEMV/GEMM with f32 accumulation, RMSNorm, rotate-half RoPE (with the llama3
// frequency scaling), SiLU-gated multiply and softmax.
//
// Pure functions over caller-owned spans: no allocation, no threads, no I/O.
// Safe to call from any thread. Sizes are preconditions (the caller checks
// them once per model, not per call); a mismatch is a programming error.
// Optimized kernels elsewhere in kernels/ are checked against these.
#ifndef TERN_KERNELS_REFERENCE_H_
#define TERN_KERNELS_REFERENCE_H_

#include <bit>
#include <cstddef>
#include <cstdint>

#include "absl/types/span.h"

namespace tern::kernels {

// bf16 is the upper half of an IEEE f32; widening is exact.
inline float Bf16ToFloat(uint16_t v) {
  return std::bit_cast<float>(static_cast<uint32_t>(v) << 16);
}

// Rounds to nearest, ties to even; NaN stays a (quiet) NaN, infinities stay.
inline uint16_t FloatToBf16(float f) {
  uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// IEEE half -> f32 (exact), including subnormals, infinities and NaN.
float F16ToFloat(uint16_t h);
// f32 -> IEEE half, round to nearest even (used to build f16 test checkpoints).
uint16_t FloatToF16(float f);

// sum_i w[i] * x[i] with f32 accumulation in 16 independent lanes.
float DotBf16(const uint16_t* w, const float* x, size_t n);
// sum_i a[i] * b[i] in f32, 16 lanes.
float DotF32(const float* a, const float* b, size_t n);

// FP8 E4M3 as safetensors' F8_E4M3 (torch.float8_e4m3fn): 1 sign, 4 exponent
// bits (bias 7), 3 mantissa bits, subnormals, no infinities; S.1111.111 is
// NaN; the largest finite magnitude is 448.
inline constexpr float kFp8E4M3Max = 448.0f;
float Fp8E4M3ToFloat(uint8_t v);
// Round to nearest even, saturating at +/-448 (quantizers clamp to the range
// first, as ModelOpt and compressed-tensors do); NaN gives 0x7f.
uint8_t FloatToFp8E4M3(float f);

// 8-bit integer weights as stored by compressed-tensors' "pack-quantized"
// layout for num_bits 8: each value q in [-128, 127] is kept as the byte
// q + 128, four to a little-endian int32, so the bytes in file order are the
// values in row-major order. The kernels read those bytes in place.
inline int32_t Int8FromOffsetByte(uint8_t b) { return static_cast<int32_t>(b) - 128; }
inline uint8_t OffsetByteFromInt8(int32_t q) { return static_cast<uint8_t>(q + 128); }

// Quantized-weight matmuls: Y[t, r] = row_scales[r] * sum_c q(W[r, c]) X[t, c],
// with q the int8 value of an offset byte (MatmulInt8) or the E4M3 value of a
// byte (MatmulFp8). The reference sums each row in f64, then scales in f32.
// w.size() == rows * cols, row_scales.size() == rows, x.size() == n * cols,
// y.size() == n * rows. W must not hold the FP8 NaN encodings (0x7f, 0xff):
// the vector levels widen E4M3 through f16 and read them as +/-480.
void MatmulInt8(absl::Span<const uint8_t> w, absl::Span<const float> row_scales, size_t rows,
                size_t cols, absl::Span<const float> x, size_t n, absl::Span<float> y);
void MatmulFp8(absl::Span<const uint8_t> w, absl::Span<const float> row_scales, size_t rows,
               size_t cols, absl::Span<const float> x, size_t n, absl::Span<float> y);

// y[r] = dot(W[r, :], x) for a row-major bf16 matrix W of rows x cols.
// w.size() == rows * cols, x.size() == cols, y.size() == rows.
void GemvBf16(absl::Span<const uint16_t> w, size_t rows, size_t cols, absl::Span<const float> x,
              absl::Span<float> y);

// Y[t, r] = dot(W[r, :], X[t, :]) for n row-major activation vectors: each
// weight row is read from memory once for all n tokens.
// x.size() == n * cols, y.size() == n * rows.
void MatmulBf16(absl::Span<const uint16_t> w, size_t rows, size_t cols, absl::Span<const float> x,
                size_t n, absl::Span<float> y);

// out = x * rsqrt(mean(x^2) + eps) * weight, all in f32 (mean accumulated in
// f64 for stability). out may alias x.
void RmsNorm(absl::Span<const float> x, absl::Span<const float> weight, float eps,
             absl::Span<float> out);

// Hugging Face Llama rotary frequencies: inv_freq[i] = theta^(-2i/head_dim),
// then, when `llama3` is set, the Llama 3.1 long-context rescaling (low
// frequencies divided by factor, a smooth ramp between low and high).
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192.0;
};
// inv_freq.size() == head_dim / 2.
void RopeInvFreq(size_t head_dim, double theta, const Llama3RopeScaling* llama3,
                 absl::Span<float> inv_freq);
// cos[i], sin[i] of position * inv_freq[i].
void RopeCosSin(int64_t position, absl::Span<const float> inv_freq, absl::Span<float> cos,
                absl::Span<float> sin);
// Rotate-half RoPE on one head vector of 2*half values, in place:
// (x[i], x[i+half]) -> (x[i] cos - x[i+half] sin, x[i+half] cos + x[i] sin).
void ApplyRopeRotateHalf(absl::Span<float> head, absl::Span<const float> cos,
                         absl::Span<const float> sin);

// gate[i] = silu(gate[i]) * up[i], silu(v) = v / (1 + exp(-v)).
void SiluMulInPlace(absl::Span<float> gate, absl::Span<const float> up);

// Numerically stable softmax in place (max subtracted, f32 exp, f64 sum).
void SoftmaxInPlace(absl::Span<float> v);

// acc[i] += x[i].
void AddInPlace(absl::Span<float> acc, absl::Span<const float> x);

// out[i] += scale * x[i].
void AxpyInPlace(float scale, absl::Span<const float> x, absl::Span<float> out);

// One layer's paged KV cache on one tensor-parallel rank. Token position p of
// a sequence lives in block block_table[p / block_size], slot p % block_size;
// the head_dim floats of kv head h of slot s in block b start at
//   ((b * block_size + s) * num_kv_heads + h) * head_dim
// in both `keys` (rotary embedding applied) and `values`.
struct PagedKv {
  const float* keys = nullptr;
  const float* values = nullptr;
  int32_t block_size = 16;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
};

// Causal grouped-query attention for `num_tokens` query tokens of one
// sequence at positions [start, start + num_tokens). The keys and values of
// every position below start + num_tokens are already in `kv`. `q` and `out`
// hold num_tokens x num_heads x head_dim floats (rotary embedding applied to
// q); query head h reads kv head h / (num_heads / kv.num_kv_heads). Token t
// attends to positions 0..start + t with softmax(scale * q.k) weights.
// The reference computes each row with a max-subtracted softmax in f64.
void PagedAttention(const PagedKv& kv, const int32_t* block_table, int32_t start,
                    int32_t num_tokens, const float* q, int32_t num_heads, float scale, float* out);

}  // namespace tern::kernels

#endif  // TERN_KERNELS_REFERENCE_H_
