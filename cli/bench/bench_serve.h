// `tern bench serve`: an OpenAI HTTP load generator with vLLM
// benchmark_serving's definitions (bench_metrics.h), datasets of exact token
// lengths (bench_datasets.h), closed-loop concurrency or Poisson arrivals
// (bench_load.h), and a side-by-side table when run once per routing policy
// (--policies; the policy travels in the x-tern-routing-policy header).
#ifndef TERN_CLI_BENCH_BENCH_SERVE_H_
#define TERN_CLI_BENCH_BENCH_SERVE_H_

#include <string>
#include <utility>
#include <vector>

#include "cli/bench/bench_metrics.h"

namespace tern::cli {

// argv[0] is the verb ("serve"); flags follow. Exit status 0 when every
// request succeeded, 1 when some failed, 2 for bad flags or setup errors.
int RunBenchServe(int argc, char** argv);

// The result table: one column per (label, metrics) run.
std::string FormatServeTable(const std::vector<std::pair<std::string, ServeMetrics>>& runs);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_BENCH_SERVE_H_
