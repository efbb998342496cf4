// Runtime selection of the optimized kernels: the best instruction set the
// CPU supports (AVX-512, AVX2+FMA, or the scalar reference), chosen once per
// process, or the one the TERN_KERNELS environment variable names.
//
// TERN_KERNELS values:
//   scalar      kernels/reference.h, everywhere.
//   avx2        AVX2 + FMA.
//   avx512      AVX-512 F/BW/VL/DQ with f32 FMA (bf16 weights widened in
//               registers): the same math as the reference up to f32
//               summation order.
//   avx512bf16  as avx512, but the bf16-weight matmuls use vdpbf16ps, which
//               rounds the activations to bf16 first (as llama.cpp's BF16 CPU
//               path does, and as bf16 models compute on GPUs): up to 2^-8
//               relative error per product, for twice the multiply-adds per
//               instruction. One summation order for every token count, so
//               a token's logits never depend on how many tokens shared its
//               step. The default where the CPU has it (AMD Zen 4 and later,
//               Intel Cooper Lake, Sapphire Rapids and later); TERN_KERNELS=
//               avx512 keeps f32 activations.
// A value the CPU cannot run, or an unknown one, falls back to the best the
// CPU supports, and ActiveSelection().note says so (the kernels never print).
//
// Every kernel is a pure function over caller-owned memory: no allocation, no
// threads, no I/O; safe to call from any thread. Sizes are preconditions, as
// in reference.h (the caller checks them once per model, not per call).
#ifndef TERN_KERNELS_DISPATCH_H_
#define TERN_KERNELS_DISPATCH_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/types/span.h"
#include "kernels/reference.h"
#include "kernels/sampling.h"

namespace tern::kernels {

enum class Isa { kScalar, kAvx2, kAvx512, kAvx512Bf16 };

// "scalar", "avx2", "avx512", "avx512bf16".
const char* IsaName(Isa isa);
// The inverse of IsaName; nullopt for anything else.
std::optional<Isa> ParseIsaName(std::string_view name);
// Whether this CPU (and OS) can run the kernels of `isa` (detected once).
bool CpuSupports(Isa isa);
// Whether the bf16-weight matmuls of `isa` round their inputs (activations)
// to bf16 before multiplying (kAvx512Bf16) rather than widening the weights
// to f32.
bool RoundsActivations(Isa isa);
// The fastest level this CPU supports: avx512bf16, avx512, avx2 or scalar.
Isa BestIsa();

// One level's kernels. Matrices are row-major; W holds bf16 weights with one
// output feature per row, as Hugging Face Linear layers store them.
struct KernelSet {
  Isa isa;
  // y[t, r] = sum_c W[r, c] * x[t, c] for t < n tokens, r < rows, c < cols:
  // y (n x rows) = x (n x cols) . W^T (W is rows x cols). n == 1 is a GEMV.
  void (*matmul_bf16)(const uint16_t* w, size_t rows, size_t cols, const float* x, size_t n,
                      float* y);
  // The same product over 8-bit weights, times a scale per weight row:
  // y[t, r] = row_scales[r] * sum_c q(W[r, c]) * x[t, c], q widened to f32 in
  // registers (exactly) and summed in f32 FMA. matmul_int8 reads int8 values
  // as offset bytes (q + 128, compressed-tensors' pack-quantized layout),
  // matmul_fp8 reads FP8 E4M3 bytes (reference.h MatmulInt8 / MatmulFp8).
  void (*matmul_int8)(const uint8_t* w, const float* row_scales, size_t rows, size_t cols,
                      const float* x, size_t n, float* y);
  void (*matmul_fp8)(const uint8_t* w, const float* row_scales, size_t rows, size_t cols,
                     const float* x, size_t n, float* y);
  // out = x * rsqrt(mean(x^2) + eps) * weight over `size` values (mean of
  // squares accumulated in f64). out may alias x.
  void (*rms_norm)(const float* x, const float* weight, size_t size, float eps, float* out);
  // gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i].
  void (*silu_mul)(float* gate, const float* up, size_t size);
  // Stable softmax in place (max subtracted, f64 sum).
  void (*softmax)(float* v, size_t size);
  // sum a[i] * b[i].
  float (*dot_f32)(const float* a, const float* b, size_t size);
  // out[i] += scale * x[i].
  void (*axpy)(float scale, const float* x, float* out, size_t size);
  // acc[i] += x[i].
  void (*add)(float* acc, const float* x, size_t size);
  // Causal GQA over a paged KV cache (reference.h PagedAttention). The vector
  // levels use an online softmax in f32 (attention_avx512.cc): outputs within
  // 2e-5 * (1 + |ref|) of the f64 reference; stack buffers only, except for
  // shapes past simd_kernels.h's bounds, which run the reference.
  void (*paged_attention)(const PagedKv& kv, const int32_t* block_table, int32_t start,
                          int32_t num_tokens, const float* q, int32_t num_heads, float scale,
                          float* out);
  // Log-softmax statistics of v (sampling.h ComputeLogSoftmaxStats). The
  // vector levels take exp in f32 (within 2 ulp) and sum in f64:
  // log_sum_exp within 1e-6 of the reference.
  LogSoftmaxStats (*log_softmax_stats)(const float* v, size_t size);
  // The min(n, size) largest values with their ids, largest first, ties by
  // lower id, NaN never selected (sampling.h SelectTopN; identical results at
  // every level). Returns the count written to out[0, n).
  size_t (*top_n)(const float* v, size_t size, ScoredToken* out, size_t n);

