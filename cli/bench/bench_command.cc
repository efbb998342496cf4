#include "cli/bench/bench_command.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cli/bench/bench_engine.h"
#include "cli/bench/bench_llama_cpp.h"
#include "cli/bench/bench_repeat.h"
#include "cli/bench/bench_report.h"
#include "cli/bench/bench_serve.h"
#include "cli/bench/bench_simulate.h"
#include "cli/bench/bench_soak.h"
#include "cli/bench/constraint_bench.h"
#include "cli/bench/machine_probe.h"
#include "cli/cpu_set.h"
#include "cli/runtime_files.h"
#include "common/config.h"
#include "common/flags.h"
#include "kernels/dispatch.h"
#include "worker/engine/engine.h"
#include "worker/model/model.h"

namespace tern::cli {
namespace {

constexpr char kUsage[] =
    "usage: tern bench engine|serve|simulate|constraint|soak ...   (`tern bench serve --help`, "
    "...)\n"
    "       tern bench engine --model DIR [--threads N] [--quick] [--gguf PATH]\n"
    "                         [--no-llama-cpp] [--llama-cpp-script FILE] [--node PATH]\n"
    "                         [--max-num-batched-tokens N] [--kv-cache-mib N]\n"
    "                         [--repeat N] [--interference] [--prefill L,...] [--batches B,...]\n"
    "                         [--lm-head auto|as-stored|int8]\n"
    "  --threads N   CPUs to use (default: all the process may run on); tern runs tp = N\n"
    "  --quick       a short smoke run (128-token prompts, 8 decode steps)\n"
    "  --repeat N    measure each side N times (runs alternate); the table shows medians,\n"
    "                a second one each figure's min..max and spread\n"
    "  --interference  pair every run with one while a busy background thread (started and\n"
    "                stopped by the bench) competes for the CPUs; reports each side's loss\n"
    "  --prefill L,...  prompt lengths measured (default 512,2048); the longest is also the\n"
    "                cold/prefix-cached TTFT prompt\n"
    "  --batches B,...  decode batch sizes (default 1,8,32)\n"
    "  --lm-head auto|as-stored|int8  tern's lm_head (the worker's --lm-head; default auto)\n"
    "  --gguf PATH   llama.cpp's copy of the weights (default: DIR/model.gguf)\n"
    "  --llama-cpp-script FILE  the llama.cpp harness, tests/bench/llama_cpp_engine.mjs of\n"
    "                a checkout with its npm packages installed (default:\n"
    "                $TERN_LLAMA_CPP_SCRIPT); without it the llama.cpp column is skipped\n"
    "       tern bench constraint --model DIR [--threads N] [--quick]\n"
    "                         structured outputs: the per-step token-mask cost over the\n"
    "                         model's vocabulary against its decode step, batch 1 and 32\n";

void Say(const std::string& line) { std::cout << "[tern bench] " << line << std::endl; }

// What the run measures; --quick shrinks everything.
struct Plan {
  EngineBenchOptions engine;
  ProbeOptions probe;
};

Plan MakePlan(bool quick) {
  Plan plan;
  if (quick) {
    plan.engine.prefill_lengths = {128};
    plan.engine.ttft_length = 128;
    plan.engine.decode_prompt = 8;
    plan.engine.decode_steps = 8;
    plan.probe.buffer_bytes = size_t{256} << 20;
    plan.probe.passes = 2;
    plan.probe.fma_seconds = 0.1;
  }
  return plan;
}

// VmHWM counts from the last reset; writing 5 to clear_refs resets it, so
// the probes' buffer does not count as the engine's.
bool ResetPeakRss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

std::optional<double> PeakRssBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream fields(line.substr(6));
      double kib = 0;
      if (fields >> kib) return kib * 1024.0;
    }
  }
  return std::nullopt;
}

std::string Fraction(double value) { return absl::StrFormat("%.1f%%", 100.0 * value); }

struct Machine {
  double bandwidth_gb_s = 0.0;
  double fma_gflop_s = 0.0;
};

