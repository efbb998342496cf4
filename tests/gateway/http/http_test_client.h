// A blocking HTTP/1.1 client over a raw socket for the gateway's server
// tests: it sends bytes exactly as written and reports the response exactly
// as received (status, headers, body, and each chunk of a chunked body), so
// tests can check framing that a full client library would hide. Reads time
// out after 10 s so a broken server fails the test instead of hanging it.
#ifndef TERN_TESTS_GATEWAY_HTTP_HTTP_TEST_CLIENT_H_
#define TERN_TESTS_GATEWAY_HTTP_HTTP_TEST_CLIENT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace tern::gateway::testing {

struct ClientResponse {
  bool ok = false;  // a complete response was read
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // de-chunked
  std::vector<std::string> chunks;             // chunked bodies: each chunk's data

  std::string Header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

class TestHttpClient {
 public:
  explicit TestHttpClient(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval timeout{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~TestHttpClient() { Close(); }

  bool connected() const { return connected_; }

  bool Send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads one response. `on_chunk` sees each chunk as it arrives. A response
  // to HEAD has no body whatever its Content-Length says.
  template <typename OnChunk>
  ClientResponse Read(OnChunk on_chunk, bool head_request = false) {
    ClientResponse response;
    std::string head;
    if (!ReadUntil("\r\n\r\n", &head)) return response;
    size_t line_end = head.find("\r\n");
    const std::string status_line = head.substr(0, line_end);
    if (status_line.size() < 12) return response;
    response.status = std::stoi(status_line.substr(9, 3));
    while (line_end + 2 < head.size()) {
      const size_t next = head.find("\r\n", line_end + 2);
      const std::string line = head.substr(line_end + 2, next - line_end - 2);
      line_end = next;
      if (line.empty()) break;
      const size_t colon = line.find(':');
      std::string name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      size_t value_at = colon + 1;
      while (value_at < line.size() && line[value_at] == ' ') ++value_at;
      response.headers[name] = line.substr(value_at);
    }
    if (response.status / 100 == 1) {  // interim response (100 Continue): no body
      response.ok = true;
      return response;
    }
    if (head_request) {
      response.ok = true;
      return response;
    }
    if (response.Header("transfer-encoding") == "chunked") {
      for (;;) {
        std::string size_line;
        if (!ReadUntil("\r\n", &size_line)) return response;
        const size_t size = std::stoul(size_line, nullptr, 16);
        std::string data;
        if (!ReadExactly(size + 2, &data)) return response;
        if (size == 0) break;
        data.resize(size);
        on_chunk(data);
        response.chunks.push_back(data);
        response.body += data;
      }
    } else if (!response.Header("content-length").empty()) {
      if (!ReadExactly(std::stoul(response.Header("content-length")), &response.body))
        return response;
    } else {
      char buf[4096];
      for (;;) {
        const ssize_t n = Recv(buf, sizeof(buf));
        if (n <= 0) break;
        response.body.append(buf, static_cast<size_t>(n));
      }
    }
    response.ok = true;
    return response;
  }
  ClientResponse Read() {
    return Read([](const std::string&) {});
  }

  ClientResponse Request(std::string_view raw) {
    if (!Send(raw)) return {};
    return Read();
  }

  // True when the server closed the connection (EOF) before sending more bytes.
  bool PeerClosed() {
    if (!buffer_.empty()) return false;
    char byte;
    return Recv(&byte, 1) == 0;
  }

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  ssize_t Recv(char* buf, size_t size) {
    if (!buffer_.empty()) {
      const size_t n = std::min(size, buffer_.size());
      std::copy_n(buffer_.data(), n, buf);
      buffer_.erase(0, n);
      return static_cast<ssize_t>(n);
    }
    return ::recv(fd_, buf, size, 0);
  }

  bool ReadUntil(std::string_view delimiter, std::string* out) {
    for (;;) {
      const size_t at = buffer_.find(delimiter);
      if (at != std::string::npos) {
        *out = buffer_.substr(0, at + delimiter.size());
        buffer_.erase(0, at + delimiter.size());
        return true;
      }
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return false;
      buffer_.append(buf, static_cast<size_t>(n));
    }
  }

  bool ReadExactly(size_t size, std::string* out) {
    while (buffer_.size() < size) {
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return false;
      buffer_.append(buf, static_cast<size_t>(n));
    }
    *out = buffer_.substr(0, size);
    buffer_.erase(0, size);
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

inline std::string PostJson(std::string_view path, std::string_view body,
                            std::string_view extra_headers = "") {
  std::string request = "POST ";
  request.append(path).append(" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n");
  request.append(extra_headers);
  request.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n\r\n");
  request.append(body);
  return request;
}

inline std::string Get(std::string_view path, std::string_view extra_headers = "") {
  std::string request = "GET ";
  request.append(path)
      .append(" HTTP/1.1\r\nHost: 127.0.0.1\r\n")
      .append(extra_headers)
      .append("\r\n");
  return request;
}

}  // namespace tern::gateway::testing

#endif  // TERN_TESTS_GATEWAY_HTTP_HTTP_TEST_CLIENT_H_
