// The gateway's HTTP/1.1 server (Boost.Beast on Asio, kept out of this
// header), over plain TCP or, with a certificate and key, TLS only. One
// io_context per io thread; the acceptor deals connections out round-robin
// and each connection lives its whole life on one context, so a
// connection's state needs no locks. Requests are parsed with bounded header
// and body sizes; keep-alive and `Connection: close` are honoured; malformed
// requests get 400, oversized headers 431, oversized bodies 413 and a request
// that stalls (its header not complete within header_timeout of its first
// byte, or its body idle for body_idle_timeout) 408, each with an
// OpenAI-style error body, and the connection is closed.
//
// One request at a time per connection: while a request is being served
// (an event stream included) nothing more is read from its connection, so
// pipelined requests behind it wait until it ends, and at most one event
// stream is open per connection.
//
// Caps: a connection over max_connections, or over
// max_connections_per_client from its address, is closed as soon as it is
// accepted (no response: that would need reading a request, and for TLS a
// handshake; clients see the connection close and retry). Each refusal is
// reported to `events.rejected`.
//
// Start/StopAccepting/Stop are called from the owning (main) thread;
// ReloadTls and the accessors from any thread.
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
  // Keep-alive: how long a connection may wait for its next request to
  // start; it is then closed without a response (nginx keepalive_timeout).
  absl::Duration idle_timeout = absl::Seconds(75);
  // For a new connection's TLS handshake and first byte, and for a request's
  // header from its first byte to its end: 408 when some of it came (nginx
  // client_header_timeout).
  absl::Duration header_timeout = absl::Seconds(60);
  // Between two reads of a request body: 408 (nginx client_body_timeout).
  absl::Duration body_idle_timeout = absl::Seconds(60);
  absl::Duration write_timeout = absl::Seconds(60);  // for one write to make progress
  // Caps on open connections; 0: none.
  int max_connections = 10000;
  int max_connections_per_client = 1024;
  // PEM files, both or neither: with them the listener speaks HTTPS only.
  std::string tls_cert_file;
  std::string tls_key_file;
  // How often the files' mtimes are checked for a reload; 0: only ReloadTls().
  absl::Duration tls_poll_interval = absl::Seconds(5);
  // Connection events, e.g. for metrics. Called on io threads: thread-safe,
  // non-blocking; each may be empty.
  struct Events {
    std::function<void()> opened;  // admitted (counted until `closed`)
    std::function<void()> closed;
    // Refused by a cap; `reason` is its key (ConnectionCapName).
    std::function<void(std::string_view reason)> rejected;
  } events;
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
  // Loads the TLS files if any, binds, listens and starts the io threads.
  // UNAVAILABLE when the address cannot be bound, INVALID_ARGUMENT when the
  // host does not resolve or the TLS files do not load (or only one is set).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options,
                                                           RequestHandler handler);
  ~HttpServer();

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (the real one when options.port was 0).
  uint16_t port() const;
  bool tls() const;
  // Connections counted against the caps now.
  int open_connections() const;
  // Rebuilds the TLS context from the files for new connections (open ones
  // keep theirs). FAILED_PRECONDITION without TLS; a file error leaves the
  // previous context in use and is returned.
  absl::Status ReloadTls();
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