struct TernRun {
  // One entry per repetition; `loaded` (with --interference) pairs with
  // `clean` run for run.
  std::vector<EngineFigures> clean, loaded;
  double peak_rss_bytes = 0.0;
  double kv_pool_bytes = 0.0;
  int64_t decode_weight_bytes = 0;  // worker::Model::decode_weight_bytes
  int32_t tp = 0;
  int32_t max_num_batched_tokens = 0;
};

// How many times each side is measured, and whether each clean run is
// paired with one under a background load.
struct Repetition {
  int32_t runs = 1;
  bool interference = false;
};

absl::StatusOr<TernRun> RunTern(const std::string& dir, const std::vector<int32_t>& cpus,
                                const Flags& flags, const Plan& plan, bool rss_reset,
                                const Repetition& repetition = {}) {
  const auto start = std::chrono::steady_clock::now();
  Say(absl::StrCat("tern: loading ", dir));
  BenchEngineSetup setup;
  setup.max_num_seqs =
      *std::max_element(plan.engine.decode_batches.begin(), plan.engine.decode_batches.end());
  if (auto v = flags.GetInt("max-num-batched-tokens"); v.ok() && *v) {
    setup.max_num_batched_tokens = static_cast<int32_t>(**v);
  }
  if (auto v = flags.GetInt("kv-cache-mib"); v.ok() && *v) setup.kv_cache_bytes = **v << 20;
  auto lm_head = worker::ParseLmHeadFormat(flags.GetOr("lm-head", "auto"));
  if (!lm_head.ok()) return lm_head.status();
  setup.lm_head = *lm_head;
  auto bench = LoadBenchEngine(dir, cpus, setup);
  if (!bench.ok()) return bench.status();
  if (bench->tp != static_cast<int32_t>(cpus.size())) {
    Say(absl::StrFormat("note: tp %d does not divide this model; using tp %d",
                        static_cast<int>(cpus.size()), bench->tp));
  }
  TernRun run;
  run.tp = bench->tp;
  run.max_num_batched_tokens = bench->max_num_batched_tokens;
  run.kv_pool_bytes = bench->kv_pool_bytes;
  run.decode_weight_bytes = bench->engine->decode_weight_bytes();
  Say(absl::StrFormat(
      "tern: engine ready in %.1f s: tp %d on CPUs %s, %d KV blocks of %d tokens (%.0f MiB), "
      "max_num_batched_tokens %d",
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), run.tp,
      CpuListFlag(bench->cpus), bench->engine->num_kv_blocks(), bench->engine->kv_block_size(),
      run.kv_pool_bytes / 1048576.0, run.max_num_batched_tokens));
  Say("tern: decode GEMV " + bench->engine->gemv_tuning());
  const int32_t vocab_size = bench->model->config().vocab_size;
  for (int32_t r = 0; r < repetition.runs; ++r) {
    for (const bool loaded : {false, true}) {
      if (loaded && !repetition.interference) continue;
      EngineBenchOptions options = plan.engine;
      options.prompt_seed = 2 * static_cast<uint64_t>(r) + (loaded ? 1 : 0);
      const std::string tag = absl::StrCat(
          repetition.runs > 1 ? absl::StrCat("run ", r + 1, "/", repetition.runs, " ") : "",
          loaded ? "with a background load: " : "");
      options.progress = [&tag](const std::string& line) { Say("tern: " + tag + line); };
      std::optional<BackgroundLoad> load;
      if (loaded) load.emplace(1);
      auto figures = MeasureEngine(*bench->engine, vocab_size, options);
      if (!figures.ok()) return figures.status();
      (loaded ? run.loaded : run.clean).push_back(*std::move(figures));
    }
  }
  if (auto rss = PeakRssBytes(); rss && rss_reset) run.peak_rss_bytes = *rss;
  return run;
}

