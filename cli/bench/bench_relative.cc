#include "cli/bench/bench_relative.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/bench/bench_engine.h"
#include "cli/bench/bench_metrics.h"
#include "cli/bench/bench_repeat.h"
#include "cli/bench/bench_report.h"

namespace tern::cli {
namespace {

// One request of `input_tokens` prompt tokens (BOS included) asking for
// `output_tokens`, through `target`; returns its metrics.
absl::StatusOr<ServeMetrics> OneRequest(const RelativeTarget& target,
                                        const PromptSynthesizer& prompts, int32_t input_tokens,
                                        int32_t output_tokens, uint64_t seed) {
  DatasetOptions dataset;
  dataset.kind = DatasetKind::kRandom;
  dataset.num_prompts = 1;
  // Completions prompts are encoded with BOS, which the engine's prompt
  // lengths count too.
  dataset.input_len = input_tokens - 1;
  dataset.output_len = output_tokens;
  dataset.seed = seed;
  auto workload = BuildWorkload(dataset, prompts);
  if (!workload.ok()) return workload.status();
  LoadOptions load = target.load;
  load.concurrency = 1;
  load.request_rate = 0;
  load.progress = false;
  auto result = RunLoad(*workload, load);
  if (!result.ok()) return result.status();
  ServeMetrics metrics = ComputeServeMetrics(result->records, result->duration_s);
  if (metrics.failed > 0 || metrics.completed != 1) {
    std::string why;
    for (const auto& [kind, count] : metrics.errors) absl::StrAppend(&why, " ", kind);
    return absl::FailedPreconditionError(
        absl::StrCat(target.label, ": the request failed:", why.empty() ? " (no reason)" : why));
  }
  return metrics;
}

std::string RatioCell(const std::vector<double>& numerator, const std::vector<double>& base) {
  if (numerator.empty() || base.empty()) return "n/a";
  const double b = SpreadOf(base).median;
  if (b <= 0.0) return "n/a";
  return absl::StrFormat("%.1f%%", 100.0 * SpreadOf(numerator).median / b);
}

std::string MedianCell(const std::vector<double>& values) {
  if (values.empty()) return "n/a";
  const Spread s = SpreadOf(values);
  if (s.count < 2) return FormatFigureValue(s.median);
  return absl::StrFormat("%s (%s..%s)", FormatFigureValue(s.median), FormatFigureValue(s.min),
                         FormatFigureValue(s.max));
}

}  // namespace

absl::StatusOr<std::vector<RelativeFigure>> MeasureRelative(const RelativeOptions& options,
                                                            const PromptSynthesizer& prompts) {
  if (options.rounds < 1 || options.decode_prompt < 2 || options.decode_tokens < 3 ||
      options.prefill_tokens < 2) {
    return absl::InvalidArgumentError(
        "rounds >= 1, decode prompt >= 2, decode tokens >= 3 and prefill tokens >= 2 please");
  }
  const auto say = [&](const std::string& line) {
    if (options.progress) options.progress(line);
  };
  std::vector<RelativeFigure> figures(2);
  figures[0].name = "decode batch 1 (tok/s)";
  figures[1].name = absl::StrCat("prefill ", options.prefill_tokens, " (tok/s)");
  for (RelativeFigure& f : figures) f.servers.resize(options.servers.size());

  std::optional<BenchEngine> engine;
  if (!options.engine_model_dir.empty()) {
    say(absl::StrCat("in-process engine: loading ", options.engine_model_dir));
    auto loaded = LoadBenchEngine(options.engine_model_dir, options.cpus, BenchEngineSetup{});
    if (!loaded.ok()) return loaded.status();
    engine = *std::move(loaded);
    say(absl::StrFormat("in-process engine: tp %d on CPUs %s", engine->tp,
                        absl::StrJoin(engine->cpus, ",")));
  }
  // Like the engine's own warm-up: the first request after a server starts
  // may fault its weights in from disk, which is not what it costs to serve.
  // Its outcome is reported, not measured.
  for (const RelativeTarget& target : options.servers) {
    auto warm = OneRequest(target, prompts, options.decode_prompt, 4, options.seed + 1000);
    say(absl::StrCat(target.label, ": warm-up request ",
                     warm.ok() ? "done" : absl::StrCat("failed: ", warm.status().message())));
  }
  for (int32_t round = 0; round < options.rounds; ++round) {
    const uint64_t seed = options.seed + 2 * static_cast<uint64_t>(round);
    for (size_t s = 0; s < options.servers.size(); ++s) {
      const RelativeTarget& target = options.servers[s];
      auto decode = OneRequest(target, prompts, options.decode_prompt, options.decode_tokens, seed);
      if (!decode.ok()) return decode.status();
      auto prefill = OneRequest(target, prompts, options.prefill_tokens, 1, seed + 1);
      if (!prefill.ok()) return prefill.status();
      figures[0].servers[s].push_back(1e3 / decode->tpot_ms.median);
      figures[1].servers[s].push_back(options.prefill_tokens * 1e3 / prefill->ttft_ms.median);
      say(absl::StrFormat(
          "round %d/%d %s: decode %.2f tok/s (TPOT %.1f ms), prefill %d: TTFT "
          "%.3f s",
          round + 1, options.rounds, target.label, figures[0].servers[s].back(),
          decode->tpot_ms.median, options.prefill_tokens, prefill->ttft_ms.median / 1e3));
    }
    if (engine) {
      EngineBenchOptions bench;
      bench.prefill_lengths = {options.prefill_tokens};
      bench.ttft_length = 0;
      bench.decode_batches = {1};
      bench.decode_prompt = options.decode_prompt;
      bench.decode_steps = options.decode_tokens - 1;
      bench.prompt_seed = seed;
      auto measured = MeasureEngine(*engine->engine, engine->model->config().vocab_size, bench);
      if (!measured.ok()) return measured.status();
      figures[0].engine.push_back(measured->decode.front().tokens_per_s);
      figures[1].engine.push_back(measured->prefill.front().tokens_per_s);
      say(absl::StrFormat("round %d/%d in-process: decode %.2f tok/s, prefill %d: TTFT %.3f s",
                          round + 1, options.rounds, figures[0].engine.back(),
                          options.prefill_tokens, measured->prefill.front().ttft_s));
    }
  }
  return figures;
}

std::string FormatRelativeTable(const std::vector<RelativeFigure>& figures,
                                const std::vector<std::string>& server_labels) {
  const bool has_engine = !figures.empty() && !figures.front().engine.empty();
  std::vector<std::string> header = {"figure"};
  if (has_engine) header.push_back("in-process");
  for (size_t s = 0; s < server_labels.size(); ++s) {
    header.push_back(server_labels[s]);
    if (has_engine) {
      header.push_back(server_labels[s] + " / in-process");
    } else if (s > 0) {
      header.push_back(server_labels[s] + " / " + server_labels[0]);
    }
  }
  std::vector<std::vector<std::string>> cells = {header};
  for (const RelativeFigure& f : figures) {
    std::vector<std::string> row = {f.name};
    if (has_engine) row.push_back(MedianCell(f.engine));
    for (size_t s = 0; s < f.servers.size(); ++s) {
      row.push_back(MedianCell(f.servers[s]));
      if (has_engine) {
        row.push_back(RatioCell(f.servers[s], f.engine));
      } else if (s > 0) {
        row.push_back(RatioCell(f.servers[s], f.servers[0]));
      }
    }
    cells.push_back(std::move(row));
  }
  return FormatTable(cells);
}

}  // namespace tern::cli
