// The only translation unit that compiles Beast (slow to build): request
// parsing is Beast's, responses are formatted here by hand so one write
// queue serves plain responses, SSE chunks and interim 100 Continue alike.
#include "gateway/http/http_server.h"

#include <array>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <deque>
#include <future>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "gateway/http/api_error.h"

namespace tern::gateway {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

// What every connection of one server shares; outlives them (owned by Impl,
// and sessions keep a shared_ptr).
struct ServerShared {
  HttpServerOptions options;
  RequestHandler handler;
  std::atomic<bool> stopping{false};
};

std::string ResponseHead(int status, std::string_view content_type, size_t content_length,
                         const std::vector<std::pair<std::string, std::string>>& headers,
                         bool keep_alive) {
  const auto reason = http::obsolete_reason(static_cast<http::status>(status));
  std::string head =
      absl::StrCat("HTTP/1.1 ", status, " ", absl::string_view(reason.data(), reason.size()),
                   "\r\nServer: tern\r\nContent-Type: ",
                   absl::string_view(content_type.data(), content_type.size()),
                   "\r\nContent-Length: ", content_length, "\r\n");
  for (const auto& [name, value] : headers) absl::StrAppend(&head, name, ": ", value, "\r\n");
  absl::StrAppend(&head,
                  keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
  return head;
}

using RequestParser = http::request_parser<http::string_body>;

void ApplyLimits(const HttpServerOptions& options, RequestParser& parser) {
  parser.header_limit(options.max_header_bytes);
  parser.body_limit(static_cast<uint64_t>(options.max_body_bytes));
}

// The request as the endpoints see it; moves the body out of `message`.
HttpRequest ToHttpRequest(http::request<http::string_body>& message) {
  HttpRequest request;
  request.method = std::string(message.method_string());
  const auto target = message.target();
  const size_t query_at = target.find('?');
  request.path = std::string(target.substr(0, query_at));
  if (query_at != boost::string_view::npos)
    request.query = std::string(target.substr(query_at + 1));
  request.authorization = std::string(message[http::field::authorization]);
  request.routing_policy = std::string(message["x-tern-routing-policy"]);
  request.session_id = std::string(message["x-session-id"]);
  request.keep_alive = message.keep_alive();
  request.body = std::move(message.body());
  return request;
}

// The answer to a failed read: an HttpError to send before closing, or
// nullopt when the transport failed (the peer left or timed out) and the
// connection just closes.
std::optional<absl::Status> ReadError(beast::error_code ec, const HttpServerOptions& options) {
  if (ec == http::error::header_limit) {
    return HttpError(431, "The request's header fields are too large.");
  }
  if (ec == http::error::body_limit) {
    return HttpError(413, absl::StrCat("The request body exceeds the limit of ",
                                       options.max_body_bytes, " bytes."));
  }
  const bool transport = ec == http::error::end_of_stream || ec == http::error::partial_message ||
                         ec == net::error::eof || ec == beast::error::timeout ||
                         ec == net::error::operation_aborted ||
                         ec.category() == net::error::get_system_category();
  if (transport) return std::nullopt;
  return HttpError(400, absl::StrCat("Malformed HTTP request: ", ec.message()));
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<ServerShared> shared)
      : stream_(std::move(socket)), shared_(std::move(shared)), executor_(stream_.get_executor()) {}

  const net::any_io_executor& executor() const { return executor_; }

  void Run() {
    beast::error_code ec;
    stream_.socket().set_option(tcp::no_delay(true), ec);
    // Lets the disconnect probe peek without blocking; Beast only uses async I/O.
    stream_.socket().non_blocking(true, ec);
    ReadHeader();
  }

  // The HttpExchange operations, by exchange id (stale ids are ignored).
  void Respond(uint64_t id, HttpResponse response) {
    if (!IsCurrent(id) || streaming_) return;
    std::string data = ResponseHead(response.status, response.content_type, response.body.size(),
                                    response.headers, keep_alive_);
    if (!head_request_) data += response.body;
    Enqueue(std::move(data));
    EndExchange();
  }

  void StartEventStream(uint64_t id) {
    if (!IsCurrent(id) || streaming_) return;
    streaming_ = true;
    if (http10_) keep_alive_ = false;  // no chunked encoding: the close ends the stream
    std::string head =
        "HTTP/1.1 200 OK\r\nServer: tern\r\nContent-Type: text/event-stream\r\n"
        "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n";
    head += http10_ ? "" : "Transfer-Encoding: chunked\r\n";
    head += keep_alive_ ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
    Enqueue(std::move(head));
  }

  void SendEvent(uint64_t id, std::string event) {
    if (!IsCurrent(id) || !streaming_ || event.empty()) return;
    if (http10_) {
      Enqueue(std::move(event));
      return;
    }
    char size[20];
    const int n = std::snprintf(size, sizeof(size), "%zx\r\n", event.size());
    std::string chunk;
    chunk.reserve(n + event.size() + 2);
    chunk.append(size, n).append(event).append("\r\n");
    Enqueue(std::move(chunk));
  }

  void EndEventStream(uint64_t id) {
    if (!IsCurrent(id) || !streaming_) return;
    if (!http10_) Enqueue("0\r\n\r\n");
    EndExchange();
  }

  void SetOnClientGone(uint64_t id, std::function<void()> callback) {
    if (IsCurrent(id)) on_client_gone_ = std::move(callback);
  }

 private:
  bool IsCurrent(uint64_t id) const { return !closed_ && exchange_active_ && id == exchange_id_; }

  void ReadHeader() {
    if (closed_) return;
    parser_.emplace();
    ApplyLimits(shared_->options, *parser_);
    stream_.expires_after(absl::ToChronoNanoseconds(shared_->options.idle_timeout));
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(beast::error_code ec) {
    if (closed_) return;
    if (ec) return OnReadError(ec);
    const auto& request = parser_->get();
    if (request.version() >= 11 && !parser_->is_done() &&
        beast::iequals(request[http::field::expect], "100-continue")) {
      // curl and others wait for this before sending a large body.
      interim_ = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream_.socket(), net::buffer(interim_),
                       [self = shared_from_this()](beast::error_code write_ec, size_t) {
                         if (write_ec) return self->Close();
                         self->ReadBody();
                       });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    if (closed_) return;
    stream_.expires_after(absl::ToChronoNanoseconds(shared_->options.read_timeout));
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
  }

  void OnBody(beast::error_code ec) {
    if (closed_) return;
    if (ec) return OnReadError(ec);
    stream_.expires_never();
    auto& message = parser_->get();
    HttpRequest request = ToHttpRequest(message);
    head_request_ = message.method() == http::verb::head;
    http10_ = message.version() < 11;
    parser_.reset();

    keep_alive_ = request.keep_alive && !shared_->stopping.load();
    streaming_ = false;
    exchange_active_ = true;
    ++exchange_id_;
    WatchForDisconnect(exchange_id_);
    try {
      shared_->handler(std::move(request), MakeExchange(exchange_id_));
    } catch (const std::exception& e) {
      TERN_LOG(Error) << "http: request handler threw: " << e.what();
      HttpResponse response;
      const ApiError error =
          ToApiError(absl::InternalError("The server had an error while processing your request."));
      response.status = error.http_status;
      response.body = DumpJson(error.body);
      Respond(exchange_id_, std::move(response));
    }
  }

  std::shared_ptr<HttpExchange> MakeExchange(uint64_t id);

  void OnReadError(beast::error_code ec) {
    std::optional<absl::Status> error = ReadError(ec, shared_->options);
    if (!error) return Close();
    FailAndClose(*error);
  }

  // An error found while reading a request: answer, then close the connection
  // (the rest of the request, if any, cannot be framed reliably).
  void FailAndClose(const absl::Status& status) {
    const ApiError error = ToApiError(status);
    const std::string body = DumpJson(error.body);
    ++exchange_id_;
    exchange_active_ = false;
    keep_alive_ = false;
    closing_ = true;
    Enqueue(ResponseHead(error.http_status, "application/json", body.size(), {}, false) + body);
  }

  void EndExchange() {
    exchange_active_ = false;
    streaming_ = false;
    on_client_gone_ = nullptr;
    if (keep_alive_) {
      read_after_drain_ = true;
    } else {
      closing_ = true;
    }
    if (!writing_ && writes_.empty()) OnDrained();
  }

  // While a request is served no read is pending on the socket, so a client
  // that closes it would go unnoticed until the next write. Waiting for
  // readability and peeking tells EOF/reset apart from pipelined data.
  void WatchForDisconnect(uint64_t id) {
    stream_.socket().async_wait(
        tcp::socket::wait_read, [self = shared_from_this(), id](beast::error_code ec) {
          if (!self->IsCurrent(id) || ec == net::error::operation_aborted) return;
          if (ec) return self->ClientGone();
          char byte;
          beast::error_code peek_ec;
          const size_t n = self->stream_.socket().receive(net::buffer(&byte, 1),
                                                          tcp::socket::message_peek, peek_ec);
          if (peek_ec == net::error::would_block || peek_ec == net::error::try_again) {
            return self->WatchForDisconnect(id);
          }
          if (peek_ec || n == 0) return self->ClientGone();
          // Pipelined bytes: the client is alive; write failures still catch a later close.
        });
  }

  void Enqueue(std::string data) {
    if (closed_) return;
    writes_.push_back(std::move(data));
    if (!writing_) WriteNext();
  }

  void WriteNext() {
    if (writes_.empty()) {
      writing_ = false;
      return OnDrained();
    }
    writing_ = true;
    stream_.expires_after(absl::ToChronoNanoseconds(shared_->options.write_timeout));
    net::async_write(
        stream_, net::buffer(writes_.front()),
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnWrite(ec); });
  }

  void OnWrite(beast::error_code ec) {
    if (ec) {
      writing_ = false;
      return ClientGone();
    }
    writes_.pop_front();
    WriteNext();
  }

  void OnDrained() {
    if (closed_ || exchange_active_) return;
    if (closing_) return GracefulClose();
    if (read_after_drain_) {
      read_after_drain_ = false;
      ReadHeader();
    }
  }

  void ClientGone() {
    if (closed_) return;
    std::function<void()> callback = std::move(on_client_gone_);
    on_client_gone_ = nullptr;
    const bool was_active = exchange_active_;
    exchange_active_ = false;
    Close();
    if (was_active && callback) callback();
  }

  // Half-closes, then discards input for a moment so the peer reads our last
  // response instead of a reset caused by its unread request bytes.
  void GracefulClose() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return Close();
    stream_.expires_after(std::chrono::seconds(2));
    Discard();
  }

