// The load generator of `tern bench serve`: runs a Workload against an
// OpenAI-compatible server with streaming requests and records each one.
//
// Sessions (bench_datasets.h) are the unit of concurrency: the turns of one
// session go one after another, each carrying the history so far; sessions
// run side by side. Either `concurrency` sessions are in flight at all times
// (each slot keeps one keep-alive connection), or sessions start at Poisson
// arrivals of `request_rate` per second, each on its own connection, with no
// cap. Every request asks for exactly output_len tokens (max_tokens,
// ignore_eos) and for a usage chunk (stream_options.include_usage).
//
// Bounded: every request has `request_timeout`, the whole run `run_timeout`;
// whatever is unfinished then counts as failed ("run timeout"), as do the
// later turns of a session whose turn failed ("earlier turn failed").
//
// Thread contract: RunLoad runs its own io_context on the calling thread.
#ifndef TERN_CLI_BENCH_BENCH_LOAD_H_
#define TERN_CLI_BENCH_BENCH_LOAD_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/bench/bench_datasets.h"
#include "cli/bench/bench_metrics.h"
#include "cli/bench/openai_stream_client.h"

namespace tern::cli {

struct LoadOptions {
  HttpEndpoint endpoint;
  std::string model;
  bool chat = false;        // /v1/chat/completions instead of /v1/completions
  int32_t concurrency = 8;  // sessions in flight (when request_rate is 0)
  double request_rate = 0;  // sessions per second, Poisson arrivals; 0: closed loop
  uint64_t seed = 0;        // arrival times
  std::chrono::milliseconds request_timeout{std::chrono::minutes(5)};
  std::chrono::milliseconds run_timeout{std::chrono::minutes(30)};
  std::string policy;    // sent as x-tern-routing-policy when not empty
  bool progress = true;  // a progress line on stderr
};

struct LoadResult {
  std::vector<RequestRecord> records;  // one per request of the workload
  double duration_s = 0;               // first send to last completion
};

// The request body for turn `turn` of `session`.
std::string RequestBody(const LoadOptions& options, const Workload& workload,
                        const Session& session, size_t turn,
                        const std::vector<std::string>& answers);

// INVALID_ARGUMENT for a bad concurrency/rate; otherwise every failure is a
// record.
absl::StatusOr<LoadResult> RunLoad(const Workload& workload, const LoadOptions& options);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_BENCH_LOAD_H_
