#include "kernels/dispatch.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/reference.h"
#include "kernels/sampling.h"
#include "kernels/simd_kernels.h"

namespace tern::kernels {
namespace {

// Pointer-and-size adapters over the span-based reference kernels.
void ScalarMatmul(const uint16_t* w, size_t rows, size_t cols, const float* x, size_t n, float* y) {
  MatmulBf16(absl::MakeConstSpan(w, rows * cols), rows, cols, absl::MakeConstSpan(x, n * cols), n,
             absl::MakeSpan(y, n * rows));
}
void ScalarMatmulInt8(const uint8_t* w, const float* row_scales, size_t rows, size_t cols,
                      const float* x, size_t n, float* y) {
  MatmulInt8(absl::MakeConstSpan(w, rows * cols), absl::MakeConstSpan(row_scales, rows), rows, cols,
             absl::MakeConstSpan(x, n * cols), n, absl::MakeSpan(y, n * rows));
}
void ScalarMatmulFp8(const uint8_t* w, const float* row_scales, size_t rows, size_t cols,
                     const float* x, size_t n, float* y) {
  MatmulFp8(absl::MakeConstSpan(w, rows * cols), absl::MakeConstSpan(row_scales, rows), rows, cols,
            absl::MakeConstSpan(x, n * cols), n, absl::MakeSpan(y, n * rows));
}
void ScalarRmsNorm(const float* x, const float* weight, size_t size, float eps, float* out) {
  RmsNorm(absl::MakeConstSpan(x, size), absl::MakeConstSpan(weight, size), eps,
          absl::MakeSpan(out, size));
}
void ScalarSiluMul(float* gate, const float* up, size_t size) {
  SiluMulInPlace(absl::MakeSpan(gate, size), absl::MakeConstSpan(up, size));
}
void ScalarSoftmax(float* v, size_t size) { SoftmaxInPlace(absl::MakeSpan(v, size)); }
void ScalarAxpy(float scale, const float* x, float* out, size_t size) {
  AxpyInPlace(scale, absl::MakeConstSpan(x, size), absl::MakeSpan(out, size));
}
void ScalarAdd(float* acc, const float* x, size_t size) {
  AddInPlace(absl::MakeSpan(acc, size), absl::MakeConstSpan(x, size));
}
LogSoftmaxStats ScalarLogSoftmaxStats(const float* v, size_t size) {
  return ComputeLogSoftmaxStats(absl::MakeConstSpan(v, size));
}
size_t ScalarTopN(const float* v, size_t size, ScoredToken* out, size_t n) {
  return SelectTopN(absl::MakeConstSpan(v, size), absl::MakeSpan(out, n));
}

constexpr KernelSet kScalarSet = {.isa = Isa::kScalar,
                                  .matmul_bf16 = ScalarMatmul,
                                  .matmul_int8 = ScalarMatmulInt8,
                                  .matmul_fp8 = ScalarMatmulFp8,
                                  .rms_norm = ScalarRmsNorm,
                                  .silu_mul = ScalarSiluMul,
                                  .softmax = ScalarSoftmax,
                                  .dot_f32 = DotF32,
                                  .axpy = ScalarAxpy,
                                  .add = ScalarAdd,
                                  .paged_attention = PagedAttention,
                                  .log_softmax_stats = ScalarLogSoftmaxStats,
                                  .top_n = ScalarTopN};
constexpr KernelSet kAvx2Set = {.isa = Isa::kAvx2,
                                .matmul_bf16 = avx2::MatmulBf16Fma,
                                .matmul_int8 = avx2::MatmulInt8,
                                .matmul_fp8 = avx2::MatmulFp8,
                                .rms_norm = avx2::RmsNorm,
                                .silu_mul = avx2::SiluMul,
                                .softmax = avx2::Softmax,
                                .dot_f32 = avx2::DotF32,
                                .axpy = avx2::Axpy,
                                .add = avx2::Add,
                                .paged_attention = avx2::PagedAttention,
                                .log_softmax_stats = avx2::LogSoftmaxStatsOf,
                                .top_n = avx2::TopN};
constexpr KernelSet kAvx512Set = {.isa = Isa::kAvx512,
                                  .matmul_bf16 = avx512::MatmulBf16Fma,
                                  .matmul_int8 = avx512::MatmulInt8,
                                  .matmul_fp8 = avx512::MatmulFp8,
                                  .rms_norm = avx512::RmsNorm,
                                  .silu_mul = avx512::SiluMul,
                                  .softmax = avx512::Softmax,
                                  .dot_f32 = avx512::DotF32,
                                  .axpy = avx512::Axpy,
                                  .add = avx512::Add,
                                  .paged_attention = avx512::PagedAttention,
                                  .log_softmax_stats = avx512::LogSoftmaxStatsOf,
                                  .top_n = avx512::TopN};
// As kAvx512Set but for the matmul.
constexpr KernelSet WithBf16DotMatmul(KernelSet set) {
  set.isa = Isa::kAvx512Bf16;
  set.matmul_bf16 = avx512::MatmulBf16Dot;
  return set;
}
constexpr KernelSet kAvx512Bf16Set = WithBf16DotMatmul(kAvx512Set);

struct CpuFeatures {
  bool avx2 = false;
  bool avx512 = false;
  bool avx512_bf16 = false;
};

CpuFeatures DetectCpu() {
  CpuFeatures f;
  __builtin_cpu_init();
  // __builtin_cpu_supports reports a feature only when the OS saves the
  // registers it needs (XCR0), so these are safe to act on.
  // F16C (every AVX2 CPU has it) widens FP8 weights through f16. Clang 14's
  // __builtin_cpu_supports does not know it: CPUID leaf 1, ECX bit 29.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  f.avx512_bf16 = f.avx512 && __builtin_cpu_supports("avx512bf16");
  return f;
}

const CpuFeatures& Cpu() {
  static const CpuFeatures features = DetectCpu();
  return features;
}

}  // namespace

KernelSelection SelectKernels(const char* requested) {
  const Isa best = BestIsa();
  if (requested == nullptr || *requested == '\0') return {best, ""};
  const std::optional<Isa> isa = ParseIsaName(requested);
  if (!isa.has_value()) {
    return {best, std::string("TERN_KERNELS=") + requested +
                      " is not one of scalar, avx2, avx512, avx512bf16; using " + IsaName(best)};
  }
  if (!CpuSupports(*isa)) {
    return {best, std::string("TERN_KERNELS=") + requested +
                      " is not supported by this CPU; using " + IsaName(best)};
  }
  return {*isa, ""};
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx512Bf16:
      return "avx512bf16";
  }
  return "unknown";
}

