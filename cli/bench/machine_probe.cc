#include "cli/bench/machine_probe.h"

#include <immintrin.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <thread>

#include "absl/strings/str_format.h"

namespace tern::cli {
namespace {

using Clock = std::chrono::steady_clock;

void PinToCpu(int32_t cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// Runs work(i) on one thread per CPU, all released together once every
// thread is pinned and waiting; returns the seconds from release to the
// last thread's end. Thread creation and pinning are not timed.
double RunTogether(const std::vector<int32_t>& cpus, const std::function<void(size_t)>& work) {
  std::atomic<size_t> waiting{0};
  std::atomic<bool> go{false};
  std::atomic<size_t> done{0};
  std::vector<std::thread> threads;
  threads.reserve(cpus.size());
  for (size_t i = 0; i < cpus.size(); ++i) {
    threads.emplace_back([&, i] {
      PinToCpu(cpus[i]);
      waiting.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) _mm_pause();
      work(i);
      done.fetch_add(1, std::memory_order_release);
    });
  }
  while (waiting.load() < cpus.size()) std::this_thread::yield();
  const auto start = Clock::now();
  go.store(true, std::memory_order_release);
  while (done.load(std::memory_order_acquire) < cpus.size()) _mm_pause();
  const auto end = Clock::now();
  for (auto& thread : threads) thread.join();
  return std::chrono::duration<double>(end - start).count();
}

uint64_t SumWordsScalar(const uint64_t* data, size_t words) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 4 <= words; i += 4) {
    a += data[i];
    b += data[i + 1];
    c += data[i + 2];
    d += data[i + 3];
  }
  for (; i < words; ++i) a += data[i];
  return a + b + c + d;
}

__attribute__((target("avx2"))) uint64_t SumWordsAvx2(const uint64_t* data, size_t words) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  size_t i = 0;
  for (; i + 16 <= words; i += 16) {
    a = _mm256_add_epi64(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + i)));
    b = _mm256_add_epi64(b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + i + 4)));
    c = _mm256_add_epi64(c, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + i + 8)));
    d = _mm256_add_epi64(d, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + i + 12)));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + SumWordsScalar(data + i, words - i);
}

__attribute__((target("avx512f"))) uint64_t SumWordsAvx512(const uint64_t* data, size_t words) {
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  size_t i = 0;
  for (; i + 32 <= words; i += 32) {
    a = _mm512_add_epi64(a, _mm512_loadu_si512(data + i));
    b = _mm512_add_epi64(b, _mm512_loadu_si512(data + i + 8));
    c = _mm512_add_epi64(c, _mm512_loadu_si512(data + i + 16));
    d = _mm512_add_epi64(d, _mm512_loadu_si512(data + i + 24));
  }
  const __m512i sum = _mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d));
  return static_cast<uint64_t>(_mm512_reduce_add_epi64(sum)) + SumWordsScalar(data + i, words - i);
}

float FmaChainsScalar(int64_t iterations) {
  float acc[kFmaChains];
  for (int c = 0; c < kFmaChains; ++c) acc[c] = 1.0f + 0.01f * c;
  for (int64_t k = 0; k < iterations; ++k) {
#pragma GCC unroll 12
    for (int c = 0; c < kFmaChains; ++c) acc[c] = std::fma(acc[c], kFmaMultiplier, kFmaAddend);
  }
  float sum = 0.0f;
  for (float v : acc) sum += v;
  return sum;
}

__attribute__((target("avx2,fma"))) float FmaChainsAvx2(int64_t iterations) {
  const __m256 m = _mm256_set1_ps(kFmaMultiplier);
  const __m256 b = _mm256_set1_ps(kFmaAddend);
  __m256 acc[kFmaChains];
  for (int c = 0; c < kFmaChains; ++c) acc[c] = _mm256_set1_ps(1.0f + 0.01f * c);
  for (int64_t k = 0; k < iterations; ++k) {
#pragma GCC unroll 12
    for (int c = 0; c < kFmaChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], m, b);
  }
  alignas(32) float lanes[8];
  float sum = 0.0f;
  for (int c = 0; c < kFmaChains; ++c) {
    _mm256_store_ps(lanes, acc[c]);
    for (float v : lanes) sum += v;
  }
  return sum;
}

__attribute__((target("avx512f"))) float FmaChainsAvx512(int64_t iterations) {
  const __m512 m = _mm512_set1_ps(kFmaMultiplier);
  const __m512 b = _mm512_set1_ps(kFmaAddend);
  __m512 acc[kFmaChains];
  for (int c = 0; c < kFmaChains; ++c) acc[c] = _mm512_set1_ps(1.0f + 0.01f * c);
  for (int64_t k = 0; k < iterations; ++k) {
#pragma GCC unroll 12
    for (int c = 0; c < kFmaChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], m, b);
  }
  alignas(64) float lanes[16];
  float sum = 0.0f;
  for (int c = 0; c < kFmaChains; ++c) {
    _mm512_store_ps(lanes, acc[c]);
    for (float v : lanes) sum += v;
  }
  return sum;
}

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

}  // namespace

bool ProbeIsaSupported(ProbeIsa isa) {
  switch (isa) {
    case ProbeIsa::kAvx512:
      return __builtin_cpu_supports("avx512f");
    case ProbeIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case ProbeIsa::kScalar:
      return true;
  }
  return false;
}

