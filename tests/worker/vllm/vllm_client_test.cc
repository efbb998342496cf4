// The vllm engine's HTTP pieces against a scripted server on 127.0.0.1 (raw
// bytes, so chunked framing, split events and early closes are exact), and
// the flag syntax of a vLLM server.
#include "worker/vllm/vllm_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "worker/vllm/vllm_server_spec.h"

namespace tern::worker::vllm {
namespace {

// Accepts one connection, reads the request head (and body, by
// Content-Length), then runs `script` with the socket.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::function<void(int fd, const std::string& request)> script) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listen_fd_, 4), 0);
    socklen_t len = sizeof(addr);
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, script = std::move(script)] {
      const int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      std::string request;
      char buf[4096];
      while (request.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0) break;
        request.append(buf, n);
      }
      const size_t head_end = request.find("\r\n\r\n");
      const size_t cl = request.find("Content-Length: ");
      if (cl != std::string::npos && head_end != std::string::npos) {
        const size_t want = std::stoul(request.substr(cl + 16)) + head_end + 4;
        while (request.size() < want) {
          const ssize_t n = read(fd, buf, sizeof(buf));
          if (n <= 0) break;
          request.append(buf, n);
        }
      }
      script(fd, request);
      close(fd);
    });
  }
  ~ScriptedServer() {
    shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    close(listen_fd_);
  }
  HttpTarget target() const { return {"127.0.0.1", port_}; }

 private:
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

void Send(int fd, const std::string& bytes) {
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
}

std::string Chunk(const std::string& data) {
  char size[16];
  snprintf(size, sizeof(size), "%zx", data.size());
  return std::string(size) + "\r\n" + data + "\r\n";
}