  // Span forms of the above, with the argument order of reference.h.
  void MatmulBf16(absl::Span<const uint16_t> w, size_t rows, size_t cols, absl::Span<const float> x,
                  size_t n, absl::Span<float> y) const {
    matmul_bf16(w.data(), rows, cols, x.data(), n, y.data());
  }
  void GemvBf16(absl::Span<const uint16_t> w, size_t rows, size_t cols, absl::Span<const float> x,
                absl::Span<float> y) const {
    matmul_bf16(w.data(), rows, cols, x.data(), 1, y.data());
  }
  void RmsNorm(absl::Span<const float> x, absl::Span<const float> weight, float eps,
               absl::Span<float> out) const {
    rms_norm(x.data(), weight.data(), x.size(), eps, out.data());
  }
  void SiluMulInPlace(absl::Span<float> gate, absl::Span<const float> up) const {
    silu_mul(gate.data(), up.data(), gate.size());
  }
  void SoftmaxInPlace(absl::Span<float> v) const { softmax(v.data(), v.size()); }
  float DotF32(const float* a, const float* b, size_t size) const { return dot_f32(a, b, size); }
  void AxpyInPlace(float scale, absl::Span<const float> x, absl::Span<float> out) const {
    axpy(scale, x.data(), out.data(), out.size());
  }
  void AddInPlace(absl::Span<float> acc, absl::Span<const float> x) const {
    add(acc.data(), x.data(), acc.size());
  }
  LogSoftmaxStats LogSoftmaxStatsOf(absl::Span<const float> v) const {
    return log_softmax_stats(v.data(), v.size());
  }
  size_t SelectTopN(absl::Span<const float> v, absl::Span<ScoredToken> out) const {
    return top_n(v.data(), v.size(), out.data(), out.size());
  }
};

// How the decode GEMV (matmul_bf16 with n == 1) streams its weights: how
// many rows at once (each row one stream of loads) and how many row groups
// ahead it prefetches into L2 (0: the hardware prefetchers only). They change
// how fast, never what: each row's sum runs in one fixed order whatever is
// set, so every setting gives the same bits. What reaches a core's streaming
// bandwidth differs by CPU family (the line-fill buffers, the L2 prefetchers),
// so the executor times the candidates on its model's own matrices at
// start-up and keeps the fastest (kernels/gemv_tuning.h). Process-wide. The
// default is one row at a time, prefetching 2 rows ahead: one sequential
// stream, which decoded 5-13% faster than the 8 rows tuned by hand on AMD
// Zen 4 when measured on Zen 5. TERN_GEMV=ROWS/PREFETCH (e.g. 8/1) makes the
// executor use a setting without timing.
struct GemvTuning {
  int32_t rows = 1;             // 1, 2, 4, 8, or 16 (AVX2: 4 or 8)
  int32_t prefetch_groups = 2;  // 0 to 3

  friend bool operator==(const GemvTuning&, const GemvTuning&) = default;
};
// The settings `isa` can run, the default first, none that runs the same as
// another on that level; the scalar level has only the default (it ignores
// the tuning).
std::vector<GemvTuning> GemvTuningCandidates(Isa isa);
// The setting the GEMVs read now (one relaxed atomic load per call).
GemvTuning CurrentGemvTuning();
// Sets it for the whole process; false (and nothing changes) for a setting
// outside every level's candidates. AVX2 runs 4 rows as 4 and every other
// count as 8. Safe while other threads run kernels: they see the
// old or the new setting, and both give the same results.
bool SetGemvTuning(GemvTuning tuning);
// "8 rows, prefetch 1 group ahead", "1 row, no software prefetch".
std::string GemvTuningName(GemvTuning tuning);
// "ROWS/PREFETCH_GROUPS" (as in TERN_GEMV=1/3) when valid, else nullopt.
std::optional<GemvTuning> ParseGemvTuning(std::string_view text);

// The kernels of `isa`, or nullptr when this CPU cannot run them.
const KernelSet* KernelSetFor(Isa isa);

struct KernelSelection {
  Isa isa;
  // Empty, or why the request was not honoured (for the caller to log).
  std::string note;
};
// The level for a TERN_KERNELS value: null or empty picks BestIsa(); an
// unknown name or one this CPU cannot run also picks BestIsa(), with a note.
KernelSelection SelectKernels(const char* requested);
// SelectKernels(getenv("TERN_KERNELS")), made on first use; constant afterwards.
const KernelSelection& ActiveSelection();
// KernelSetFor(ActiveSelection().isa).
const KernelSet& ActiveKernels();

}  // namespace tern::kernels

#endif  // TERN_KERNELS_DISPATCH_H_
