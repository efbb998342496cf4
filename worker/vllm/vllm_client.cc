#include "worker/vllm/vllm_client.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace tern::worker::vllm {
namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

void SetSocketTimeouts(tcp::socket& socket, absl::Duration send, absl::Duration receive) {
  const auto to_timeval = [](absl::Duration d) {
    timeval tv = absl::ToTimeval(d);
    if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;  // 0 would mean "forever"
    return tv;
  };
  const timeval snd = to_timeval(send);
  const timeval rcv = to_timeval(receive);
  setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof(snd));
  setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof(rcv));
}

absl::Status IoError(const boost::system::error_code& ec, absl::string_view what,
                     const HttpTarget& target) {
  const std::string message =
      absl::StrCat(what, " http://", target.host, ":", target.port, ": ", ec.message());
  if (ec == asio::error::would_block || ec == asio::error::timed_out ||
      ec == asio::error::try_again) {
    return absl::DeadlineExceededError(message);
  }
  return absl::UnavailableError(message);
}

// Connects with the send timeout bounding connect() (Linux honours
// SO_SNDTIMEO for it).
absl::Status Connect(asio::io_context& io, tcp::socket& socket, const HttpTarget& target,
                     absl::Duration connect_timeout, absl::Duration io_timeout) {
  boost::system::error_code ec;
  tcp::resolver resolver(io);
  const auto endpoints = resolver.resolve(target.host, std::to_string(target.port), ec);
  if (ec) return IoError(ec, "cannot resolve", target);
  for (const auto& entry : endpoints) {
    const tcp::endpoint endpoint = entry.endpoint();
    socket.close(ec);
    socket.open(endpoint.protocol(), ec);
    if (ec) continue;
    SetSocketTimeouts(socket, connect_timeout, io_timeout);
    socket.connect(endpoint, ec);
    if (!ec) {
      SetSocketTimeouts(socket, io_timeout, io_timeout);
      socket.set_option(tcp::no_delay(true), ec);
      return absl::OkStatus();
    }
  }
  return IoError(ec, "cannot connect to", target);
}

// The error vLLM put in a non-200 body: {"error": {"message": ...}} in newer
// releases, {"message": ...} or {"detail": ...} in older ones.
std::string ServerMessage(const std::string& body) {
  nlohmann::json parsed = nlohmann::json::parse(body, nullptr, false);
  if (parsed.is_object()) {
    if (parsed.contains("error") && parsed["error"].is_object() &&
        parsed["error"].contains("message") && parsed["error"]["message"].is_string()) {
      return parsed["error"]["message"].get<std::string>();
    }
    for (const char* key : {"message", "detail"}) {
      if (parsed.contains(key) && parsed[key].is_string()) return parsed[key].get<std::string>();
    }
  }
  return body.substr(0, 500);
}

absl::Status StatusForHttp(int status, const std::string& body) {
  const std::string message = absl::StrCat("vLLM answered ", status, ": ", ServerMessage(body));
  switch (status) {
    case 400:
    case 422:
      return absl::InvalidArgumentError(message);
    case 404:
      return absl::NotFoundError(message);
    case 429:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::UnavailableError(message);
  }
}

}  // namespace

absl::StatusOr<HttpReply> HttpGet(const HttpTarget& target, absl::string_view path,
                                  absl::Duration timeout) {
  asio::io_context io;
  tcp::socket socket(io);
  if (absl::Status s = Connect(io, socket, target, timeout, timeout); !s.ok()) return s;
  http::request<http::empty_body> request(http::verb::get, std::string(path), 11);
  request.set(http::field::host, target.host);
  request.set(http::field::connection, "close");
  boost::system::error_code ec;
  http::write(socket, request, ec);
  if (ec) return IoError(ec, "cannot send to", target);
  boost::beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  http::read(socket, buffer, parser, ec);
  if (ec) return IoError(ec, "cannot read from", target);
  HttpReply reply;
  reply.status = static_cast<int>(parser.get().result_int());
  reply.body = std::move(parser.get().body());
  return reply;
}

struct SseStream::Connection {
  explicit Connection(HttpTarget t) : target(std::move(t)), socket(io) {}
  HttpTarget target;
  asio::io_context io;
  tcp::socket socket;
  boost::beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
};

SseStream::SseStream(std::unique_ptr<Connection> connection) : connection_(std::move(connection)) {}

SseStream::~SseStream() {
  boost::system::error_code ec;
  connection_->socket.close(ec);
}

absl::StatusOr<std::unique_ptr<SseStream>> SseStream::Open(const HttpTarget& target,
                                                           absl::string_view path,
                                                           absl::string_view json_body,
                                                           absl::Duration connect_timeout,
                                                           absl::Duration read_timeout) {
  auto connection = std::make_unique<Connection>(target);
  if (absl::Status s =
          Connect(connection->io, connection->socket, target, connect_timeout, read_timeout);
      !s.ok()) {
    return s;
  }
  http::request<http::string_body> request(http::verb::post, std::string(path), 11);
  request.set(http::field::host, target.host);
  request.set(http::field::content_type, "application/json");
  request.set(http::field::accept, "text/event-stream");
  request.set(http::field::connection, "close");
  request.body() = std::string(json_body);
  request.prepare_payload();
  boost::system::error_code ec;
  http::write(connection->socket, request, ec);
  if (ec) return IoError(ec, "cannot send to", target);
  connection->parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  http::read_header(connection->socket, connection->buffer, connection->parser, ec);
  if (ec) return IoError(ec, "cannot read from", target);
  const int status = static_cast<int>(connection->parser.get().result_int());
  auto stream = std::unique_ptr<SseStream>(new SseStream(std::move(connection)));
  if (status != 200) {
    // Read the (small) error body, then report it.
    std::string body;
    for (int i = 0; i < 64; ++i) {
      absl::StatusOr<bool> more = stream->ReadMore();
      if (!more.ok() || !*more) break;
    }
    return StatusForHttp(status, stream->pending_);
  }
  return stream;
}

