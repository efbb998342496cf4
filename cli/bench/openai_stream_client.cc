#include "cli/bench/openai_stream_client.h"

#include <array>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace tern::cli {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

absl::StatusOr<HttpEndpoint> ParseHttpUrl(const std::string& url) {
  absl::string_view rest = url;
  constexpr absl::string_view kScheme = "http://";
  if (rest.substr(0, kScheme.size()) != kScheme) {
    return absl::InvalidArgumentError(absl::StrCat("only http:// URLs are supported: ", url));
  }
  rest.remove_prefix(kScheme.size());
  rest = rest.substr(0, rest.find('/'));
  HttpEndpoint endpoint;
  const size_t colon = rest.rfind(':');
  if (colon == absl::string_view::npos) {
    endpoint.host = std::string(rest);
  } else {
    endpoint.host = std::string(rest.substr(0, colon));
    uint32_t port = 0;
    if (!absl::SimpleAtoi(rest.substr(colon + 1), &port) || port == 0 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("bad port in ", url));
    }
    endpoint.port = static_cast<uint16_t>(port);
  }
  if (endpoint.host.empty()) return absl::InvalidArgumentError(absl::StrCat("no host in ", url));
  return endpoint;
}

StreamConnection::StreamConnection(asio::any_io_executor executor, HttpEndpoint endpoint,
                                   Clock::time_point origin)
    : executor_(std::move(executor)), endpoint_(std::move(endpoint)), origin_(origin) {}

double StreamConnection::Now() const {
  return std::chrono::duration<double>(Clock::now() - origin_).count();
}

void StreamConnection::Close() {
  if (!stream_) return;
  beast::error_code ignored;
  stream_->socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream_.reset();
}

asio::awaitable<RequestRecord> StreamConnection::Send(const StreamRequest& request,
                                                      Clock::duration timeout) {
  RequestRecord record;
  record.start = Now();
  beast::error_code ec;
  auto fail = [&](const std::string& kind) {
    record.ok = false;
    record.error = ec == beast::error::timeout ? "timeout" : kind;
    record.end = Now();
    Close();
  };
  auto token = asio::redirect_error(asio::use_awaitable, ec);
  if (!stream_) {
    tcp::resolver resolver(executor_);
    auto results =
        co_await resolver.async_resolve(endpoint_.host, std::to_string(endpoint_.port), token);
    if (ec) {
      fail("resolve");
      co_return record;
    }
    stream_.emplace(executor_);
    stream_->expires_after(timeout);
    co_await stream_->async_connect(results, token);
    if (ec) {
      fail("connect");
      co_return record;
    }
  }
  stream_->expires_after(timeout);
  http::request<http::string_body> req{http::verb::post, request.path, 11};
  req.set(http::field::host, endpoint_.host);
  req.set(http::field::content_type, "application/json");
  req.set(http::field::accept, "text/event-stream");
  for (const auto& [name, value] : request.headers) req.set(name, value);
  req.body() = request.body;
  req.prepare_payload();
  co_await http::async_write(*stream_, req, token);
  if (ec) {
    fail("write");
    co_return record;
  }

  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  co_await http::async_read_header(*stream_, buffer, parser, token);
  if (ec) {
    fail("read");
    co_return record;
  }
  const unsigned status = parser.get().result_int();
  StreamChunkReader reader(&record);
  SseParser sse([&](absl::string_view data) { reader.OnEvent(data, Now()); });
  std::string error_body;
  std::array<char, 16384> chunk;
  while (!parser.is_done()) {
    parser.get().body().data = chunk.data();
    parser.get().body().size = chunk.size();
    // read_some returns as soon as a piece of the body arrives, so each event
    // is timestamped when it reaches us (async_read would wait for the whole body).
    co_await http::async_read_some(*stream_, buffer, parser, token);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      fail("read");
      co_return record;
    }
    const size_t got = chunk.size() - parser.get().body().size;
    if (status == 200) {
      sse.Feed(absl::string_view(chunk.data(), got));
    } else if (error_body.size() < 4096) {
      error_body.append(chunk.data(), got);
    }
  }
  record.end = Now();
  if (!parser.get().keep_alive()) Close();
  if (status != 200) {
    record.error = absl::StrCat("http ", status);
  } else if (!reader.error().empty()) {
    record.error = reader.error();
  } else if (!reader.done()) {
    record.error = "stream ended without [DONE]";
  } else if (!record.has_usage) {
    record.error = "no usage chunk";
  } else {
    record.ok = true;
  }
  co_return record;
}

}  // namespace tern::cli
