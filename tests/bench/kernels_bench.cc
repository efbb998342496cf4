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
//     of_fma_peak: flop/s over the measured f32 FMA peak (FmaPeak), the
//     roofline fraction for the compute-bound M >= 8 cases.
//   Llama1bLayer/<level>/M<tokens>: the seven matmuls of one 1B layer (q, k,
//     v, o, gate, up, down) for M tokens: the aggregate rate of a decode
//     batch of M sequences (or an M-token prefill chunk).
//   FmaPeak: f32 FMA throughput of one core (16 independent 512-bit chains,
//     or 256-bit where AVX-512 is missing): the denominator of of_fma_peak.
//   StreamRead: the DRAM read bandwidth one core reaches summing 512 MiB.
//     of_dram_bw divides by the best of both patterns.
//   PagedAttention/<level>/...: 1B attention shapes (32 query heads, 8 KV
//     heads, head_dim 64, 16-token blocks in scrambled order): decode of one
//     token over a 2048-token context, and a 512-token prefill chunk from
//     position 0 and after a 1536-token prefix. Counters: flop/s (4 head_dim
//     flops per query head and attended position) and kv_bytes/s (each KV
//     row read once per query tile: the decode's memory traffic).
//   RmsNorm / SiluMul / Softmax: the element-wise kernels at model sizes.
//   LogSoftmaxStats / TopN: the sampling helpers over 128256 normal logits.
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
__attribute__((target("avx512f"))) float FmaChainsAvx512(size_t iterations) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-3f);
  for (size_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  for (int i = 1; i < 16; ++i) acc[0] = _mm512_add_ps(acc[0], acc[i]);
  alignas(64) float v[16];
  _mm512_store_ps(v, acc[0]);
  return v[0];
}
__attribute__((target("avx2,fma"))) float FmaChainsAvx2(size_t iterations) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-3f);
  for (size_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  for (int i = 1; i < 12; ++i) acc[0] = _mm256_add_ps(acc[0], acc[i]);
  alignas(32) float v[8];
  _mm256_store_ps(v, acc[0]);
  return v[0];
}
// f32 flops of one FmaChains call of `iterations`.
double FmaChainsFlops(size_t iterations) {
  return CpuSupports(Isa::kAvx512) ? 2.0 * 16 * 16 * iterations : 2.0 * 12 * 8 * iterations;
}
float FmaChains(size_t iterations) {
  return CpuSupports(Isa::kAvx512) ? FmaChainsAvx512(iterations) : FmaChainsAvx2(iterations);
}

// The best of a few timed runs, measured once: the denominator of of_fma_peak.
double FmaPeakFlopsPerSecond() {
  static const double peak = [] {
    constexpr size_t kIterations = size_t{1} << 22;
    double best = 0.0;
    for (int pass = 0; pass < 5; ++pass) {
      const auto start = std::chrono::steady_clock::now();
      benchmark::DoNotOptimize(FmaChains(kIterations));
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      best = std::max(best, FmaChainsFlops(kIterations) / s);
    }
    return best;
  }();
  return peak;
}

