// The tern engine's figures for `tern bench engine`, measured in-process
// through worker::Engine exactly as the worker serves: prefill speed (time to
// the first token of fresh prompts), steady-state decode speed at several
// batch sizes, and the time to first token of one prompt cold and then again
// from the prefix cache. All sequences are greedy and ignore EOS; every
// prompt is distinct except the one sent twice.
//
// Thread contract: MeasureEngine is called from one thread; it blocks while
// the engine works and calls `progress` on that thread only.
#ifndef TERN_CLI_BENCH_BENCH_ENGINE_H_
#define TERN_CLI_BENCH_BENCH_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/engine/engine.h"
#include "worker/model/model.h"

namespace tern::cli {

struct EngineBenchOptions {
  // Prompt lengths whose prefill speed is measured (one fresh prompt each).
  std::vector<int32_t> prefill_lengths = {512, 2048};
  // The prompt sent twice for cold vs prefix-cached TTFT. When it is one of
  // prefill_lengths, that measurement is the cold one.
  int32_t ttft_length = 2048;
  std::vector<int32_t> decode_batches = {1, 8, 32};
  int32_t decode_prompt = 16;  // prompt tokens of each decoding sequence
  int32_t decode_steps = 24;   // tokens after the first, per sequence
  // Longest wait for one group of sequences before DEADLINE_EXCEEDED.
  absl::Duration timeout = absl::Minutes(20);
  // Lines of progress (which phase, which iteration, what it measured).
  std::function<void(const std::string&)> progress;
  // Selects the prompts: repeated measurements on one engine pass different
  // seeds, so no prompt is found in the prefix cache a previous run filled.
  uint64_t prompt_seed = 0;
};

struct PrefillFigure {
  int32_t tokens = 0;
  double ttft_s = 0.0;
  double tokens_per_s = 0.0;
};

struct DecodeFigure {
  int32_t batch = 0;
  double tokens_per_s = 0.0;  // over the batch
  double step_s = 0.0;        // one decode step of the whole batch
  double mean_context = 0.0;  // positions attended, averaged over the window
};

struct EngineFigures {
  std::vector<PrefillFigure> prefill;
  std::vector<DecodeFigure> decode;
  int32_t ttft_tokens = 0;
  double ttft_cold_s = 0.0;
  double ttft_cached_s = 0.0;
  int32_t ttft_cached_prompt_tokens = 0;  // reported by the engine
};

// An engine loaded the way the worker loads it, for benchmarks that measure
// it in process (`tern bench engine`, `tern bench serve --engine-model`).
struct BenchEngineSetup {
  int32_t max_num_seqs = 32;
  int32_t max_num_batched_tokens = 0;  // 0: the worker's default
  int64_t kv_cache_bytes = 0;          // 0: the worker's default
  worker::LmHeadFormat lm_head = worker::LmHeadFormat::kAuto;
};

struct BenchEngine {
  std::unique_ptr<worker::Model> model;
  std::unique_ptr<worker::Engine> engine;  // uses *model, so is destroyed first
  int32_t tp = 0;                          // the largest tp <= CPUs the model allows
  std::vector<int32_t> cpus;               // one per rank
  int32_t max_num_batched_tokens = 0;
  double kv_pool_bytes = 0.0;
};

// Loads the checkpoint in `dir` and starts an engine with one rank per CPU
// of `cpus` (fewer when the model's heads do not divide). Errors: the
// model's or the engine's.
absl::StatusOr<BenchEngine> LoadBenchEngine(const std::string& dir,
                                            const std::vector<int32_t>& cpus,
                                            const BenchEngineSetup& setup);

// Runs the phases in order (warm-up, prefill, prefix-cached TTFT, decode).
// Errors: the first failing sequence's status; DEADLINE_EXCEEDED past
// options.timeout (the group's sequences are cancelled).
absl::StatusOr<EngineFigures> MeasureEngine(worker::Engine& engine, int32_t vocab_size,
                                            const EngineBenchOptions& options);

// Steady-state decode from per-sequence token times (seconds, one entry per
// token, the first being the token that ends the prefill). The window runs
// from the moment every sequence has its first token to the moment the first
// sequence produced its last one, so every sequence decodes throughout it;
// tokens_per_s counts the tokens inside it. Nullopt when the window holds no
// token (fewer than two tokens a sequence).
struct SteadyDecode {
  double tokens_per_s = 0.0;
  double step_s = 0.0;
  int64_t tokens = 0;
};
std::optional<SteadyDecode> SteadyStateDecode(const std::vector<std::vector<double>>& token_times);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_BENCH_ENGINE_H_
