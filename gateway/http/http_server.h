// The gateway's HTTP/1.1 server (Boost.Beast on Asio, kept out of this
// header). One io_context per io thread; the acceptor deals connections out
// round-robin and each connection lives its whole life on one context, so a
// connection's state needs no locks. Requests are parsed with bounded header
// and body sizes; keep-alive and `Connection: close` are honoured; malformed
// requests get 400, oversized headers 431 and oversized bodies 413, each with
// an OpenAI-style error body.
//
// Start/StopAccepting/Stop are called from the owning (main) thread.
#ifndef TERN_GATEWAY_HTTP_HTTP_SERVER_H_
#define TERN_GATEWAY_HTTP_HTTP_SERVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gateway/http/http_exchange.h"

namespace tern::gateway {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;  // 0: any free port (see HttpServer::port())
  int io_threads = 0;    // 0: one per core
  int64_t max_body_bytes = 1 << 20;
  uint32_t max_header_bytes = 16 * 1024;
  absl::Duration idle_timeout = absl::Seconds(75);   // keep-alive wait for the next request
  absl::Duration read_timeout = absl::Seconds(60);   // to receive one request
  absl::Duration write_timeout = absl::Seconds(60);  // for one write to make progress
};

// Called on the connection's io thread for every complete request. The
// handler must eventually end the exchange (Respond or EndEventStream) unless
// the client goes away first; it must not block.
using RequestHandler =
    std::function<void(HttpRequest request, std::shared_ptr<HttpExchange> exchange)>;

// The request parsing of a connection, without the socket (for tests and
// fuzzing): parses one HTTP/1.x request at the start of `bytes` with the
// header and body limits of `options`, exactly as a connection does. Returns
// the request, or the error a connection answers before closing: an
// HttpError with 400 (malformed, or `bytes` end before the request does),
// 413 (body over max_body_bytes) or 431 (header over max_header_bytes).
absl::StatusOr<HttpRequest> ParseHttpRequest(std::string_view bytes,
                                             const HttpServerOptions& options);

class HttpServer {
 public:
  // Binds, listens and starts the io threads. UNAVAILABLE when the address
  // cannot be bound, INVALID_ARGUMENT when the host does not resolve.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options,
                                                           RequestHandler handler);
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (the real one when options.port was 0).
  uint16_t port() const;
  // Closes the listening socket; connections in progress continue, but no
  // longer keep alive.
  void StopAccepting();
  // Stops the io threads and drops every connection. Idempotent.
  void Stop();

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_HTTP_HTTP_SERVER_H_