constexpr char kSseHead[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

TEST(SseStreamTest, ReadsEventsSplitAcrossChunksUntilDone) {
  std::string seen_request;
  ScriptedServer server([&](int fd, const std::string& request) {
    seen_request = request;
    Send(fd, kSseHead);
    Send(fd, Chunk("data: {\"a\":1}\n\nda"));
    absl::SleepFor(absl::Milliseconds(20));
    Send(fd, Chunk("ta: {\"b\":2}\n\n: a comment\n\n"));
    Send(fd, Chunk("data: [DONE]\n\n"));
    Send(fd, "0\r\n\r\n");
  });
  auto stream = SseStream::Open(server.target(), "/v1/completions", "{\"prompt\":[1]}",
                                absl::Seconds(2), absl::Seconds(5));
  ASSERT_TRUE(stream.ok()) << stream.status();
  auto first = (*stream)->Next();
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ(**first, "{\"a\":1}");
  auto second = (*stream)->Next();
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_EQ(**second, "{\"b\":2}");
  auto end = (*stream)->Next();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(end->has_value());
  EXPECT_NE(seen_request.find("POST /v1/completions HTTP/1.1"), std::string::npos);
  EXPECT_NE(seen_request.find("{\"prompt\":[1]}"), std::string::npos);
}

TEST(SseStreamTest, ErrorStatusCarriesVllmsMessage) {
  ScriptedServer server([](int fd, const std::string&) {
    const std::string body =
        "{\"error\":{\"message\":\"This model's maximum context length is 64 tokens.\","
        "\"type\":\"BadRequestError\",\"code\":400}}";
    Send(fd, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: " +
                 std::to_string(body.size()) + "\r\n\r\n" + body);
  });
  auto stream =
      SseStream::Open(server.target(), "/v1/completions", "{}", absl::Seconds(2), absl::Seconds(5));
  ASSERT_FALSE(stream.ok());
  EXPECT_EQ(stream.status().code(), absl::StatusCode::kInvalidArgument) << stream.status();
  EXPECT_NE(stream.status().message().find("maximum context length is 64"), std::string::npos);
}

TEST(SseStreamTest, AbortUnblocksAWaitingReadAndTheServerSeesTheClientGo) {
  std::atomic<bool> server_saw_close{false};
  ScriptedServer server([&](int fd, const std::string&) {
    Send(fd, kSseHead);
    Send(fd, Chunk("data: {\"a\":1}\n\n"));
    // Then silence, until the client goes away.
    char buf[16];
    const absl::Time until = absl::Now() + absl::Seconds(5);
    while (absl::Now() < until) {
      if (read(fd, buf, sizeof(buf)) <= 0) {
        server_saw_close = true;
        return;
      }
    }
  });
  auto stream = SseStream::Open(server.target(), "/v1/completions", "{}", absl::Seconds(2),
                                absl::Seconds(30));
  ASSERT_TRUE(stream.ok()) << stream.status();
  ASSERT_TRUE((*stream)->Next().ok());
  std::thread aborter([&] {
    absl::SleepFor(absl::Milliseconds(50));
    (*stream)->Abort();
  });
  const absl::Time start = absl::Now();
  auto next = (*stream)->Next();
  aborter.join();
  EXPECT_EQ(next.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  stream->reset();
  const absl::Time until = absl::Now() + absl::Seconds(3);
  while (!server_saw_close && absl::Now() < until) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_TRUE(server_saw_close);
}

TEST(SseStreamTest, ConnectionClosedMidEventIsAnError) {
  ScriptedServer server([](int fd, const std::string&) {
    Send(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
    Send(fd, "data: {\"a\":1}\n\ndata: {\"b\"");
  });
  auto stream =
      SseStream::Open(server.target(), "/v1/completions", "{}", absl::Seconds(2), absl::Seconds(5));
  ASSERT_TRUE(stream.ok()) << stream.status();
  auto first = (*stream)->Next();
  ASSERT_TRUE(first.ok() && first->has_value());
  auto second = (*stream)->Next();
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
}

TEST(HttpGetTest, UnreachableServerIsUnavailable) {
  // A port nothing listens on: bind one, close it.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  auto reply = HttpGet({"127.0.0.1", ntohs(addr.sin_port)}, "/health", absl::Seconds(1));
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kUnavailable);
}

TEST(PrometheusTextTest, SumsLabelSetsAndReadsLabels) {
  const std::string text =
      "# HELP vllm:num_requests_running Number of requests.\n"
      "# TYPE vllm:num_requests_running gauge\n"
      "vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0\n"
      "vllm:num_requests_running{engine=\"1\",model_name=\"m\"} 2.0\n"
      "vllm:num_requests_running_other 100\n"
      "vllm:kv_cache_usage_perc{model_name=\"m\"} 0.25 1700000000000\n"
      "vllm:cache_config_info{block_size=\"128\",engine=\"0\",num_gpu_blocks=\"4096\"} 1.0\n";
  EXPECT_EQ(PrometheusSample(text, "vllm:num_requests_running"), 5.0);
  EXPECT_EQ(PrometheusSample(text, "vllm:kv_cache_usage_perc"), 0.25);
  EXPECT_EQ(PrometheusSample(text, "vllm:num_requests_waiting"), std::nullopt);
  EXPECT_EQ(PrometheusLabel(text, "vllm:cache_config_info", "block_size"), "128");
  EXPECT_EQ(PrometheusLabel(text, "vllm:cache_config_info", "num_gpu_blocks"), "4096");
  EXPECT_EQ(PrometheusLabel(text, "vllm:cache_config_info", "size"), std::nullopt);
}

TEST(VllmServerSpecTest, ParsesUrlAndEndpoints) {
  auto spec = ParseVllmServerSpec(
      "http://10.0.0.5:8100/v1,events=tcp://10.0.0.5:5557,replay=tcp://10.0.0.5:5657,model=llama");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->host, "10.0.0.5");
  EXPECT_EQ(spec->port, 8100);
  EXPECT_EQ(spec->url, "http://10.0.0.5:8100");
  EXPECT_EQ(spec->events, "tcp://10.0.0.5:5557");
  EXPECT_EQ(spec->replay, "tcp://10.0.0.5:5657");
  EXPECT_EQ(spec->model, "llama");
  auto again = ParseVllmServerSpec(FormatVllmServerSpec(*spec));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->events, spec->events);
  auto v6 = ParseVllmServerSpec("http://[::1]:8000");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "::1");
}

TEST(VllmServerSpecTest, RejectsWhatItCannotUse) {
  for (const char* bad :
       {"10.0.0.5:8100", "https://h:1", "http://h", "http://h:0", "http://h:70000",
        "http://h:1,events=h:5557", "http://h:1,replay=tcp://h:2", "http://h:1,colour=blue",
        "http://h:1,events"}) {
    EXPECT_EQ(ParseVllmServerSpec(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace tern::worker::vllm