// The median of every figure over the runs (the runs measure the same
// figures in the same order).
EngineFigures MedianFigures(const std::vector<EngineFigures>& runs) {
  EngineFigures m = runs.front();
  const auto median = [&](auto value) {
    std::vector<double> values;
    for (const EngineFigures& run : runs) values.push_back(value(run));
    return SpreadOf(std::move(values)).median;
  };
  for (size_t i = 0; i < m.prefill.size(); ++i) {
    m.prefill[i].tokens_per_s =
        median([i](const EngineFigures& f) { return f.prefill[i].tokens_per_s; });
    m.prefill[i].ttft_s = median([i](const EngineFigures& f) { return f.prefill[i].ttft_s; });
  }
  for (size_t i = 0; i < m.decode.size(); ++i) {
    m.decode[i].tokens_per_s =
        median([i](const EngineFigures& f) { return f.decode[i].tokens_per_s; });
    m.decode[i].step_s = median([i](const EngineFigures& f) { return f.decode[i].step_s; });
  }
  m.ttft_cold_s = median([](const EngineFigures& f) { return f.ttft_cold_s; });
  m.ttft_cached_s = median([](const EngineFigures& f) { return f.ttft_cached_s; });
  return m;
}

LlamaCppFigures MedianFigures(const std::vector<LlamaCppFigures>& runs) {
  LlamaCppFigures m = runs.front();
  for (auto& [tokens, value] : m.prefill_tokens_per_s) {
    std::vector<double> values;
    for (const LlamaCppFigures& run : runs) {
      if (auto it = run.prefill_tokens_per_s.find(tokens); it != run.prefill_tokens_per_s.end()) {
        values.push_back(it->second);
      }
    }
    value = SpreadOf(std::move(values)).median;
  }
  for (auto& [batch, value] : m.decode_tokens_per_s) {
    std::vector<double> values;
    for (const LlamaCppFigures& run : runs) {
      if (auto it = run.decode_tokens_per_s.find(batch);
          it != run.decode_tokens_per_s.end() && it->second) {
        values.push_back(*it->second);
      }
    }
    if (!values.empty()) value = SpreadOf(std::move(values)).median;
  }
  return m;
}

// Every figure of the runs, tern's and llama.cpp's values side by side.
std::vector<RepeatedFigure> RepeatedFigures(const std::vector<EngineFigures>& tern,
                                            const std::vector<LlamaCppFigures>& llama) {
  std::vector<RepeatedFigure> out;
  if (tern.empty()) return out;
  const EngineFigures& first = tern.front();
  for (size_t i = 0; i < first.prefill.size(); ++i) {
    const int32_t tokens = first.prefill[i].tokens;
    RepeatedFigure& f = out.emplace_back();
    f.name = absl::StrCat("prefill ", tokens, " (tok/s)");
    for (const EngineFigures& run : tern) f.tern.push_back(run.prefill[i].tokens_per_s);
    for (const LlamaCppFigures& run : llama) {
      if (auto it = run.prefill_tokens_per_s.find(tokens); it != run.prefill_tokens_per_s.end()) {
        f.llama_cpp.push_back(it->second);
      }
    }
  }
  for (size_t i = 0; i < first.decode.size(); ++i) {
    const int32_t batch = first.decode[i].batch;
    RepeatedFigure& f = out.emplace_back();
    f.name = absl::StrCat("decode batch ", batch, " (tok/s)");
    for (const EngineFigures& run : tern) f.tern.push_back(run.decode[i].tokens_per_s);
    for (const LlamaCppFigures& run : llama) {
      if (auto it = run.decode_tokens_per_s.find(batch);
          it != run.decode_tokens_per_s.end() && it->second) {
        f.llama_cpp.push_back(*it->second);
      }
    }
  }
  if (first.ttft_tokens > 0) {
    RepeatedFigure& cold = out.emplace_back();
    cold.name = absl::StrCat("TTFT ", first.ttft_tokens, " cold (s)");
    cold.higher_is_better = false;
    for (const EngineFigures& run : tern) cold.tern.push_back(run.ttft_cold_s);
    RepeatedFigure& cached = out.emplace_back();
    cached.name = absl::StrCat("TTFT ", first.ttft_tokens, " prefix-cached (s)");
    cached.higher_is_better = false;
    for (const EngineFigures& run : tern) cached.tern.push_back(run.ttft_cached_s);
  }
  return out;
}

