// One token drawn from a Llama 3 sized vocabulary (128,256 logits), as the
// engine draws each sequence's next token: tern's sampler beside the plain
// one its tests hold it to, which sorts every candidate (the way most
// samplers find top-k and top-p), in the same run. Two distributions: a flat
// one (a synthetic checkpoint's, or a high temperature's: top-p keeps most of
// the vocabulary) and a peaked one (a trained model's: a few hundred ids hold
// the mass). Three settings: plain temperature sampling, top-p 0.9 (Llama
// 3.1's generation_config) and top-k 50.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "benchmark/benchmark.h"
#include "tests/worker/model/sorting_sampler.h"
#include "worker/model/sampler.h"

namespace tern::worker {
namespace {

constexpr size_t kVocab = 128256;

std::vector<float> Logits(bool peaked) {
  std::vector<float> logits(kVocab);
  uint64_t state = 7;
  for (size_t i = 0; i < kVocab; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const float u = static_cast<float>(state >> 40) / static_cast<float>(1 << 24);
    // Peaked: a few hundred ids within a few nats of the best, the rest far below.
    logits[i] = peaked ? (u < 0.002f ? 10.0f * u / 0.002f : -10.0f * u) : 0.5f * u;
  }
  return logits;
}

SamplingOptions Options(int setting) {
  SamplingOptions o;
  o.temperature = 0.8f;
  if (setting == 1) o.top_p = 0.9f;
  if (setting == 2) o.top_k = 50;
  return o;
}

void Run(benchmark::State& state, bool sorting) {
  const std::vector<float> base = Logits(state.range(0) == 1);
  SamplingOptions o = Options(static_cast<int>(state.range(1)));
  std::vector<float> logits;
  int64_t position = 0;
  for (auto _ : state) {
    logits.assign(base.begin(), base.end());
    o.seed = static_cast<uint64_t>(position);
    const int32_t token =
        sorting ? SortingReferenceDraw(logits, o, position) : SampleToken(logits, o, {}, position);
    benchmark::DoNotOptimize(token);
    ++position;
  }
  state.SetLabel(std::string(state.range(0) == 1 ? "peaked" : "flat") + " " +
                 (state.range(1) == 0   ? "plain"
                  : state.range(1) == 1 ? "top_p 0.9"
                                        : "top_k 50"));
}

void BM_SampleToken(benchmark::State& state) { Run(state, false); }
void BM_SortingSampler(benchmark::State& state) { Run(state, true); }

BENCHMARK(BM_SampleToken)->ArgsProduct({{0, 1}, {0, 1, 2}})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SortingSampler)->ArgsProduct({{0, 1}, {0, 1, 2}})->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace tern::worker
