// Kernel benchmarks at Llama-3.2-1B shapes, one core.
//
//   Matmul/<level>/K<cols>_N<rows>/M<tokens>: y (M x N) = x (M x K) . W^T with
//     bf16 W (N x K): the attention projections (K=2048, N=2048), gate/up
//     (2048 -> 8192), down (8192 -> 2048) and a 32768-row slice of lm_head,
//     for M = 1 (decode GEMV), 8, 32, 64 (prefill / batched decode).
//     Counters: weight_bytes/s (W streamed once per call), flop/s (2 M N K),
//     of_dram_bw (weight bytes/s over the measured streaming-read bandwidth:
//     the roofline fraction for the memory-bound M = 1 case).
//     W cycles through enough copies (>= 256 MiB) that it comes from DRAM, as
//     it does in a forward pass, not from the 32 MiB L3.
//   StreamRead: the DRAM read bandwidth one core reaches summing 512 MiB.
//     of_dram_bw divides by the best of both patterns.
//   RmsNorm / SiluMul / Softmax: the element-wise kernels at model sizes.
//
// Levels the CPU lacks are not registered. Run with
//   kernels_bench --benchmark_filter=Matmul/avx512/ --benchmark_min_time=0.3
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/dispatch.h"
#include "kernels/reference.h"

