// llama.cpp's side of `tern bench engine`: runs tests/bench/llama_cpp_engine.mjs
// (node-llama-cpp's prebuilt CPU build of llama.cpp; where the script is
// found: cli/runtime_files.h) as a child process on the GGUF with the same
// weights and reads back its figures. Its progress lines go to this
// process's stderr as they come.
//
// Thread contract: functions are thread-safe; RunLlamaCppBench blocks until
// the child exits.
#ifndef TERN_CLI_BENCH_BENCH_LLAMA_CPP_H_
#define TERN_CLI_BENCH_BENCH_LLAMA_CPP_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tern::cli {

struct LlamaCppBenchOptions {
  std::string node = "node";  // looked up on PATH when it has no slash
  std::string script;         // path of llama_cpp_engine.mjs
  std::string gguf;
  int32_t threads = 1;
  std::vector<int32_t> prefill_lengths;
  std::vector<int32_t> decode_batches;
  int32_t decode_prompt = 16;
  int32_t decode_steps = 24;
  absl::Duration timeout = absl::Minutes(20);
};

struct LlamaCppFigures {
  // e.g. "llama.cpp v0.5.0 (ggml-org/llama.cpp), prebuilt binary, node-llama-cpp 3.22.1"
  std::string build;
  std::string system_info;
  std::map<int32_t, double> prefill_tokens_per_s;
  // Absent values: that batch size could not run (reason in errors).
  std::map<int32_t, std::optional<double>> decode_tokens_per_s;
  std::map<std::string, std::string> errors;
};

// Parses the script's JSON result line. INVALID_ARGUMENT when malformed.
absl::StatusOr<LlamaCppFigures> ParseLlamaCppResult(const std::string& json_line);

// Runs the script and parses the last line it printed on stdout. UNAVAILABLE
// when the child cannot start or fails (exit status in the message);
// DEADLINE_EXCEEDED past options.timeout (the child is killed).
absl::StatusOr<LlamaCppFigures> RunLlamaCppBench(const LlamaCppBenchOptions& options);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_BENCH_LLAMA_CPP_H_
