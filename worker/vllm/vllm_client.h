// A small blocking HTTP/1.1 client for talking to a co-located vLLM server
// (Boost.Beast over a plain socket): GET for /health and /metrics, and a
// POST whose server-sent event stream is read event by event. One
// connection per exchange (vLLM's requests are long; connecting to a
// neighbour costs far less than a token). Timeouts are socket timeouts: a
// connect, a write or a read that waits longer fails with DEADLINE_EXCEEDED.
//
// Thread contract: an SseStream is read by one thread; Abort may be called
// from any other while the stream is alive, and makes a blocked Next return
// at once (the connection is shut down, which the server sees as the client
// going away).
#ifndef TERN_WORKER_VLLM_VLLM_CLIENT_H_
#define TERN_WORKER_VLLM_VLLM_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace tern::worker::vllm {

struct HttpTarget {
  std::string host;
  uint16_t port = 0;
};

struct HttpReply {
  int status = 0;
  std::string body;
};

// One GET; the whole exchange must fit `timeout`. UNAVAILABLE when the
// server cannot be reached, DEADLINE_EXCEEDED on a timeout.
absl::StatusOr<HttpReply> HttpGet(const HttpTarget& target, absl::string_view path,
                                  absl::Duration timeout);

// One POST of a JSON body whose answer is an event stream.
class SseStream {
 public:
  // Connects, sends and reads the response head. A status other than 200
  // comes back as the error vLLM sent: INVALID_ARGUMENT for 400, NOT_FOUND
  // for 404, RESOURCE_EXHAUSTED for 429, UNAVAILABLE otherwise, with the
  // server's message.
  static absl::StatusOr<std::unique_ptr<SseStream>> Open(const HttpTarget& target,
                                                         absl::string_view path,
                                                         absl::string_view json_body,
                                                         absl::Duration connect_timeout,
                                                         absl::Duration read_timeout);
  ~SseStream();

  // The next event's data (the text after "data: "); nullopt at the end of
  // the stream ("[DONE]", or the server closing after a complete event).
  // CANCELLED after Abort; UNAVAILABLE when the connection breaks.
  absl::StatusOr<std::optional<std::string>> Next();

  void Abort();

 private:
  struct Connection;
  explicit SseStream(std::unique_ptr<Connection> connection);
  // Reads more body bytes into pending_; false at the end of the body.
  absl::StatusOr<bool> ReadMore();

  std::unique_ptr<Connection> connection_;
  std::string pending_;
  bool body_done_ = false;
  std::atomic<bool> aborted_{false};
};

// Parses one Prometheus text exposition: the sum over label sets of every
// sample named `name` (nullopt when absent).
std::optional<double> PrometheusSample(absl::string_view text, absl::string_view name);

// The value of label `label` on the first sample named `name`.
std::optional<std::string> PrometheusLabel(absl::string_view text, absl::string_view name,
                                           absl::string_view label);

}  // namespace tern::worker::vllm

#endif  // TERN_WORKER_VLLM_VLLM_CLIENT_H_
