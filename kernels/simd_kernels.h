// The per-instruction-set kernels behind dispatch.h. Each is compiled for its
// instruction set with function target attributes (the rest of the build is
// baseline x86-64), so calling one on a CPU without that set is undefined:
// check CpuSupports() first. Tests and benchmarks call them directly; the
// engine goes through ActiveKernels().
//
// Contracts are those of KernelSet in dispatch.h. Pure functions: no
// allocation, threads or I/O (stack buffers only: at most 16 KiB in the
// matmuls, about 33 KiB in attention).
#ifndef TERN_KERNELS_SIMD_KERNELS_H_
#define TERN_KERNELS_SIMD_KERNELS_H_

#include <cstddef>
#include <cstdint>

#include "kernels/reference.h"
#include "kernels/sampling.h"

namespace tern::kernels {

// Paged attention (reference.h PagedAttention) runs its vector path for
// head_dim a multiple of the vector width (16 floats for AVX-512, 8 for AVX2)
// up to kMaxAttentionHeadDim, and at most kMaxAttentionRows query heads per KV
// head; other shapes go to the reference (which allocates).
inline constexpr int32_t kMaxAttentionHeadDim = 256;
inline constexpr int32_t kMaxAttentionRows = 16;

namespace avx512 {
// f32 FMA on weights widened in registers: n <= 32 streams W once, widening
// it in registers (n == 1: 8 rows at a time); larger n widens 4 rows x 1024
// columns of W into an L1 panel reused by 6-token register tiles.
void MatmulBf16Fma(const uint16_t* w, size_t rows, size_t cols, const float* x, size_t n, float* y);
// vdpbf16ps (needs AVX512_BF16): x is rounded to bf16 (nearest even) and
// pairs of products are accumulated in f32, in one order for every n (a
// token's result is the same bit for bit whatever n): n < 8 reads W in place
// and rounds x as it goes; larger n (prefill, batched decode) rounds blocks
// of x once into a stack buffer reused by register tiles of 4 rows x 6 tokens.
void MatmulBf16Dot(const uint16_t* w, size_t rows, size_t cols, const float* x, size_t n, float* y);
void RmsNorm(const float* x, const float* weight, size_t size, float eps, float* out);
// 8-bit weights widened in registers (gemm_quant_avx512.cc / _avx2.cc):
// contracts of KernelSet::matmul_int8 / matmul_fp8.
void MatmulInt8(const uint8_t* w, const float* row_scales, size_t rows, size_t cols, const float* x,
                size_t n, float* y);
void MatmulFp8(const uint8_t* w, const float* row_scales, size_t rows, size_t cols, const float* x,
               size_t n, float* y);
void SiluMul(float* gate, const float* up, size_t size);
void Softmax(float* v, size_t size);
float DotF32(const float* a, const float* b, size_t size);
void Axpy(float scale, const float* x, float* out, size_t size);
void Add(float* acc, const float* x, size_t size);
void PagedAttention(const PagedKv& kv, const int32_t* block_table, int32_t start,
                    int32_t num_tokens, const float* q, int32_t num_heads, float scale, float* out);
LogSoftmaxStats LogSoftmaxStatsOf(const float* v, size_t size);
size_t TopN(const float* v, size_t size, ScoredToken* out, size_t n);
}  // namespace avx512

namespace avx2 {
void MatmulBf16Fma(const uint16_t* w, size_t rows, size_t cols, const float* x, size_t n, float* y);
void RmsNorm(const float* x, const float* weight, size_t size, float eps, float* out);
// 8-bit weights widened in registers (gemm_quant_avx512.cc / _avx2.cc):
// contracts of KernelSet::matmul_int8 / matmul_fp8.
void MatmulInt8(const uint8_t* w, const float* row_scales, size_t rows, size_t cols, const float* x,
                size_t n, float* y);
void MatmulFp8(const uint8_t* w, const float* row_scales, size_t rows, size_t cols, const float* x,
               size_t n, float* y);
void SiluMul(float* gate, const float* up, size_t size);
void Softmax(float* v, size_t size);
float DotF32(const float* a, const float* b, size_t size);
void Axpy(float scale, const float* x, float* out, size_t size);
void Add(float* acc, const float* x, size_t size);
void PagedAttention(const PagedKv& kv, const int32_t* block_table, int32_t start,
                    int32_t num_tokens, const float* q, int32_t num_heads, float scale, float* out);
LogSoftmaxStats LogSoftmaxStatsOf(const float* v, size_t size);
size_t TopN(const float* v, size_t size, ScoredToken* out, size_t n);
}  // namespace avx2

}  // namespace tern::kernels

#endif  // TERN_KERNELS_SIMD_KERNELS_H_
