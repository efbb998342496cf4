// What `tern bench serve` measures, with the definitions of vLLM's
// benchmark_serving:
//   TTFT  time from sending the request to the first chunk with text;
//   TPOT  (e2e - TTFT) / (output tokens - 1), per request with > 1 token;
//   ITL   every gap between consecutive text chunks, over all requests;
//   E2E   time from sending to the end of the stream;
//   throughputs over the run's wall time: requests, output tokens, and input +
//   output tokens per second.
// Token counts come from the stream's usage chunk (stream_options.
// include_usage); the prefix hit rate is sum(cached prompt tokens) /
// sum(prompt tokens). Percentiles interpolate linearly between order
// statistics, as numpy.percentile does by default.
//
// Also the incremental parser of the server-sent event streams.
//
// Thread contract: plain values and pure functions; SseParser and
// StreamChunkReader are single-threaded objects.
#ifndef TERN_CLI_BENCH_BENCH_METRICS_H_
#define TERN_CLI_BENCH_BENCH_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace tern::cli {

// Cuts a text/event-stream into events and hands each event's data (its
// `data:` lines joined by '\n') to the callback. Bytes may arrive in any
// pieces; lines end in \n, \r\n or \r; comment lines and other fields are
// ignored.
class SseParser {
 public:
  explicit SseParser(std::function<void(absl::string_view data)> on_event)
      : on_event_(std::move(on_event)) {}
  void Feed(absl::string_view bytes);

 private:
  void Line(absl::string_view line);

  std::function<void(absl::string_view)> on_event_;
  std::string line_;
  std::string data_;
  bool has_data_ = false;
  bool skip_lf_ = false;  // the last byte was a \r
};

// One request as the load generator saw it. Times are seconds on the run's
// steady clock.
struct RequestRecord {
  bool ok = false;
  std::string error;  // kind of failure, e.g. "http 503", "timeout", "connect"
  double start = 0;
  double end = 0;
  std::vector<double> chunk_times;  // arrival of each chunk with text
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  int64_t cached_tokens = 0;
  bool has_usage = false;
  std::string text;  // generated text (the next turn's history)
};

// Reads the JSON chunks of one OpenAI completion or chat stream into a
// record: text chunks, usage, an error object, the [DONE] marker.
class StreamChunkReader {
 public:
  explicit StreamChunkReader(RequestRecord* record) : record_(record) {}
  // `data` is one event's data, `now` its arrival time.
  void OnEvent(absl::string_view data, double now);
  bool done() const { return done_; }
  // Set when the stream carried an error object or unparsable JSON.
  const std::string& error() const { return error_; }

 private:
  RequestRecord* record_;
  bool done_ = false;
  std::string error_;
};

// numpy.percentile(values, q) with linear interpolation; 0 when empty.
double Percentile(std::vector<double> values, double q);

struct Distribution {
  double mean = 0, median = 0, p90 = 0, p99 = 0;
  size_t count = 0;
};
Distribution Summarize(const std::vector<double>& values);

struct ServeMetrics {
  int64_t completed = 0;
  int64_t failed = 0;
  std::map<std::string, int64_t> errors;  // failure kind -> count
  double duration_s = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  int64_t cached_tokens = 0;
  double request_throughput = 0;
  double output_throughput = 0;
  double total_throughput = 0;
  double prefix_hit_rate = 0;
  Distribution ttft_ms, tpot_ms, itl_ms, e2e_ms;
};

// Metrics of the successful records; failures are counted by kind.
ServeMetrics ComputeServeMetrics(absl::Span<const RequestRecord> records, double duration_s);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_BENCH_METRICS_H_
