// One accepted connection of HttpServer (http_server.h states the behaviour):
// reading requests with their limits and deadlines, the write queue behind
// HttpExchange, keep-alive and closing, over plain TCP or TLS alike (the
// connection code is one template over the stream type, in the .cc, the only
// translation unit that compiles Beast's HTTP parser).
//
// Internal to gateway/http: http_server.cc and nothing else includes this.
#ifndef TERN_GATEWAY_HTTP_HTTP_CONNECTION_H_
#define TERN_GATEWAY_HTTP_HTTP_CONNECTION_H_

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "gateway/http/connection_limiter.h"
#include "gateway/http/http_server.h"

namespace tern::gateway {

// What every connection of one server shares; outlives them (owned by the
// server, and connections keep a shared_ptr).
struct ConnectionShared {
  explicit ConnectionShared(HttpServerOptions server_options, RequestHandler request_handler)
      : options(std::move(server_options)),
        handler(std::move(request_handler)),
        limiter(options.max_connections, options.max_connections_per_client) {}

  const HttpServerOptions options;
  const RequestHandler handler;
  ConnectionLimiter limiter;
  std::atomic<bool> stopping{false};
};

// Serves `socket`, accepted from `client` and already admitted by
// shared->limiter (released, and events.closed reported, when the
// connection closes), until either side closes it. With `tls` the
// connection is TLS with that context (kept for its whole life). Call on
// the thread of the socket's io_context.
void ServeConnection(boost::asio::ip::tcp::socket socket, std::string client,
                     std::shared_ptr<ConnectionShared> shared,
                     std::shared_ptr<boost::asio::ssl::context> tls);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_HTTP_HTTP_CONNECTION_H_