ProbeIsa BestProbeIsa() {
  if (ProbeIsaSupported(ProbeIsa::kAvx512)) return ProbeIsa::kAvx512;
  if (ProbeIsaSupported(ProbeIsa::kAvx2)) return ProbeIsa::kAvx2;
  return ProbeIsa::kScalar;
}

const char* ProbeIsaName(ProbeIsa isa) {
  switch (isa) {
    case ProbeIsa::kAvx512:
      return "avx512";
    case ProbeIsa::kAvx2:
      return "avx2";
    case ProbeIsa::kScalar:
      return "scalar";
  }
  return "?";
}

uint64_t SumWords(ProbeIsa isa, const uint64_t* data, size_t words) {
  switch (isa) {
    case ProbeIsa::kAvx512:
      return SumWordsAvx512(data, words);
    case ProbeIsa::kAvx2:
      return SumWordsAvx2(data, words);
    case ProbeIsa::kScalar:
      break;
  }
  return SumWordsScalar(data, words);
}

float FmaChains(ProbeIsa isa, int64_t iterations) {
  switch (isa) {
    case ProbeIsa::kAvx512:
      return FmaChainsAvx512(iterations);
    case ProbeIsa::kAvx2:
      return FmaChainsAvx2(iterations);
    case ProbeIsa::kScalar:
      break;
  }
  return FmaChainsScalar(iterations);
}

int FmaLanes(ProbeIsa isa) {
  return isa == ProbeIsa::kAvx512 ? 16 : isa == ProbeIsa::kAvx2 ? 8 : 1;
}

double FmaFlops(ProbeIsa isa, int64_t iterations) {
  return 2.0 * kFmaChains * FmaLanes(isa) * static_cast<double>(iterations);
}

absl::StatusOr<ProbeResult> MeasureReadBandwidth(const ProbeOptions& options) {
  if (options.cpus.empty()) return absl::InvalidArgumentError("no CPUs to measure on");
  const size_t threads = options.cpus.size();
  // Whole 4 KiB pages per thread, so no page is shared between two slices.
  const size_t slice_words = std::max<size_t>(options.buffer_bytes / threads / 4096, 1) * 512;
  const size_t words = slice_words * threads;
  std::unique_ptr<uint64_t[], AlignedFree> buffer(
      static_cast<uint64_t*>(std::aligned_alloc(4096, words * sizeof(uint64_t))));
  if (!buffer) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("cannot allocate a %d MiB bandwidth buffer", (words * 8) >> 20));
  }
  uint64_t* data = buffer.get();
  RunTogether(options.cpus, [&](size_t t) {
    for (size_t i = t * slice_words; i < (t + 1) * slice_words; ++i) data[i] = i;
  });
  // Sum of 0..words-1, wrapping like the kernel does.
  const uint64_t expected = words % 2 == 0 ? (words / 2) * (words - 1) : words * ((words - 1) / 2);
  const ProbeIsa isa = BestProbeIsa();
  ProbeResult result{isa, 0.0};
  std::vector<uint64_t> sums(threads);
  for (int pass = 0; pass < std::max(options.passes, 1); ++pass) {
    const double seconds = RunTogether(options.cpus, [&](size_t t) {
      sums[t] = SumWords(isa, data + t * slice_words, slice_words);
    });
    uint64_t total = 0;
    for (uint64_t s : sums) total += s;
    if (total != expected) {
      return absl::InternalError("bandwidth probe: checksum mismatch, the read was incomplete");
    }
    const double gb_per_s = static_cast<double>(words * sizeof(uint64_t)) / seconds / 1e9;
    result.value = std::max(result.value, gb_per_s);
    if (options.progress) {
      options.progress(absl::StrFormat("read bandwidth pass %d/%d: %.1f GB/s (%d MiB, %s)",
                                       pass + 1, options.passes, gb_per_s, (words * 8) >> 20,
                                       ProbeIsaName(isa)));
    }
  }
  return result;
}

absl::StatusOr<ProbeResult> MeasureFmaPeak(const ProbeOptions& options) {
  if (options.cpus.empty()) return absl::InvalidArgumentError("no CPUs to measure on");
  const ProbeIsa isa = BestProbeIsa();
  // Calibrate the iteration count on one thread, then run all at once.
  int64_t iterations = 1 << 16;
  for (;;) {
    const auto start = Clock::now();
    volatile float sink = FmaChains(isa, iterations);
    (void)sink;
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (seconds > 0.02 || iterations > (int64_t{1} << 40)) {
      iterations =
          std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(iterations) *
                                                    options.fma_seconds / std::max(seconds, 1e-9)));
      break;
    }
    iterations *= 4;
  }
  ProbeResult result{isa, 0.0};
  std::vector<float> sinks(options.cpus.size());
  for (int pass = 0; pass < std::max(options.passes, 1); ++pass) {
    const double seconds =
        RunTogether(options.cpus, [&](size_t t) { sinks[t] = FmaChains(isa, iterations); });
    const double gflops =
        FmaFlops(isa, iterations) * static_cast<double>(options.cpus.size()) / seconds / 1e9;
    result.value = std::max(result.value, gflops);
    if (options.progress) {
      options.progress(absl::StrFormat("FP32 FMA peak pass %d/%d: %.1f GFLOP/s (%s)", pass + 1,
                                       options.passes, gflops, ProbeIsaName(isa)));
    }
  }
  return result;
}

}  // namespace tern::cli