  void Discard() {
    stream_.async_read_some(net::buffer(discard_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->Close();
                              self->Discard();
                            });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  const std::shared_ptr<ServerShared> shared_;
  const net::any_io_executor executor_;
  beast::flat_buffer buffer_;
  std::optional<RequestParser> parser_;
  std::string interim_;
  std::array<char, 4096> discard_;

  uint64_t exchange_id_ = 0;
  bool exchange_active_ = false;
  bool streaming_ = false;
  bool keep_alive_ = false;
  bool head_request_ = false;
  bool http10_ = false;
  std::function<void()> on_client_gone_;

  std::deque<std::string> writes_;
  bool writing_ = false;
  bool read_after_drain_ = false;
  bool closing_ = false;
  bool closed_ = false;
};

class Exchange : public HttpExchange {
 public:
  Exchange(std::shared_ptr<Session> session, uint64_t id)
      : session_(std::move(session)), id_(id), executor_(session_->executor()) {}

  void Respond(HttpResponse response) override { session_->Respond(id_, std::move(response)); }
  void StartEventStream() override { session_->StartEventStream(id_); }
  void SendEvent(std::string event) override { session_->SendEvent(id_, std::move(event)); }
  void EndEventStream() override { session_->EndEventStream(id_); }
  void SetOnClientGone(std::function<void()> callback) override {
    session_->SetOnClientGone(id_, std::move(callback));
  }
  void Post(std::function<void()> task) override { net::post(executor_, std::move(task)); }