void BM_FmaPeak(benchmark::State& state) {
  constexpr size_t kIterations = size_t{1} << 20;
  if (!CpuSupports(Isa::kAvx2)) {
    state.SkipWithError("needs AVX2");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(FmaChains(kIterations));
  state.counters["flop/s"] = benchmark::Counter(FmaChainsFlops(kIterations),
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_FmaPeak)->Unit(benchmark::kMillisecond);

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
  state.counters["of_fma_peak"] =
      benchmark::Counter(2.0 * m * rows * cols / FmaPeakFlopsPerSecond(),
                         benchmark::Counter::kIsIterationInvariantRate);
}

// Sampling helpers over a Llama 3 vocabulary of logits.
constexpr size_t kVocab = 128256;
std::vector<float> VocabLogits() {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> v(kVocab);
  for (float& x : v) x = dist(rng);
  return v;
}

void BM_LogSoftmaxStats(benchmark::State& state, Isa isa) {
  const KernelSet& set = *KernelSetFor(isa);
  const std::vector<float> v = VocabLogits();
  for (auto _ : state) benchmark::DoNotOptimize(set.log_softmax_stats(v.data(), v.size()));
  state.SetItemsProcessed(state.iterations() * kVocab);
}

void BM_TopN(benchmark::State& state, Isa isa) {
  const KernelSet& set = *KernelSetFor(isa);
  const std::vector<float> v = VocabLogits();
  std::vector<ScoredToken> out(static_cast<size_t>(state.range(0)));
  for (auto _ : state) {
    benchmark::DoNotOptimize(set.top_n(v.data(), v.size(), out.data(), out.size()));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kVocab);
}

struct Shape {
  size_t cols, rows;
};

// One Llama-3.2-1B layer's projections: q, k, v, o, gate, up, down.
constexpr Shape kLayer1b[] = {{2048, 2048}, {2048, 512},  {2048, 512}, {2048, 2048},
                              {2048, 8192}, {2048, 8192}, {8192, 2048}};

void BM_Llama1bLayer(benchmark::State& state, Isa isa) {
  const KernelSet& set = *KernelSetFor(isa);
  const size_t m = static_cast<size_t>(state.range(0));
  // Copies of the layer totalling >= kWeightPoolBytes, so weights come from DRAM.
  size_t layer_elems = 0;
  double flops = 0.0;
  for (const Shape& s : kLayer1b) {
    layer_elems += s.rows * s.cols;
    flops += 2.0 * m * s.rows * s.cols;
  }
  const size_t copies =
      std::max<size_t>(2, kWeightPoolBytes / (layer_elems * sizeof(uint16_t)) + 1);
  std::vector<uint16_t> weights(copies * layer_elems);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-0.05f, 0.05f);
  for (size_t i = 0; i < layer_elems; ++i) weights[i] = FloatToBf16(dist(rng));
  for (size_t c = 1; c < copies; ++c) {
    std::copy(weights.begin(), weights.begin() + layer_elems, weights.begin() + c * layer_elems);
  }
  std::vector<float> x(m * 8192), y(m * 8192);
  for (float& v : x) v = dist(rng);
  size_t copy = 0;
  for (auto _ : state) {
    const uint16_t* w = weights.data() + copy * layer_elems;
    for (const Shape& s : kLayer1b) {
      set.matmul_bf16(w, s.rows, s.cols, x.data(), m, y.data());
      w += s.rows * s.cols;
    }
    benchmark::ClobberMemory();
    copy = copy + 1 == copies ? 0 : copy + 1;
  }
  state.counters["flop/s"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["of_fma_peak"] = benchmark::Counter(flops / FmaPeakFlopsPerSecond(),
                                                     benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_bytes/s"] =
      benchmark::Counter(static_cast<double>(layer_elems * sizeof(uint16_t)),
                         benchmark::Counter::kIsIterationInvariantRate);
}

// 1B attention: 32 query heads, 8 KV heads, head_dim 64, 16-token blocks.
void BM_PagedAttention(benchmark::State& state, Isa isa, int32_t start, int32_t tokens) {
  const KernelSet& set = *KernelSetFor(isa);
  constexpr int32_t kHeads = 32, kKvHeads = 8, kHeadDim = 64, kBlock = 16;
  const int32_t length = start + tokens;
  const int32_t blocks = (length + kBlock - 1) / kBlock;
  std::mt19937 rng(11);
  std::vector<int32_t> table(blocks);
  for (int32_t i = 0; i < blocks; ++i) table[i] = i;
  std::shuffle(table.begin(), table.end(), rng);
  const size_t pool = static_cast<size_t>(blocks) * kBlock * kKvHeads * kHeadDim;
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> keys(pool), values(pool);
  for (float& v : keys) v = dist(rng);
  for (float& v : values) v = dist(rng);
  std::vector<float> q(static_cast<size_t>(tokens) * kHeads * kHeadDim), out(q.size());
  for (float& v : q) v = dist(rng);
  PagedKv kv{keys.data(), values.data(), kBlock, kKvHeads, kHeadDim};
  for (auto _ : state) {
    set.paged_attention(kv, table.data(), start, tokens, q.data(), kHeads, 0.125f, out.data());
    benchmark::ClobberMemory();
  }
  double attended = 0.0;  // sum over tokens of positions attended
  for (int32_t t = 0; t < tokens; ++t) attended += start + t + 1;
  state.counters["flop/s"] = benchmark::Counter(4.0 * kHeads * kHeadDim * attended,
                                                benchmark::Counter::kIsIterationInvariantRate);
  // Query tiles hold 16 / group tokens (4 here); each reads its KV rows once.
  double tile_rows = 0.0;
  for (int32_t t0 = 0; t0 < tokens; t0 += 4) tile_rows += start + std::min(t0 + 4, tokens);
  state.counters["kv_bytes/s"] =
      benchmark::Counter(2.0 * kKvHeads * kHeadDim * sizeof(float) * tile_rows,
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
          ->Arg(16)
          ->Arg(32)
          ->Arg(64)
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (Isa isa : isas) {
    if (!CpuSupports(isa) || isa == Isa::kScalar) continue;
    benchmark::RegisterBenchmark((std::string("Llama1bLayer/") + IsaName(isa)).c_str(),
                                 BM_Llama1bLayer, isa)
        ->ArgName("M")
        ->Arg(1)
        ->Arg(8)
        ->Arg(16)
        ->Arg(32)
        ->Arg(64)
        ->Arg(512)
        ->Unit(benchmark::kMillisecond);
  }
  for (Isa isa : isas) {
    if (!CpuSupports(isa) || isa == Isa::kAvx512Bf16) continue;
    const std::string level = IsaName(isa);
    benchmark::RegisterBenchmark(("PagedAttention/" + level + "/decode_ctx2048").c_str(),
                                 BM_PagedAttention, isa, 2047, 1)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("PagedAttention/" + level + "/prefill512_start0").c_str(),
                                 BM_PagedAttention, isa, 0, 512)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("PagedAttention/" + level + "/prefill512_start1536").c_str(),
                                 BM_PagedAttention, isa, 1536, 512)
        ->Unit(benchmark::kMillisecond);
  }
  for (Isa isa : isas) {
    if (!CpuSupports(isa) || isa == Isa::kAvx512Bf16) continue;
    const std::string level = IsaName(isa);
    benchmark::RegisterBenchmark(("RmsNorm/" + level + "/2048").c_str(), BM_RmsNorm, isa);
    benchmark::RegisterBenchmark(("SiluMul/" + level + "/8192").c_str(), BM_SiluMul, isa);
    benchmark::RegisterBenchmark(("Softmax/" + level + "/4096").c_str(), BM_Softmax, isa);
    benchmark::RegisterBenchmark(("LogSoftmaxStats/" + level + "/128256").c_str(),
                                 BM_LogSoftmaxStats, isa)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("TopN/" + level + "/128256").c_str(), BM_TopN, isa)
        ->ArgName("N")
        ->Arg(1)
        ->Arg(20)
        ->Arg(1000)
        ->Unit(benchmark::kMicrosecond);
  }
  return true;
}

const bool registered = RegisterAll();

}  // namespace
}  // namespace tern::kernels