// A comma-separated list of positive integers, or `fallback` when absent.
absl::StatusOr<std::vector<int32_t>> IntListFlag(const Flags& flags, const std::string& name,
                                                 std::vector<int32_t> fallback) {
  const std::optional<std::string> text = flags.Get(name);
  if (!text) return fallback;
  std::vector<int32_t> values;
  for (absl::string_view part : absl::StrSplit(*text, ',', absl::SkipEmpty())) {
    int32_t value = 0;
    if (!absl::SimpleAtoi(part, &value) || value < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " must be a list of positive integers"));
    }
    values.push_back(value);
  }
  if (values.empty()) return absl::InvalidArgumentError(absl::StrCat("--", name, " is empty"));
  return values;
}

// `tern bench constraint`: the engine's decode step at batch 1 and 32, then
// the constraint masks of as many sequences, in the same run.
int RunBenchConstraint(const Flags& flags, const std::string& dir, const std::vector<int32_t>& cpus,
                       int32_t vocab_size) {
  const bool quick = flags.Has("quick");
  Plan plan = MakePlan(quick);
  plan.engine.prefill_lengths = {};
  plan.engine.ttft_length = 0;
  plan.engine.decode_batches = {1, 32};
  Say("phase 1/2: tern engine decode (the reference)");
  auto tern = RunTern(dir, cpus, flags, plan, /*rss_reset=*/false);
  if (!tern.ok()) {
    std::cerr << "tern bench constraint: tern engine: " << tern.status().message() << "\n";
    return 1;
  }
  Say("phase 2/2: constraint masks over the model's vocabulary");
  ConstraintBenchOptions options;
  options.tokenizer_json = (std::filesystem::path(dir) / "tokenizer.json").string();
  options.vocab_size = vocab_size;
  options.batch_sizes = {1, 32};
  if (quick) {
    options.sequences = 1;
    options.max_tokens = 60;
  }
  auto masks = RunConstraintBench(options);
  if (!masks.ok()) {
    std::cerr << "tern bench constraint: " << masks.status().message() << "\n";
    return 1;
  }
  std::cout << "\n";
  PrintConstraintBench(*masks, std::cout);
  std::cout << "\n[tern bench] mask cost per decode step (warm cache, every schema), target <= 5% "
               "of the step:\n";
  for (const DecodeFigure& d : tern->clean.front().decode) {
    for (const ConstraintBenchRow& row : masks->rows) {
      if (row.schema != "all" || !row.warm || row.batch != d.batch) continue;
      const double step_us = d.step_s * 1e6;
      const double share = row.batch_step_mean_us / step_us;
      std::cout << absl::StrFormat(
          "  batch %2d: decode step %.2f ms, masks %.3f ms = %.2f%% of the step  %s\n", d.batch,
          d.step_s * 1e3, row.batch_step_mean_us / 1e3, 100.0 * share,
          share <= 0.05 ? "met" : "NOT met");
    }
  }
  std::cout << std::flush;
  return 0;
}

}  // namespace

