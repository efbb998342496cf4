// The cost of constrained decoding's per-step token mask over a real
// vocabulary: generation of JSON for five representative schemas is
// simulated by filling the mask and taking a random allowed token (ending
// with some probability once the output may end), one sequence at a time and
// in batches stepped round-robin, with the constraint's mask cache cold
// (freshly compiled) and then warm (a second run on the same constraint).
//
// Thread contract: runs on the calling thread and shares nothing.
#ifndef TERN_CLI_BENCH_CONSTRAINT_BENCH_H_
#define TERN_CLI_BENCH_CONSTRAINT_BENCH_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tern::cli {

struct ConstraintBenchOptions {
  std::string tokenizer_json;  // a Hugging Face byte-level BPE tokenizer.json
  int32_t vocab_size = 0;      // the model's logits width; 0: the tokenizer's size
  std::vector<int32_t> batch_sizes = {1, 32};
  int32_t sequences = 4;         // per schema and batch size: batches run one after another
  int32_t max_tokens = 200;      // per sequence
  double end_probability = 0.3;  // of ending at a step where the output may end
  uint64_t seed = 1;
};

struct ConstraintBenchRow {
  std::string schema;  // a schema's name, or "all"
  int32_t batch = 1;
  bool warm = false;
  int64_t steps = 0;  // masks filled
  double p50_us = 0;
  double p99_us = 0;
  double mean_us = 0;
  double batch_step_mean_us = 0;  // all the batch's masks for one decoding step
  double hit_rate = 0;            // of the mask cache; -1 on the "all" rows
};

struct ConstraintBenchReport {
  double vocabulary_load_ms = 0;
  int32_t vocab_size = 0;
  double compile_ms_mean = 0;  // per schema, grammar and constraint
  std::vector<ConstraintBenchRow> rows;
};

// INVALID_ARGUMENT / NOT_FOUND when the tokenizer cannot be loaded;
// INTERNAL should a built-in schema fail to compile.
absl::StatusOr<ConstraintBenchReport> RunConstraintBench(const ConstraintBenchOptions& options);

void PrintConstraintBench(const ConstraintBenchReport& report, std::ostream& out);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_CONSTRAINT_BENCH_H_
