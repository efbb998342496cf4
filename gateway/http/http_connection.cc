// Request parsing is Beast's; responses are formatted here by hand so one
// write queue serves plain responses, SSE chunks and interim 100 Continue
// alike. Read deadlines use a timer of our own rather than tcp_stream's
// expiry, which closes the socket: a request that stalls still gets its 408.
#include "gateway/http/http_connection.h"

#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <cstdio>
#include <deque>
#include <optional>
#include <type_traits>
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
  request.priority = std::string(message["x-tern-priority"]);
  request.keep_alive = message.keep_alive();
  request.body = std::move(message.body());
  return request;
}

// The answer to a failed read: an HttpError to send before closing, or
// nullopt when the transport failed (the peer left) and the connection just
// closes.
std::optional<absl::Status> ReadError(beast::error_code ec, const HttpServerOptions& options) {
  if (ec == http::error::header_limit) {
    return HttpError(431, "The request's header fields are too large.");
  }
  if (ec == http::error::body_limit) {
    return HttpError(413, absl::StrCat("The request body exceeds the limit of ",
                                       options.max_body_bytes, " bytes."));
  }
  const bool transport =
      ec == http::error::end_of_stream || ec == http::error::partial_message ||
      ec == net::error::eof || ec == beast::error::timeout || ec == net::error::operation_aborted ||
      ec.category() == net::error::get_system_category() ||
      ec.category() == net::error::get_ssl_category() || ec == net::ssl::error::stream_truncated;
  if (transport) return std::nullopt;
  return HttpError(400, absl::StrCat("Malformed HTTP request: ", ec.message()));
}