namespace tern::kernels {
namespace {

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kWeightPoolBytes = 256 * kMiB;
constexpr size_t kStreamBytes = 512 * kMiB;

// Streaming reads: the DRAM read bandwidth one core reaches, two ways.
//  - sequential: one pass, hardware prefetchers only;
//  - 8 rows: 8 interleaved 8 KiB row streams with the next 8 rows prefetched
//    into L2 (the GEMV's access pattern; the most this core reached).
// Summing with the widest vectors this CPU has (AVX2 at least).
__attribute__((target("avx512f"))) float SumAvx512(const float* p, size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  alignas(64) float v[16];
  _mm512_store_ps(v, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  float s = 0.0f;
  for (float x : v) s += x;
  return s;
}
__attribute__((target("avx512f"))) float SumRowsAvx512(const float* p, size_t n) {
  constexpr size_t kRows = 8, kRowFloats = 2048;
  __m512 acc[kRows];
  for (size_t r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
  for (size_t b = 0; b + kRows * kRowFloats <= n; b += kRows * kRowFloats) {
    const size_t next = b + 2 * kRows * kRowFloats <= n ? kRows * kRowFloats : 0;
    for (size_t i = 0; i < kRowFloats; i += 16) {
      for (size_t r = 0; r < kRows; ++r) {
        const float* q = p + b + r * kRowFloats + i;
        _mm_prefetch(reinterpret_cast<const char*>(q + next), _MM_HINT_T1);
        acc[r] = _mm512_add_ps(acc[r], _mm512_load_ps(q));
      }
    }
  }
  alignas(64) float v[16];
  for (size_t r = 1; r < kRows; ++r) acc[0] = _mm512_add_ps(acc[0], acc[r]);
  _mm512_store_ps(v, acc[0]);
  float s = 0.0f;
  for (float x : v) s += x;
  return s;
}
__attribute__((target("avx2"))) float SumAvx2(const float* p, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  alignas(32) float v[8];
  _mm256_store_ps(v, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float s = 0.0f;
  for (float x : v) s += x;
  return s;
}
float StreamSum(const float* p, size_t n, bool rows) {
  if (CpuSupports(Isa::kAvx512)) return rows ? SumRowsAvx512(p, n) : SumAvx512(p, n);
  if (CpuSupports(Isa::kAvx2)) return SumAvx2(p, n);
  float s = 0.0f;
  for (size_t i = 0; i < n; ++i) s += p[i];
  return s;
}

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};

std::unique_ptr<float[], AlignedFree> StreamBuffer() {
  const size_t n = kStreamBytes / sizeof(float);
  std::unique_ptr<float[], AlignedFree> buf(
      static_cast<float*>(std::aligned_alloc(64, kStreamBytes)));
  for (size_t i = 0; i < n; ++i) buf[i] = static_cast<float>(i & 1023);
  return buf;
}

// The best of a few passes of both patterns, measured once: the denominator
// of of_dram_bw.
double DramReadBytesPerSecond() {
  static const double bandwidth = [] {
    auto buf = StreamBuffer();
    double best = 0.0;
    for (int pass = 0; pass < 8; ++pass) {
      const auto start = std::chrono::steady_clock::now();
      benchmark::DoNotOptimize(StreamSum(buf.get(), kStreamBytes / sizeof(float), pass % 2 == 1));
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      best = std::max(best, kStreamBytes / s);
    }
    return best;
  }();
  return bandwidth;
}

void BM_StreamRead(benchmark::State& state, bool rows) {
  auto buf = StreamBuffer();
  for (auto _ : state) {
    benchmark::DoNotOptimize(StreamSum(buf.get(), kStreamBytes / sizeof(float), rows));
  }
  state.counters["bytes/s"] = benchmark::Counter(static_cast<double>(kStreamBytes),
                                                 benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK_CAPTURE(BM_StreamRead, sequential, false)->Unit(benchmark::kMillisecond)->MinTime(1.0);
BENCHMARK_CAPTURE(BM_StreamRead, 8rows_prefetch, true)->Unit(benchmark::kMillisecond)->MinTime(1.0);

// Copies of one random N x K bf16 matrix totalling >= kWeightPoolBytes; kept
// while consecutive benchmarks use the same shape.
const std::vector<std::vector<uint16_t>>& WeightPool(size_t rows, size_t cols) {
  static size_t pool_rows = 0, pool_cols = 0;
  static std::vector<std::vector<uint16_t>> pool;
  if (rows != pool_rows || cols != pool_cols) {
    pool.clear();
    const size_t bytes = rows * cols * sizeof(uint16_t);
    const size_t copies = std::max<size_t>(1, (kWeightPoolBytes + bytes - 1) / bytes);
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> dist(-0.05f, 0.05f);
    std::vector<uint16_t> first(rows * cols);
    for (uint16_t& v : first) v = FloatToBf16(dist(rng));
    pool.assign(copies, first);
    pool_rows = rows;
    pool_cols = cols;
  }
  return pool;
}

void BM_Matmul(benchmark::State& state, Isa isa, size_t cols, size_t rows) {
  const KernelSet& set = *KernelSetFor(isa);
  const size_t m = static_cast<size_t>(state.range(0));
  const auto& pool = WeightPool(rows, cols);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(m * cols), y(m * rows);
  for (float& v : x) v = dist(rng);
  size_t copy = 0;
  for (auto _ : state) {
    set.matmul_bf16(pool[copy].data(), rows, cols, x.data(), m, y.data());
    benchmark::ClobberMemory();
    copy = copy + 1 == pool.size() ? 0 : copy + 1;
  }
  const double weight_bytes = static_cast<double>(rows * cols * sizeof(uint16_t));
  state.counters["weight_bytes/s"] =
      benchmark::Counter(weight_bytes, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["flop/s"] =
      benchmark::Counter(2.0 * m * rows * cols, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["of_dram_bw"] = benchmark::Counter(weight_bytes / DramReadBytesPerSecond(),
                                                    benchmark::Counter::kIsIterationInvariantRate);
}

void BM_RmsNorm(benchmark::State& state, Isa isa) {
  const KernelSet& set = *KernelSetFor(isa);
  const size_t n = 2048;
  std::vector<float> x(n, 0.5f), w(n, 1.1f), out(n);
  for (auto _ : state) {
    set.rms_norm(x.data(), w.data(), n, 1e-5f, out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_SiluMul(benchmark::State& state, Isa isa) {
  const KernelSet& set = *KernelSetFor(isa);
  const size_t n = 8192;
  std::vector<float> gate(n), up(n, 0.9f);
  for (size_t i = 0; i < n; ++i) gate[i] = static_cast<float>(i % 17) - 8.0f;
  for (auto _ : state) {
    set.silu_mul(gate.data(), up.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_Softmax(benchmark::State& state, Isa isa) {
  const KernelSet& set = *KernelSetFor(isa);
  const size_t n = 4096;
  std::vector<float> scores(n), v(n);
  for (size_t i = 0; i < n; ++i) scores[i] = static_cast<float>(i % 29) * 0.3f;
  for (auto _ : state) {
    std::copy(scores.begin(), scores.end(), v.begin());  // softmax works in place
    set.softmax(v.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
}

struct Shape {
  size_t cols, rows;
};

bool RegisterAll() {
  const Shape shapes[] = {{2048, 2048}, {2048, 8192}, {8192, 2048}, {2048, 32768}};
  const Isa isas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16};
  // Shape-major, so the weight pool is built once per shape.
  for (const Shape& s : shapes) {
    for (Isa isa : isas) {
      if (!CpuSupports(isa)) continue;
      const std::string name = std::string("Matmul/") + IsaName(isa) + "/K" +
                               std::to_string(s.cols) + "_N" + std::to_string(s.rows);
      benchmark::RegisterBenchmark(name.c_str(), BM_Matmul, isa, s.cols, s.rows)
          ->ArgName("M")
          ->Arg(1)
          ->Arg(8)
          ->Arg(32)
          ->Arg(64)
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (Isa isa : isas) {
    if (!CpuSupports(isa) || isa == Isa::kAvx512Bf16) continue;
    const std::string level = IsaName(isa);
    benchmark::RegisterBenchmark(("RmsNorm/" + level + "/2048").c_str(), BM_RmsNorm, isa);
    benchmark::RegisterBenchmark(("SiluMul/" + level + "/8192").c_str(), BM_SiluMul, isa);
    benchmark::RegisterBenchmark(("Softmax/" + level + "/4096").c_str(), BM_Softmax, isa);
  }
  return true;
}

const bool registered = RegisterAll();

}  // namespace
}  // namespace tern::kernels