 private:
  const std::shared_ptr<Session> session_;
  const uint64_t id_;
  const net::any_io_executor executor_;
};

std::shared_ptr<HttpExchange> Session::MakeExchange(uint64_t id) {
  return std::make_shared<Exchange>(shared_from_this(), id);
}

void RunIoContext(net::io_context* ioc) {
  for (;;) {
    try {
      ioc->run();
      return;
    } catch (const std::exception& e) {
      TERN_LOG(Error) << "http: uncaught exception on an io thread: " << e.what();
    }
  }
}

}  // namespace

absl::StatusOr<HttpRequest> ParseHttpRequest(std::string_view bytes,
                                             const HttpServerOptions& options) {
  RequestParser parser;
  ApplyLimits(options, parser);
  parser.eager(true);
  net::const_buffer input(bytes.data(), bytes.size());
  beast::error_code ec;
  while (!parser.is_done()) {
    const size_t used = parser.put(input, ec);
    input += used;
    if (!ec && used == 0) ec = http::error::need_more;
    if (ec == http::error::need_more && used > 0) {
      ec = {};
      continue;
    }
    if (ec == http::error::need_more) {
      // A connection would wait for more bytes; here the input has ended,
      // which Beast's read treats as below.
      ec = {};
      if (parser.got_some()) {
        parser.put_eof(ec);
      } else {
        ec = http::error::end_of_stream;
      }
      if (!ec && !parser.is_done()) ec = http::error::partial_message;
    }
    if (ec) break;
  }
  if (ec) {
    std::optional<absl::Status> error = ReadError(ec, options);
    if (!error) return HttpError(400, absl::StrCat("Incomplete HTTP request: ", ec.message()));
    return *std::move(error);
  }
  return ToHttpRequest(parser.get());
}