// The connection, generic over its stream: beast::tcp_stream, or
// beast::ssl_stream over one. Every method runs on the connection's io thread.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

 public:
  // `stream_args` construct the stream (the socket, and the ssl context for TLS).
  template <class... StreamArgs>
  Session(std::string client, std::shared_ptr<ConnectionShared> shared,
          std::shared_ptr<net::ssl::context> tls, StreamArgs&&... stream_args)
      : client_(std::move(client)),
        shared_(std::move(shared)),
        tls_(std::move(tls)),
        stream_(std::forward<StreamArgs>(stream_args)...),
        executor_(stream_.get_executor()),
        read_timer_(executor_) {}

  ~Session() { ReleaseSlot(); }

  const net::any_io_executor& executor() const { return executor_; }

  void Run() {
    beast::error_code ec;
    socket().set_option(tcp::no_delay(true), ec);
    // Lets the disconnect probe peek without blocking; Beast only uses async I/O.
    socket().non_blocking(true, ec);
    if constexpr (kTls) {
      ArmReadDeadline(shared_->options.header_timeout);
      stream_.async_handshake(net::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code handshake_ec) {
                                self->DisarmReadDeadline();
                                if (handshake_ec) return self->Close();
                                self->ReadRequest();
                              });
    } else {
      ReadRequest();
    }
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
  beast::tcp_stream& tcp() { return beast::get_lowest_layer(stream_); }
  tcp::socket& socket() { return tcp().socket(); }

  bool IsCurrent(uint64_t id) const { return !closed_ && exchange_active_ && id == exchange_id_; }

  // Read deadlines: on expiry the pending read is cancelled and completes
  // with operation_aborted while read_timed_out_ says why.
  void ArmReadDeadline(absl::Duration timeout) {
    read_timed_out_ = false;
    tcp().expires_never();  // a write's expiry must not cut this read
    read_timer_.expires_after(absl::ToChronoNanoseconds(timeout));
    read_timer_.async_wait(
        [self = this->shared_from_this(), armed = ++read_deadline_id_](beast::error_code ec) {
          if (ec || armed != self->read_deadline_id_ || self->closed_) return;
          self->read_timed_out_ = true;
          beast::error_code cancel_ec;
          self->socket().cancel(cancel_ec);
        });
  }

  void DisarmReadDeadline() {
    ++read_deadline_id_;
    read_timer_.cancel();
  }

  // The start of a request: its first bytes (or the pipelined ones already
  // buffered), waited for up to idle_timeout on a kept-alive connection and
  // header_timeout on a new one; a connection that sends nothing closes quietly.
  void ReadRequest() {
    if (closed_) return;
    parser_.emplace();
    ApplyLimits(shared_->options, *parser_);
    if (buffer_.size() > 0) return ReadHeader();
    ArmReadDeadline(served_any_ ? shared_->options.idle_timeout : shared_->options.header_timeout);
    stream_.async_read_some(buffer_.prepare(kFirstRead),
                            [self = this->shared_from_this()](beast::error_code ec, size_t n) {
                              self->DisarmReadDeadline();
                              if (self->closed_) return;
                              if (ec) return self->Close();
                              self->buffer_.commit(n);
                              self->ReadHeader();
                            });
  }

  void ReadHeader() {
    ArmReadDeadline(shared_->options.header_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](beast::error_code ec, size_t) {
                              self->DisarmReadDeadline();
                              self->OnHeader(ec);
                            });
  }

  void OnHeader(beast::error_code ec) {
    if (closed_) return;
    if (ec) return OnReadError(ec, "header");
    const auto& request = parser_->get();
    if (request.version() >= 11 && !parser_->is_done() &&
        beast::iequals(request[http::field::expect], "100-continue")) {
      // curl and others wait for this before sending a large body.
      interim_ = "HTTP/1.1 100 Continue\r\n\r\n";
      tcp().expires_after(absl::ToChronoNanoseconds(shared_->options.write_timeout));
      net::async_write(stream_, net::buffer(interim_),
                       [self = this->shared_from_this()](beast::error_code write_ec, size_t) {
                         if (write_ec) return self->Close();
                         self->ReadBody();
                       });
      return;
    }
    ReadBody();
  }

  // The body a read at a time, so that the deadline is the time between reads.
  void ReadBody() {
    if (closed_) return;
    if (parser_->is_done()) return OnRequest();
    ArmReadDeadline(shared_->options.body_idle_timeout);
    http::async_read_some(stream_, buffer_, *parser_,
                          [self = this->shared_from_this()](beast::error_code ec, size_t) {
                            self->DisarmReadDeadline();
                            if (self->closed_) return;
                            if (ec) return self->OnReadError(ec, "body");
                            self->ReadBody();
                          });
  }

  void OnRequest() {
    auto& message = parser_->get();
    HttpRequest request = ToHttpRequest(message);
    head_request_ = message.method() == http::verb::head;
    http10_ = message.version() < 11;
    parser_.reset();
    served_any_ = true;

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

  void OnReadError(beast::error_code ec, const char* part) {
    if (read_timed_out_) {
      return FailAndClose(HttpError(
          408, absl::StrCat("The request's ", part, " did not arrive in time (",
                            absl::FormatDuration(std::string_view(part) == "header"
                                                     ? shared_->options.header_timeout
                                                     : shared_->options.body_idle_timeout),
                            ").")));
    }
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
  // readability and peeking tells EOF/reset apart from pipelined data (with
  // TLS, any record the client sends, a close_notify included, counts as
  // data: such a client is found gone at the next write).
  void WatchForDisconnect(uint64_t id) {
    socket().async_wait(
        tcp::socket::wait_read, [self = this->shared_from_this(), id](beast::error_code ec) {
          if (!self->IsCurrent(id) || ec == net::error::operation_aborted) return;
          if (ec) return self->ClientGone();
          char byte;
          beast::error_code peek_ec;
          const size_t n =
              self->socket().receive(net::buffer(&byte, 1), tcp::socket::message_peek, peek_ec);
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
    tcp().expires_after(absl::ToChronoNanoseconds(shared_->options.write_timeout));
    net::async_write(
        stream_, net::buffer(writes_.front()),
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->OnWrite(ec); });
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
      ReadRequest();
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

  // Ends TLS with a close_notify, then half-closes and discards input for a
  // moment so the peer reads our last response instead of a reset caused by
  // its unread request bytes. Two seconds in all.
  void GracefulClose() {
    tcp().expires_after(std::chrono::seconds(2));
    if constexpr (kTls) {
      stream_.async_shutdown(
          [self = this->shared_from_this()](beast::error_code) { self->HalfCloseAndDrain(); });
    } else {
      HalfCloseAndDrain();
    }
  }

  void HalfCloseAndDrain() {
    if (closed_) return;
    beast::error_code ec;
    socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return Close();
    Discard();
  }

  void Discard() {
    tcp().async_read_some(net::buffer(discard_),
                          [self = this->shared_from_this()](beast::error_code ec, size_t) {
                            if (ec) return self->Close();
                            self->Discard();
                          });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    DisarmReadDeadline();
    beast::error_code ec;
    socket().shutdown(tcp::socket::shutdown_both, ec);
    tcp().close();
    ReleaseSlot();
  }

  void ReleaseSlot() {
    if (slot_released_) return;
    slot_released_ = true;
    shared_->limiter.Release(client_);
    if (shared_->options.events.closed) shared_->options.events.closed();
  }

  static constexpr size_t kFirstRead = 4096;

  // Constant after construction.
  const std::string client_;
  const std::shared_ptr<ConnectionShared> shared_;
  const std::shared_ptr<net::ssl::context> tls_;  // null for plain TCP; outlives stream_

  Stream stream_;
  const net::any_io_executor executor_;
  beast::flat_buffer buffer_;
  std::optional<RequestParser> parser_;
  std::string interim_;
  std::array<char, 4096> discard_;

  net::steady_timer read_timer_;
  uint64_t read_deadline_id_ = 0;
  bool read_timed_out_ = false;

  uint64_t exchange_id_ = 0;
  bool exchange_active_ = false;
  bool served_any_ = false;
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
  bool slot_released_ = false;
};

template <class Session>
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

template <class Stream>
std::shared_ptr<HttpExchange> Session<Stream>::MakeExchange(uint64_t id) {
  return std::make_shared<Exchange<Session<Stream>>>(this->shared_from_this(), id);
}

}  // namespace

void ServeConnection(tcp::socket socket, std::string client,
                     std::shared_ptr<ConnectionShared> shared,
                     std::shared_ptr<net::ssl::context> tls) {
  if (tls != nullptr) {
    net::ssl::context& context = *tls;
    auto session = std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
        std::move(client), std::move(shared), std::move(tls), std::move(socket), context);
    session->Run();
    return;
  }
  auto session = std::make_shared<Session<beast::tcp_stream>>(std::move(client), std::move(shared),
                                                              nullptr, std::move(socket));
  session->Run();
}

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

}  // namespace tern::gateway