absl::StatusOr<bool> SseStream::ReadMore() {
  if (body_done_ || connection_->parser.is_done()) {
    body_done_ = true;
    return false;
  }
  char chunk[16384];
  auto& body = connection_->parser.get().body();
  body.data = chunk;
  body.size = sizeof(chunk);
  boost::system::error_code ec;
  // read_some returns once some bytes were parsed, so each event is handed
  // on as it arrives (http::read would wait for a full buffer or the end).
  http::read_some(connection_->socket, connection_->buffer, connection_->parser, ec);
  if (aborted_.load()) return absl::CancelledError("the request was cancelled");
  if (ec == http::error::need_buffer) ec = {};
  if (ec == http::error::end_of_stream || ec == asio::error::eof) {
    body_done_ = true;
    return false;
  }
  if (ec) return IoError(ec, "the stream broke from", connection_->target);
  pending_.append(chunk, sizeof(chunk) - body.size);
  if (connection_->parser.is_done()) body_done_ = true;
  return true;
}

absl::StatusOr<std::optional<std::string>> SseStream::Next() {
  for (;;) {
    if (aborted_.load()) return absl::CancelledError("the request was cancelled");
    // One event ends at a blank line; its data lines are joined by "\n".
    size_t end = pending_.find("\n\n");
    size_t sep = 2;
    if (const size_t crlf = pending_.find("\r\n\r\n");
        crlf != std::string::npos && (end == std::string::npos || crlf < end)) {
      end = crlf;
      sep = 4;
    }
    if (end != std::string::npos) {
      const std::string event = pending_.substr(0, end);
      pending_.erase(0, end + sep);
      std::string data;
      bool has_data = false;
      for (absl::string_view line : absl::StrSplit(event, '\n')) {
        line = absl::StripSuffix(line, "\r");
        if (!absl::ConsumePrefix(&line, "data:")) continue;  // comments, other fields
        absl::ConsumePrefix(&line, " ");
        if (has_data) data.push_back('\n');
        data.append(line.data(), line.size());
        has_data = true;
      }
      if (!has_data) continue;
      if (data == "[DONE]") return std::optional<std::string>();
      return std::optional<std::string>(std::move(data));
    }
    absl::StatusOr<bool> more = ReadMore();
    if (!more.ok()) return more.status();
    if (!*more) {
      if (!absl::StripAsciiWhitespace(pending_).empty()) {
        return absl::UnavailableError("the vLLM stream ended inside an event");
      }
      return std::optional<std::string>();
    }
  }
}

void SseStream::Abort() {
  aborted_.store(true);
  // shutdown(2) on the descriptor is safe while another thread is blocked
  // reading it: the read returns at once.
  ::shutdown(connection_->socket.native_handle(), SHUT_RDWR);
}

namespace {

// Splits a sample line into name, labels text and value; false for comments.
bool ParseSampleLine(absl::string_view line, absl::string_view* name, absl::string_view* labels,
                     double* value) {
  line = absl::StripAsciiWhitespace(line);
  if (line.empty() || line[0] == '#') return false;
  const size_t brace = line.find('{');
  const size_t space = line.find(' ');
  absl::string_view rest;
  if (brace != absl::string_view::npos && brace < space) {
    const size_t close = line.find('}', brace);
    if (close == absl::string_view::npos) return false;
    *name = line.substr(0, brace);
    *labels = line.substr(brace + 1, close - brace - 1);
    rest = line.substr(close + 1);
  } else {
    if (space == absl::string_view::npos) return false;
    *name = line.substr(0, space);
    *labels = {};
    rest = line.substr(space);
  }
  rest = absl::StripAsciiWhitespace(rest);
  rest = rest.substr(0, rest.find(' '));  // an optional timestamp follows
  return absl::SimpleAtod(rest, value);
}

}  // namespace

std::optional<double> PrometheusSample(absl::string_view text, absl::string_view name) {
  std::optional<double> sum;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    absl::string_view sample_name;
    absl::string_view labels;
    double value = 0;
    if (!ParseSampleLine(line, &sample_name, &labels, &value) || sample_name != name) continue;
    sum = sum.value_or(0) + value;
  }
  return sum;
}

std::optional<std::string> PrometheusLabel(absl::string_view text, absl::string_view name,
                                           absl::string_view label) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    absl::string_view sample_name;
    absl::string_view labels;
    double value = 0;
    if (!ParseSampleLine(line, &sample_name, &labels, &value) || sample_name != name) continue;
    const std::string key = absl::StrCat(label, "=\"");
    size_t at = 0;
    while ((at = labels.find(key, at)) != absl::string_view::npos) {
      if (at == 0 || labels[at - 1] == ',' || labels[at - 1] == ' ') {
        const size_t start = at + key.size();
        const size_t end = labels.find('"', start);
        if (end == absl::string_view::npos) return std::nullopt;
        return std::string(labels.substr(start, end - start));
      }
      at += key.size();
    }
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace tern::worker::vllm
