#include "cli/bench/bench_engine.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "cli/bench/bench_report.h"
#include "cli/cpu_set.h"
#include "common/config.h"

namespace tern::cli {
namespace {

using Clock = std::chrono::steady_clock;

// What one sequence's sink saw. Written on the engine thread, read by the
// caller under the group's mutex.
struct Trace {
  std::vector<Clock::time_point> token_times;
  bool finished = false;
  int32_t cached_prompt_tokens = 0;
  absl::Status error;
};

struct Group {
  absl::Mutex mu;
  std::vector<Trace> traces ABSL_GUARDED_BY(mu);
  size_t finished ABSL_GUARDED_BY(mu) = 0;
  int64_t tokens ABSL_GUARDED_BY(mu) = 0;
};

struct GroupResult {
  Clock::time_point submitted;
  std::vector<Trace> traces;
};

// Submits `specs` together and waits until all finish, reporting progress
// every few seconds as "<label>: k/n tokens".
absl::StatusOr<GroupResult> RunGroup(worker::Engine& engine,
                                     std::vector<worker::SequenceSpec> specs,
                                     const std::string& label, const EngineBenchOptions& options) {
  // Shared with the sinks, which may outlive this call after a timeout.
  auto group = std::make_shared<Group>();
  int64_t expected_tokens = 0;
  {
    absl::MutexLock lock(&group->mu);
    group->traces.resize(specs.size());
  }
  for (const auto& spec : specs) expected_tokens += spec.max_tokens;
  std::vector<std::shared_ptr<worker::SequenceHandle>> handles;
  GroupResult result;
  result.submitted = Clock::now();
  for (size_t i = 0; i < specs.size(); ++i) {
    auto handle = engine.Submit(std::move(specs[i]), [group, i](worker::StreamEvent event) {
      const auto now = Clock::now();
      absl::MutexLock lock(&group->mu);
      Trace& trace = group->traces[i];
      trace.token_times.insert(trace.token_times.end(), event.tokens.size(), now);
      group->tokens += static_cast<int64_t>(event.tokens.size());
      if (event.finished) {
        trace.finished = true;
        trace.cached_prompt_tokens = event.cached_prompt_tokens;
        if (event.finish_reason == worker::FinishReason::kError) {
          trace.error = event.error;
        } else if (event.finish_reason == worker::FinishReason::kCancelled) {
          trace.error = absl::CancelledError("the engine cancelled a sequence");
        }
        ++group->finished;
      }
    });
    if (!handle.ok()) {
      for (auto& h : handles) h->Cancel();
      return handle.status();
    }
    handles.push_back(*std::move(handle));
  }
  const auto deadline = absl::Now() + options.timeout;
  const size_t count = handles.size();
  absl::MutexLock lock(&group->mu);
  const auto all_done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(group->mu) {
    return group->finished == count;
  };
  while (!group->mu.AwaitWithDeadline(absl::Condition(&all_done),
                                      std::min(deadline, absl::Now() + absl::Seconds(5)))) {
    if (absl::Now() >= deadline) {
      for (auto& h : handles) h->Cancel();
      return absl::DeadlineExceededError(
          absl::StrCat(label, ": not finished after ", absl::FormatDuration(options.timeout)));
    }
    if (options.progress) {
      options.progress(
          absl::StrFormat("%s: %d/%d tokens after %.0f s", label, group->tokens, expected_tokens,
                          std::chrono::duration<double>(Clock::now() - result.submitted).count()));
    }
  }
  for (const Trace& trace : group->traces) {
    if (!trace.error.ok()) return trace.error;
  }
  result.traces = group->traces;
  return result;
}

// Distinct deterministic prompts: splitmix64 over a counter.
class PromptMaker {
 public:
  PromptMaker(int32_t vocab_size, uint64_t seed)
      : state_(0x7465726e + seed * 0x632be59bd9b4e019ULL),
        low_(vocab_size > 4000 ? 1000 : 0),
        span_(std::max<int64_t>(1, std::min<int64_t>(vocab_size, 120000) - low_)) {}

  std::vector<int32_t> Next(int32_t length) {
    std::vector<int32_t> prompt(length);
    for (int32_t& id : prompt) {
      uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      id = static_cast<int32_t>(low_ + static_cast<int64_t>((z ^ (z >> 31)) % span_));
    }
    return prompt;
  }