struct HttpServer::Impl {
  std::shared_ptr<ServerShared> shared = std::make_shared<ServerShared>();
  // Declared before the acceptor, which lives on contexts[0] and must go first.
  std::vector<std::unique_ptr<net::io_context>> contexts;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> guards;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<net::steady_timer> retry_timer;
  std::vector<std::thread> threads;
  size_t next_context = 0;  // used on contexts[0]'s thread only
  uint16_t port = 0;
  bool accepting = false;
  bool stopped = false;

  void Accept() {
    net::io_context& target = *contexts[next_context++ % contexts.size()];
    acceptor->async_accept(target, [this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor->is_open()) return;
      if (ec) {
        // Typically EMFILE: back off instead of spinning on the error.
        TERN_LOG(Warning) << "http: accept failed: " << ec.message();
        retry_timer->expires_after(std::chrono::milliseconds(100));
        retry_timer->async_wait([this](beast::error_code timer_ec) {
          if (!timer_ec && acceptor->is_open()) Accept();
        });
        return;
      }
      auto session = std::make_shared<Session>(std::move(socket), shared);
      net::post(session->executor(), [session] { session->Run(); });
      Accept();
    });
  }
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options,
                                                              RequestHandler handler) {
  auto impl = std::make_unique<Impl>();
  int threads = options.io_threads > 0 ? options.io_threads
                                       : static_cast<int>(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  const std::string where = absl::StrCat(options.host, ":", options.port);
  impl->shared->options = std::move(options);
  impl->shared->handler = std::move(handler);
  for (int i = 0; i < threads; ++i) {
    impl->contexts.push_back(std::make_unique<net::io_context>(1));
    impl->guards.push_back(net::make_work_guard(*impl->contexts.back()));
  }
  net::io_context& first = *impl->contexts.front();

  beast::error_code ec;
  tcp::resolver resolver(first);
  const HttpServerOptions& opts = impl->shared->options;
  const auto endpoints =
      resolver.resolve(opts.host, std::to_string(opts.port),
                       tcp::resolver::numeric_service | tcp::resolver::passive, ec);
  if (ec || endpoints.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve listen address ", where, ": ", ec.message()));
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  impl->acceptor = std::make_unique<tcp::acceptor>(first);
  impl->retry_timer = std::make_unique<net::steady_timer>(first);
  impl->acceptor->open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor->bind(endpoint, ec);
  if (!ec) impl->acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", where, ": ", ec.message()));
  impl->port = impl->acceptor->local_endpoint().port();
  impl->accepting = true;
  impl->Accept();
  for (auto& context : impl->contexts) impl->threads.emplace_back(RunIoContext, context.get());
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

uint16_t HttpServer::port() const { return impl_->port; }

void HttpServer::StopAccepting() {
  impl_->shared->stopping = true;
  if (impl_->stopped || !impl_->accepting) return;
  impl_->accepting = false;
  std::promise<void> closed;
  net::post(*impl_->contexts.front(), [this, &closed] {
    beast::error_code ec;
    impl_->acceptor->close(ec);
    impl_->retry_timer->cancel();
    closed.set_value();
  });
  closed.get_future().wait();
}

void HttpServer::Stop() {
  if (impl_->stopped) return;
  StopAccepting();
  // Let every context run what was posted to it so far (e.g. the final
  // events of streams cancelled for shutdown); socket writes start inline,
  // so their bytes reach the kernel before the contexts stop.
  for (auto& context : impl_->contexts) {
    auto ran = std::make_shared<std::promise<void>>();
    net::post(*context, [ran] { ran->set_value(); });
    ran->get_future().wait_for(std::chrono::seconds(1));
  }
  impl_->stopped = true;
  for (auto& guard : impl_->guards) guard.reset();
  for (auto& context : impl_->contexts) context->stop();
  for (std::thread& thread : impl_->threads) thread.join();
  impl_->threads.clear();
}

}  // namespace tern::gateway
