// One HTTP request and the response being produced for it, as the endpoint
// code sees them: no Beast types, so only http_server.cc compiles Beast.
//
// Threading: an exchange belongs to its connection's io thread. Every method
// except Post must be called on that thread (Post hands work to it from any
// thread, e.g. a gRPC callback). Once the exchange has ended (a response was
// sent, the stream ended, or the client went away) further calls are ignored,
// so a late handler cannot disturb the next request on a keep-alive connection.
#ifndef TERN_GATEWAY_HTTP_HTTP_EXCHANGE_H_
#define TERN_GATEWAY_HTTP_HTTP_EXCHANGE_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace tern::gateway {

struct HttpRequest {
  std::string method;  // as sent, e.g. "GET"
  std::string path;    // the target without its query
  std::string query;   // after '?', possibly empty
  std::string body;
  std::string authorization;  // the Authorization header, possibly empty
  // The x-tern-routing-policy header, possibly empty (router.proto routing_policy).
  std::string routing_policy;
  // The x-session-id header, possibly empty: a session-affinity hint that
  // takes precedence over the body's `user` (router.proto session_key).
  std::string session_id;
  // The x-tern-priority header, possibly empty: the body's `priority` when
  // the body has none (validated by the endpoint).
  std::string priority;
  bool keep_alive = true;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Extra headers (e.g. Retry-After, Allow).
  std::vector<std::pair<std::string, std::string>> headers;
};

class HttpExchange {
 public:
  virtual ~HttpExchange() = default;

  // Sends a complete response and ends the exchange.
  virtual void Respond(HttpResponse response) = 0;

  // Sends the 200 header of a text/event-stream response (chunked).
  virtual void StartEventStream() = 0;
  // Sends one event as its own chunk, written out immediately (queued only
  // behind earlier writes of this connection).
  virtual void SendEvent(std::string event) = 0;
  // Ends the stream and the exchange.
  virtual void EndEventStream() = 0;

  // `callback` runs once, on the io thread, if the client disconnects before
  // the exchange ends (a failed write, or the socket closing while the
  // request is being served). Replaces an earlier callback.
  virtual void SetOnClientGone(std::function<void()> callback) = 0;

  // Runs `task` on the exchange's io thread; callable from any thread.
  virtual void Post(std::function<void()> task) = 0;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_HTTP_HTTP_EXCHANGE_H_