 private:
  uint64_t state_;
  const int64_t low_;
  const int64_t span_;
};

worker::SequenceSpec GreedySpec(std::string id, std::vector<int32_t> prompt, int32_t max_tokens) {
  worker::SequenceSpec spec;
  spec.request_id = std::move(id);
  spec.prompt = std::move(prompt);
  spec.sampling.temperature = 0.0f;
  spec.max_tokens = max_tokens;
  spec.ignore_eos = true;
  return spec;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Time from submission to the first token of a single sequence.
absl::StatusOr<std::pair<double, int32_t>> TimeToFirstToken(worker::Engine& engine,
                                                            std::vector<int32_t> prompt,
                                                            const std::string& id,
                                                            const EngineBenchOptions& options) {
  std::vector<worker::SequenceSpec> specs;
  specs.push_back(GreedySpec(id, std::move(prompt), 1));
  auto run = RunGroup(engine, std::move(specs), id, options);
  if (!run.ok()) return run.status();
  const Trace& trace = run->traces[0];
  if (trace.token_times.empty()) return absl::InternalError(id + ": no token");
  return std::make_pair(Seconds(trace.token_times[0] - run->submitted), trace.cached_prompt_tokens);
}

}  // namespace

std::optional<SteadyDecode> SteadyStateDecode(const std::vector<std::vector<double>>& token_times) {
  if (token_times.empty()) return std::nullopt;
  double start = -1e300, end = 1e300;
  for (const auto& times : token_times) {
    if (times.size() < 2) return std::nullopt;
    start = std::max(start, times.front());
    end = std::min(end, times.back());
  }
  int64_t tokens = 0;
  for (const auto& times : token_times) {
    for (double t : times) tokens += (t > start && t <= end) ? 1 : 0;
  }
  if (tokens == 0 || end <= start) return std::nullopt;
  SteadyDecode steady;
  steady.tokens = tokens;
  steady.tokens_per_s = static_cast<double>(tokens) / (end - start);
  steady.step_s = (end - start) / (static_cast<double>(tokens) / token_times.size());
  return steady;
}

absl::StatusOr<BenchEngine> LoadBenchEngine(const std::string& dir,
                                            const std::vector<int32_t>& cpus,
                                            const BenchEngineSetup& setup) {
  BenchEngine bench;
  auto model = worker::Model::Load(dir);
  if (!model.ok()) return model.status();
  bench.model = *std::move(model);
  const worker::ModelConfig& config = bench.model->config();
  const WorkerSection defaults;
  worker::EngineOptions options;
  options.max_num_seqs = setup.max_num_seqs;
  options.max_num_batched_tokens = setup.max_num_batched_tokens > 0
                                       ? setup.max_num_batched_tokens
                                       : defaults.max_num_batched_tokens;
  options.enable_prefix_caching = true;
  options.executor.tp = LargestValidTp(config, static_cast<int32_t>(cpus.size()));
  options.executor.cpus.assign(cpus.begin(), cpus.begin() + options.executor.tp);
  options.executor.block_size = defaults.kv_block_size;
  options.executor.kv_cache_bytes = setup.kv_cache_bytes > 0
                                        ? setup.kv_cache_bytes
                                        : static_cast<int64_t>(defaults.kv_cache_gib * (1 << 30));
  options.executor.lm_head = setup.lm_head;
  bench.cpus = options.executor.cpus;
  bench.max_num_batched_tokens = options.max_num_batched_tokens;
  auto engine = worker::Engine::Create(bench.model.get(), options);
  if (!engine.ok()) return engine.status();
  bench.engine = *std::move(engine);
  bench.tp = bench.engine->tp();
  bench.kv_pool_bytes = static_cast<double>(bench.engine->num_kv_blocks()) *
                        bench.engine->kv_block_size() *
                        static_cast<double>(ComputeModelCost(config).kv_bytes_per_token);
  return bench;
}

absl::StatusOr<EngineFigures> MeasureEngine(worker::Engine& engine, int32_t vocab_size,
                                            const EngineBenchOptions& options) {
  const auto say = [&](const std::string& line) {
    if (options.progress) options.progress(line);
  };
  PromptMaker prompts(vocab_size, options.prompt_seed);
  EngineFigures figures;

  say("warm-up: one short sequence");
  {
    std::vector<worker::SequenceSpec> specs;
    specs.push_back(GreedySpec("warm-up", prompts.Next(16), 4));
    auto warm = RunGroup(engine, std::move(specs), "warm-up", options);
    if (!warm.ok()) return warm.status();
  }

  std::vector<int32_t> ttft_prompt;
  std::optional<double> ttft_cold;
  for (size_t i = 0; i < options.prefill_lengths.size(); ++i) {
    const int32_t n = options.prefill_lengths[i];
    std::vector<int32_t> prompt = prompts.Next(n);
    if (n == options.ttft_length && ttft_prompt.empty()) ttft_prompt = prompt;
    say(absl::StrFormat("prefill %d/%d: a fresh %d-token prompt", i + 1,
                        options.prefill_lengths.size(), n));
    auto ttft = TimeToFirstToken(engine, std::move(prompt), absl::StrCat("prefill-", n), options);
    if (!ttft.ok()) return ttft.status();
    if (ttft->second != 0) {
      return absl::InternalError(absl::StrCat("prefill ", n, ": the fresh prompt hit the prefix ",
                                              "cache (", ttft->second, " tokens)"));
    }
    figures.prefill.push_back({n, ttft->first, n / ttft->first});
    if (n == options.ttft_length && !ttft_cold) ttft_cold = ttft->first;
    say(absl::StrFormat("prefill %d tokens: %.3f s to the first token, %.1f tok/s", n, ttft->first,
                        n / ttft->first));
  }

  if (options.ttft_length > 0) {
    if (ttft_prompt.empty()) {
      ttft_prompt = prompts.Next(options.ttft_length);
      say(absl::StrFormat("TTFT 1/2: a fresh %d-token prompt (cold)", options.ttft_length));
      auto cold = TimeToFirstToken(engine, ttft_prompt, "ttft-cold", options);
      if (!cold.ok()) return cold.status();
      ttft_cold = cold->first;
    }
    say(absl::StrFormat("TTFT 2/2: the same %d-token prompt again (prefix-cached)",
                        options.ttft_length));
    auto cached = TimeToFirstToken(engine, ttft_prompt, "ttft-cached", options);
    if (!cached.ok()) return cached.status();
    figures.ttft_tokens = options.ttft_length;
    figures.ttft_cold_s = *ttft_cold;
    figures.ttft_cached_s = cached->first;
    figures.ttft_cached_prompt_tokens = cached->second;
    say(absl::StrFormat("TTFT %d tokens: cold %.4f s, cached %.4f s (%d tokens from the cache)",
                        options.ttft_length, figures.ttft_cold_s, figures.ttft_cached_s,
                        figures.ttft_cached_prompt_tokens));
  }

  for (size_t i = 0; i < options.decode_batches.size(); ++i) {
    const int32_t batch = options.decode_batches[i];
    const std::string label = absl::StrCat("decode batch ", batch);
    say(absl::StrFormat("decode %d/%d: batch %d, %d-token prompts, %d steps", i + 1,
                        options.decode_batches.size(), batch, options.decode_prompt,
                        options.decode_steps));
    std::vector<worker::SequenceSpec> specs;
    for (int32_t s = 0; s < batch; ++s) {
      specs.push_back(GreedySpec(absl::StrCat("decode-", batch, "-", s),
                                 prompts.Next(options.decode_prompt), options.decode_steps + 1));
    }
    auto run = RunGroup(engine, std::move(specs), label, options);
    if (!run.ok()) return run.status();
    std::vector<std::vector<double>> times;
    for (const Trace& trace : run->traces) {
      std::vector<double>& seconds = times.emplace_back();
      for (auto t : trace.token_times) seconds.push_back(Seconds(t - run->submitted));
    }
    auto steady = SteadyStateDecode(times);
    if (!steady) return absl::InternalError(label + ": no steady-state decode window");
    figures.decode.push_back({batch, steady->tokens_per_s, steady->step_s,
                              options.decode_prompt + 1.0 + options.decode_steps / 2.0});
    say(absl::StrFormat("%s: %.1f tok/s (%.1f ms per step, %d tokens in the window)", label,
                        steady->tokens_per_s, steady->step_s * 1e3, steady->tokens));
  }
  return figures;
}

}  // namespace tern::cli