std::optional<Isa> ParseIsaName(std::string_view name) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
    if (name == IsaName(isa)) return isa;
  }
  return std::nullopt;
}

bool CpuSupports(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return Cpu().avx2;
    case Isa::kAvx512:
      return Cpu().avx512;
    case Isa::kAvx512Bf16:
      return Cpu().avx512_bf16;
  }
  return false;
}

bool RoundsActivations(Isa isa) { return isa == Isa::kAvx512Bf16; }

Isa BestIsa() {
  if (CpuSupports(Isa::kAvx512Bf16)) return Isa::kAvx512Bf16;
  if (CpuSupports(Isa::kAvx512)) return Isa::kAvx512;
  if (CpuSupports(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

const KernelSet* KernelSetFor(Isa isa) {
  if (!CpuSupports(isa)) return nullptr;
  switch (isa) {
    case Isa::kScalar:
      return &kScalarSet;
    case Isa::kAvx2:
      return &kAvx2Set;
    case Isa::kAvx512:
      return &kAvx512Set;
    case Isa::kAvx512Bf16:
      return &kAvx512Bf16Set;
  }
  return nullptr;
}

const KernelSelection& ActiveSelection() {
  static const KernelSelection selection = SelectKernels(std::getenv("TERN_KERNELS"));
  return selection;
}

const KernelSet& ActiveKernels() {
  static const KernelSet* const set = KernelSetFor(ActiveSelection().isa);
  return *set;
}

namespace {

// rows in the low byte, prefetch_groups in the next one.
constexpr uint32_t Pack(GemvTuning t) {
  return static_cast<uint32_t>(t.rows) | (static_cast<uint32_t>(t.prefetch_groups) << 8);
}
std::atomic<uint32_t> gemv_tuning{Pack(GemvTuning{})};

bool ValidGemvTuning(GemvTuning t) {
  return (t.rows == 1 || t.rows == 2 || t.rows == 4 || t.rows == 8 || t.rows == 16) &&
         t.prefetch_groups >= 0 && t.prefetch_groups <= 3;
}

}  // namespace

std::optional<GemvTuning> ParseGemvTuning(std::string_view text) {
  const size_t slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 2 != text.size()) {
    return std::nullopt;
  }
  int32_t rows = 0;
  for (char ch : text.substr(0, slash)) {
    if (ch < '0' || ch > '9' || rows > 100) return std::nullopt;
    rows = rows * 10 + (ch - '0');
  }
  const char p = text[slash + 1];
  if (p < '0' || p > '9') return std::nullopt;
  const GemvTuning t{rows, p - '0'};
  if (!ValidGemvTuning(t)) return std::nullopt;
  return t;
}

std::vector<GemvTuning> GemvTuningCandidates(Isa isa) {
  std::vector<GemvTuning> out = {GemvTuning{}};
  if (isa == Isa::kScalar) return out;
  // What a level runs for a setting: AVX2 has the 4- and 8-row forms only.
  const auto runs = [isa](GemvTuning t) {
    if (isa == Isa::kAvx2) t.rows = t.rows == 4 ? 4 : 8;
    return t;
  };
  const std::vector<int32_t> rows =
      isa == Isa::kAvx2 ? std::vector<int32_t>{4, 8} : std::vector<int32_t>{1, 2, 4, 8, 16};
  for (int32_t r : rows) {
    for (int32_t p = 0; p <= 3; ++p) {
      const GemvTuning t{r, p};
      if (!(runs(t) == runs(GemvTuning{}))) out.push_back(t);
    }
  }
  return out;
}

GemvTuning CurrentGemvTuning() {
  const uint32_t v = gemv_tuning.load(std::memory_order_relaxed);
  return {static_cast<int32_t>(v & 0xffu), static_cast<int32_t>((v >> 8) & 0xffu)};
}

bool SetGemvTuning(GemvTuning tuning) {
  if (!ValidGemvTuning(tuning)) return false;
  gemv_tuning.store(Pack(tuning), std::memory_order_relaxed);
  return true;
}

std::string GemvTuningName(GemvTuning tuning) {
  const std::string rows = std::to_string(tuning.rows) + (tuning.rows == 1 ? " row" : " rows");
  if (tuning.prefetch_groups == 0) return rows + ", no software prefetch";
  return rows + ", prefetch " + std::to_string(tuning.prefetch_groups) +
         (tuning.prefetch_groups == 1 ? " group ahead" : " groups ahead");
}

}  // namespace tern::kernels