int RunBenchCommand(int argc, char** argv, int first) {
  if (first < argc && std::string(argv[first]) == "serve") {
    return RunBenchServe(argc - first, argv + first);
  }
  if (first < argc && std::string(argv[first]) == "soak") {
    return RunBenchSoak(argc - first, argv + first);
  }
  if (first < argc && std::string(argv[first]) == "simulate") {
    return RunBenchSimulate(argc - first, argv + first);
  }
  const std::string subcommand = first < argc ? argv[first] : "";
  if (subcommand != "engine" && subcommand != "constraint") {
    std::cerr << kUsage;
    return 2;
  }
  auto flags = Flags::Parse(
      argc, argv, first + 1,
      {"model", "threads", "gguf", "llama-cpp-script", "node", "max-num-batched-tokens",
       "kv-cache-mib", "repeat", "prefill", "batches", "lm-head"},
      {"quick", "no-llama-cpp", "interference", "help"});
  if (!flags.ok()) {
    std::cerr << "tern bench engine: " << flags.status().message() << "\n" << kUsage;
    return 2;
  }
  if (flags->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  const std::string dir = flags->GetOr("model", "");
  auto config = dir.empty() ? absl::InvalidArgumentError("--model DIR is required")
                            : worker::LoadModelConfig(dir);
  auto threads_flag = flags->GetInt("threads");
  for (const char* name : {"max-num-batched-tokens", "kv-cache-mib", "repeat"}) {
    if (auto v = flags->GetInt(name); !v.ok()) threads_flag = v.status();
  }
  if (!config.ok() || !threads_flag.ok()) {
    std::cerr << "tern bench engine: "
              << (!config.ok() ? config.status() : threads_flag.status()).message() << "\n"
              << kUsage;
    return 2;
  }
  // A script named on the command line that is not there fails now, not
  // after the long tern phase.
  const absl::StatusOr<std::string> script = FindRuntimeFile(LlamaCppScript(), *flags);
  if (!script.ok() && flags->Has("llama-cpp-script") && !flags->Has("no-llama-cpp")) {
    std::cerr << "tern bench engine: " << script.status().message() << "\n";
    return 2;
  }
  const std::vector<int32_t> all_cpus = ProcessCpus();
  const int64_t threads = threads_flag->value_or(static_cast<int64_t>(all_cpus.size()));
  if (threads < 1 || threads > static_cast<int64_t>(all_cpus.size())) {
    std::cerr << "tern bench engine: --threads must be in [1, " << all_cpus.size()
              << "] (the CPUs this process may run on)\n";
    return 2;
  }
  const std::vector<int32_t> cpus(all_cpus.begin(), all_cpus.begin() + threads);
  if (subcommand == "constraint") return RunBenchConstraint(*flags, dir, cpus, config->vocab_size);
  Plan plan = MakePlan(flags->Has("quick"));
  auto prefill = IntListFlag(*flags, "prefill", plan.engine.prefill_lengths);
  auto batches = IntListFlag(*flags, "batches", plan.engine.decode_batches);
  if (!prefill.ok() || !batches.ok()) {
    std::cerr << "tern bench engine: " << (!prefill.ok() ? prefill : batches).status().message()
              << "\n";
    return 2;
  }
  if (flags->Has("prefill")) {
    plan.engine.prefill_lengths = *prefill;
    // The cold/cached TTFT pair reuses the longest prompt asked for.
    plan.engine.ttft_length = *std::max_element(prefill->begin(), prefill->end());
  }
  plan.engine.decode_batches = *batches;
  Repetition repetition;
  repetition.runs = static_cast<int32_t>(flags->GetInt("repeat")->value_or(1));
  repetition.interference = flags->Has("interference");
  if (repetition.runs < 1 || repetition.runs > 100) {
    std::cerr << "tern bench engine: --repeat must be in [1, 100]\n";
    return 2;
  }
  ModelCost cost = ComputeModelCost(*config);
  const char* const kernel_level = kernels::IsaName(kernels::ActiveSelection().isa);
  Say(
      absl::StrFormat("model %s: %d layers, hidden %d, %.2f B parameters (%.0f MiB bf16); "
                      "%d threads on CPUs %s, %s kernels%s",
                      dir, config->num_hidden_layers, config->hidden_size, cost.total_params / 1e9,
                      cost.weight_bytes / 1048576.0, threads, CpuListFlag(cpus), kernel_level,
                      flags->Has("quick") ? " (quick run)" : ""));

  // 1. The machine.
  Say("phase 1/3: machine probes");
  plan.probe.cpus = cpus;
  plan.probe.progress = [](const std::string& line) { Say("probe: " + line); };
  auto bandwidth = MeasureReadBandwidth(plan.probe);
  auto fma = MeasureFmaPeak(plan.probe);
  if (!bandwidth.ok() || !fma.ok()) {
    std::cerr << "tern bench engine: "
              << (!bandwidth.ok() ? bandwidth.status() : fma.status()).message() << "\n";
    return 1;
  }
  const Machine machine{bandwidth->value, fma->value};
  Say(absl::StrFormat("machine: DRAM read %.1f GB/s, FP32 FMA peak %.1f GFLOP/s (%s), %d threads",
                      machine.bandwidth_gb_s, machine.fma_gflop_s, ProbeIsaName(fma->isa),
                      threads));
  const bool rss_reset = ResetPeakRss();

  // 2. tern.
  Say("phase 2/3: tern engine");
  auto tern = RunTern(dir, cpus, *flags, plan, rss_reset, repetition);
  if (!tern.ok()) {
    std::cerr << "tern bench engine: tern engine: " << tern.status().message() << "\n";
    return 1;
  }
  const EngineFigures ours = MedianFigures(tern->clean);
  // A quantized checkpoint reads fewer bytes per step than its bf16 count.
  if (tern->decode_weight_bytes > 0) cost.matmul_bytes = tern->decode_weight_bytes;

  // 3. llama.cpp.
  Say("phase 3/3: llama.cpp");
  std::optional<LlamaCppFigures> theirs;
  std::vector<LlamaCppFigures> llama_clean, llama_loaded;
  const std::string gguf =
      flags->GetOr("gguf", (std::filesystem::path(dir) / "model.gguf").string());
  if (flags->Has("no-llama-cpp")) {
    Say("llama.cpp: skipped (--no-llama-cpp)");
  } else if (!std::filesystem::exists(gguf)) {
    Say(absl::StrCat("llama.cpp: skipped: no GGUF at ", gguf,
                     " (pass --gguf PATH with the same weights)"));
  } else if (!script.ok()) {
    Say(absl::StrCat("llama.cpp: skipped: ", script.status().message()));
  } else {
    LlamaCppBenchOptions options;
    options.node = flags->GetOr("node", "node");
    options.script = *script;
    options.gguf = gguf;
    options.threads = static_cast<int32_t>(threads);
    options.prefill_lengths = plan.engine.prefill_lengths;
    options.decode_batches = plan.engine.decode_batches;
    options.decode_prompt = plan.engine.decode_prompt;
    options.decode_steps = plan.engine.decode_steps;
    // Like tern's: clean and loaded runs alternate, so drift in the
    // machine's background load reaches both alike.
    bool failed = false;
    for (int32_t r = 0; r < repetition.runs && !failed; ++r) {
      for (const bool loaded : {false, true}) {
        if (failed || (loaded && !repetition.interference)) continue;
        if (repetition.runs > 1 || repetition.interference) {
          Say(absl::StrCat("llama.cpp: run ", r + 1, "/", repetition.runs,
                           loaded ? " with a background load" : ""));
        }
        std::optional<BackgroundLoad> load;
        if (loaded) load.emplace(1);
        auto result = RunLlamaCppBench(options);
        if (!result.ok()) {
          Say(absl::StrCat("llama.cpp: not measured: ", result.status().message()));
          failed = true;
          continue;
        }
        (loaded ? llama_loaded : llama_clean).push_back(*std::move(result));
      }
    }
    if (!llama_clean.empty()) {
      theirs = MedianFigures(llama_clean);
      Say(absl::StrCat("llama.cpp build: ", theirs->build));
      Say(absl::StrCat("llama.cpp CPU features: ", theirs->system_info));
    }
  }

  // The table.
  std::vector<FigureRow> rows;
  BenchSummary summary;
  const double bw = machine.bandwidth_gb_s * 1e9;
  const double peak = machine.fma_gflop_s * 1e9;
  summary.prefill_tokens = ours.prefill.empty() ? 0 : ours.prefill.front().tokens;
  for (const PrefillFigure& p : ours.prefill) {
    // Every prefill chunk streams the weights once.
    const int64_t chunks =
        (p.tokens + tern->max_num_batched_tokens - 1) / tern->max_num_batched_tokens;
    const double bytes = PrefillBytes(cost, chunks);
    const double flops = PrefillFlops(cost, p.tokens);
    FigureRow row{absl::StrCat("prefill ", p.tokens), "tok/s", p.tokens_per_s, std::nullopt,
                  absl::StrCat("bw ", Fraction(bytes / p.ttft_s / bw), " / fma ",
                               Fraction(flops / p.ttft_s / peak))};
    if (theirs && theirs->prefill_tokens_per_s.count(p.tokens)) {
      row.llama_cpp = theirs->prefill_tokens_per_s.at(p.tokens);
    }
    if (p.tokens == 512 || p.tokens == summary.prefill_tokens) {
      summary.prefill_tokens = p.tokens;
      summary.prefill_tern = row.tern;
      summary.prefill_llama = row.llama_cpp;
    }
    rows.push_back(row);
  }
  int32_t largest_batch = 0;
  for (const DecodeFigure& d : ours.decode) largest_batch = std::max(largest_batch, d.batch);
  for (const DecodeFigure& d : ours.decode) {
    const auto context = static_cast<int64_t>(std::lround(d.mean_context));
    const double bw_fraction = DecodeStepBytes(cost, d.batch, context) / d.step_s / bw;
    const double fma_fraction = DecodeStepFlops(cost, d.batch, context) / d.step_s / peak;
    FigureRow row{absl::StrCat("decode batch ", d.batch), "tok/s", d.tokens_per_s, std::nullopt,
                  absl::StrCat("bw ", Fraction(bw_fraction), " / fma ", Fraction(fma_fraction))};
    if (theirs && theirs->decode_tokens_per_s.count(d.batch)) {
      row.llama_cpp = theirs->decode_tokens_per_s.at(d.batch);
    }
    if (d.batch == 1) {
      summary.decode1_tern = d.tokens_per_s;
      summary.decode1_llama = row.llama_cpp;
      summary.decode1_bw_fraction = bw_fraction;
    }
    if (d.batch == largest_batch && d.batch > 1) {
      summary.big_batch = d.batch;
      summary.decode_big_tern = d.tokens_per_s;
      summary.decode_big_llama = row.llama_cpp;
      summary.decode_big_fma_fraction = fma_fraction;
    }
    rows.push_back(row);
  }
  if (ours.ttft_tokens > 0) {
    rows.push_back({absl::StrCat("TTFT ", ours.ttft_tokens, " cold"), "s", ours.ttft_cold_s,
                    std::nullopt, ""});
    rows.push_back({absl::StrCat("TTFT ", ours.ttft_tokens, " prefix-cached"), "s",
                    ours.ttft_cached_s, std::nullopt,
                    absl::StrCat(ours.ttft_cached_prompt_tokens, " tokens cached")});
    summary.ttft_cold_s = ours.ttft_cold_s;
    summary.ttft_cached_s = ours.ttft_cached_s;
  }
  const double bound = static_cast<double>(cost.weight_bytes) + tern->kv_pool_bytes;
  if (tern->peak_rss_bytes > 0) {
    rows.push_back(
        {"peak RSS", "MiB", tern->peak_rss_bytes / 1048576.0, std::nullopt,
         absl::StrFormat("weights %.0f + KV pool %.0f MiB", cost.weight_bytes / 1048576.0,
                         tern->kv_pool_bytes / 1048576.0)});
    summary.peak_rss_bytes = tern->peak_rss_bytes;
    summary.weights_plus_kv_bytes = bound;
  } else {
    Say("note: peak RSS not measured (cannot reset VmHWM after the probes)");
  }
  std::cout << "\n[tern bench] results: tern tp " << tern->tp << " (" << kernel_level
            << " kernels) vs " << (theirs ? theirs->build : std::string("llama.cpp (not measured)"))
            << ", " << threads << " threads; ratio = tern / llama.cpp; roofline against "
            << absl::StrFormat("%.1f GB/s and %.1f GFLOP/s", machine.bandwidth_gb_s,
                               machine.fma_gflop_s)
            << "\n\n"
            << FormatFigureTable(rows) << "\n[tern bench] targets:\n"
            << FormatTargets(CheckTargets(summary)) << std::flush;
  if (repetition.runs > 1) {
    std::cout << "\n[tern bench] spread over " << repetition.runs
              << " runs (the table above shows the medians; spread = (max - min) / median):\n\n"
              << FormatRepeatTable(RepeatedFigures(tern->clean, llama_clean)) << std::flush;
  }
  if (repetition.interference) {
    std::cout << "\n[tern bench] interference: one busy background thread during the measurement "
                 "vs the clean runs, medians of "
              << repetition.runs << " runs each; loss = share of the clean figure lost:\n\n"
              << FormatInterferenceTable(RepeatedFigures(tern->clean, llama_clean),
                                         RepeatedFigures(tern->loaded, llama_loaded))
              << std::flush;
  }
  return 0;
}

}  // namespace tern::cli
