// An HTTP/1.1 client for OpenAI streaming endpoints, on Boost.Beast and Asio
// C++20 coroutines: one keep-alive connection that sends requests one after
// another and reads each server-sent event stream incrementally, stamping
// every text chunk with the steady clock as it arrives.
//
// Thread contract: a StreamConnection lives on one io_context and is used by
// one coroutine at a time.
#ifndef TERN_CLI_BENCH_OPENAI_STREAM_CLIENT_H_
#define TERN_CLI_BENCH_OPENAI_STREAM_CLIENT_H_

// clang-format off
#include <utility>  // first: Boost 1.74's asio/awaitable.hpp uses std::exchange unincluded
// clang-format on

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/bench/bench_metrics.h"

namespace tern::cli {

// "http://host:port[/...]" -> host, port (path ignored). INVALID_ARGUMENT
// for other schemes or a bad port.
struct HttpEndpoint {
  std::string host;
  uint16_t port = 80;
};
absl::StatusOr<HttpEndpoint> ParseHttpUrl(const std::string& url);

struct StreamRequest {
  std::string path;  // "/v1/completions"
  std::string body;  // JSON
  std::vector<std::pair<std::string, std::string>> headers;
};

class StreamConnection {
 public:
  using Clock = std::chrono::steady_clock;

  // Record times are seconds since `origin`.
  StreamConnection(boost::asio::any_io_executor executor, HttpEndpoint endpoint,
                   Clock::time_point origin);

  // Sends `request` (connecting first if needed) and reads the whole stream;
  // the whole exchange must end within `timeout`. Never throws: failures
  // are in the record (ok false, error naming the kind), and close the
  // connection.
  boost::asio::awaitable<RequestRecord> Send(const StreamRequest& request, Clock::duration timeout);

  void Close();

 private:
  double Now() const;

  boost::asio::any_io_executor executor_;
  HttpEndpoint endpoint_;
  Clock::time_point origin_;
  std::optional<boost::beast::tcp_stream> stream_;
};

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_OPENAI_STREAM_CLIENT_H_
