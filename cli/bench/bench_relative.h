// The engine-relative figures of `tern bench serve --engine-model DIR`: the
// same figures measured in one run through the API (streaming completions of
// a running cluster, or any OpenAI-compatible server given by URL) and on the
// engine in process, so what the serving path costs is a ratio that cannot
// regress unseen.
//
// Figures: decode batch 1 (tok/s: one sequence of decode_prompt prompt tokens
// asking for decode_tokens tokens, EOS ignored; through the API 1 / TPOT) and
// prefill N (tok/s: N prompt tokens over the time to the first token of a
// fresh prompt). One unmeasured request warms each server up first. Each
// round measures every target once, in turn, so drift in the machine's load
// reaches all of them alike; the tables show medians.
//
// Thread contract: MeasureRelative blocks the calling thread; it runs each
// server's load generator on that thread.
#ifndef TERN_CLI_BENCH_BENCH_RELATIVE_H_
#define TERN_CLI_BENCH_BENCH_RELATIVE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/bench/bench_datasets.h"
#include "cli/bench/bench_load.h"

namespace tern::cli {

struct RelativeTarget {
  std::string label;  // column name: "API", the compared server's name
  LoadOptions load;   // endpoint, model, timeouts (concurrency is set to 1)
};

struct RelativeOptions {
  std::string engine_model_dir;  // empty: no in-process column
  std::vector<int32_t> cpus;     // the in-process engine's, one rank each
  std::vector<RelativeTarget> servers;
  int32_t rounds = 3;
  int32_t decode_prompt = 16;
  int32_t decode_tokens = 64;
  int32_t prefill_tokens = 512;
  uint64_t seed = 0;
  std::function<void(const std::string&)> progress;
};

// One figure: its value per round in process and per server (in
// options.servers' order).
struct RelativeFigure {
  std::string name;  // "decode batch 1 (tok/s)"
  std::vector<double> engine;
  std::vector<std::vector<double>> servers;
};

// Errors: INVALID_ARGUMENT for bad sizes; the engine's load errors; a failed
// request (FAILED_PRECONDITION with the server's label and error).
absl::StatusOr<std::vector<RelativeFigure>> MeasureRelative(const RelativeOptions& options,
                                                            const PromptSynthesizer& prompts);

// figure | in-process | <server> | <server> / in-process | ... with medians;
// without in-process figures, every server after the first is compared with
// the first.
std::string FormatRelativeTable(const std::vector<RelativeFigure>& figures,
                                const std::vector<std::string>& server_labels);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_BENCH_RELATIVE_H_
