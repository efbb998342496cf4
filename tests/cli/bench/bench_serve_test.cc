// `tern bench serve`: the SSE parser, the stream reader, vLLM's metric
// definitions on synthetic timestamps (percentiles checked against values
// numpy.percentile gives), and the load generator against an in-process
// HTTP server on 127.0.0.1 that streams a fixed answer.
// clang-format off
#include <utility>  // first: Boost 1.74's asio/awaitable.hpp uses std::exchange unincluded
// clang-format on

#include "cli/bench/bench_serve.h"

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "cli/bench/bench_load.h"
#include "cli/bench/bench_metrics.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tern::cli {
namespace {

std::vector<std::string> ParseAll(const std::vector<std::string>& pieces) {
  std::vector<std::string> events;
  SseParser parser([&](absl::string_view data) { events.emplace_back(data); });
  for (const auto& p : pieces) parser.Feed(p);
  return events;
}

TEST(SseParserTest, EventsSurviveAnySplitAndLineEnding) {
  const std::string stream =
      ": comment\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\n"
      "data:nospace\r\rdata: [DONE]\n\n";
  const std::vector<std::string> expected = {"{\"a\":1}", "line1\nline2", "nospace", "[DONE]"};
  EXPECT_EQ(ParseAll({stream}), expected);
  std::vector<std::string> bytes;
  for (char c : stream) bytes.emplace_back(1, c);
  EXPECT_EQ(ParseAll(bytes), expected);
}

TEST(SseParserTest, IncompleteEventIsNotDelivered) {
  EXPECT_TRUE(ParseAll({"data: {\"a\":1}\n"}).empty());
}

TEST(StreamChunkReaderTest, ReadsTextChunksUsageAndDone) {
  RequestRecord record;
  StreamChunkReader reader(&record);
  reader.OnEvent(R"({"choices":[{"index":0,"delta":{"role":"assistant"}}],"usage":null})", 0.1);
  reader.OnEvent(R"({"choices":[{"index":0,"delta":{"content":"Hel"}}],"usage":null})", 0.2);
  reader.OnEvent(R"({"choices":[{"index":0,"delta":{"content":"lo"}}],"usage":null})", 0.3);
  reader.OnEvent(R"({"choices":[],"usage":{"prompt_tokens":40,"completion_tokens":2,)"
                 R"("prompt_tokens_details":{"cached_tokens":32}}})",
                 0.4);
  EXPECT_FALSE(reader.done());
  reader.OnEvent("[DONE]", 0.5);
  EXPECT_TRUE(reader.done());
  EXPECT_TRUE(reader.error().empty());
  EXPECT_EQ(record.text, "Hello");
  EXPECT_EQ(record.chunk_times, (std::vector<double>{0.2, 0.3}));
  EXPECT_TRUE(record.has_usage);
  EXPECT_EQ(record.prompt_tokens, 40);
  EXPECT_EQ(record.output_tokens, 2);
  EXPECT_EQ(record.cached_tokens, 32);
}

TEST(StreamChunkReaderTest, ErrorObjectsAndBadJsonAreErrors) {
  RequestRecord record;
  StreamChunkReader reader(&record);
  reader.OnEvent(R"({"error":{"message":"boom"}})", 0.1);
  EXPECT_EQ(reader.error(), "stream error");
  RequestRecord other;
  StreamChunkReader bad(&other);
  bad.OnEvent("{not json", 0.1);
  EXPECT_EQ(bad.error(), "bad stream json");
}

TEST(PercentileTest, MatchesNumpyLinearInterpolation) {
  // numpy.percentile([1, 2, 3, 4], 90) == 3.7, ([15, 20, 35, 40, 50], 40) == 29.0,
  // (range(1, 11), 99) == 9.91, ([5], 99) == 5.
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 90), 3.7);
  EXPECT_DOUBLE_EQ(Percentile({15, 20, 35, 40, 50}, 40), 29.0);
  EXPECT_NEAR(Percentile({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 99), 9.91, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile({5}, 99), 5);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4}, 50), 2.5);
}

TEST(ServeMetricsTest, FollowsVllmDefinitions) {
  RequestRecord a;  // 4 tokens in 3 chunks
  a.ok = true;
  a.start = 1.0;
  a.chunk_times = {1.1, 1.15, 1.3};
  a.end = 1.4;
  a.prompt_tokens = 100;
  a.output_tokens = 4;
  a.cached_tokens = 64;
  RequestRecord b;  // 1 token: no TPOT
  b.ok = true;
  b.start = 2.0;
  b.chunk_times = {2.5};
  b.end = 2.5;
  b.prompt_tokens = 50;
  b.output_tokens = 1;
  RequestRecord failed;
  failed.error = "http 503";
  const ServeMetrics m = ComputeServeMetrics({a, b, failed, failed}, 2.0);
  EXPECT_EQ(m.completed, 2);
  EXPECT_EQ(m.failed, 2);
  EXPECT_EQ(m.errors.at("http 503"), 2);
  EXPECT_EQ(m.input_tokens, 150);
  EXPECT_EQ(m.output_tokens, 5);
  EXPECT_DOUBLE_EQ(m.request_throughput, 1.0);
  EXPECT_DOUBLE_EQ(m.output_throughput, 2.5);
  EXPECT_DOUBLE_EQ(m.total_throughput, 77.5);
  EXPECT_DOUBLE_EQ(m.prefix_hit_rate, 64.0 / 150.0);
  // TTFT 100 and 500 ms.
  EXPECT_NEAR(m.ttft_ms.mean, 300, 1e-9);
  EXPECT_NEAR(m.ttft_ms.median, 300, 1e-9);
  EXPECT_NEAR(m.ttft_ms.p90, 460, 1e-9);
  // TPOT of a: (400 - 100) / 3 ms.
  EXPECT_EQ(m.tpot_ms.count, 1u);
  EXPECT_NEAR(m.tpot_ms.mean, 100, 1e-9);
  // ITL: 50 and 150 ms.
  EXPECT_EQ(m.itl_ms.count, 2u);
  EXPECT_NEAR(m.itl_ms.mean, 100, 1e-9);
  EXPECT_NEAR(m.itl_ms.p99, 149, 1e-9);
  // E2E: 400 and 500 ms.
  EXPECT_NEAR(m.e2e_ms.median, 450, 1e-9);
  const std::string table = FormatServeTable({{"prefix", m}, {"round-robin", m}});
  EXPECT_NE(table.find("Mean TTFT (ms)"), std::string::npos);
  EXPECT_NE(table.find("round-robin"), std::string::npos);
  EXPECT_NE(table.find("Errors [prefix] http 503: 2"), std::string::npos);
}

TEST(HttpUrlTest, ParsesHostAndPort) {
  auto e = ParseHttpUrl("http://127.0.0.1:8000/v1");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "127.0.0.1");
  EXPECT_EQ(e->port, 8000);
  EXPECT_EQ(ParseHttpUrl("http://localhost")->port, 80);
  EXPECT_FALSE(ParseHttpUrl("https://x:1").ok());
  EXPECT_FALSE(ParseHttpUrl("http://x:99999").ok());
}

// Answers every POST with a chunked SSE stream of three one-token chunks and
// a usage chunk, on keep-alive connections; records what it was sent.
class FakeOpenAiServer {
 public:
  FakeOpenAiServer() : acceptor_(io_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeOpenAiServer() {
    stop_ = true;
    // A blocking accept() is not woken by close(): connect once to end it.
    boost::system::error_code ec;
    boost::asio::ip::tcp::socket wake(io_);
    wake.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
    acceptor_.close(ec);
    for (auto& t : connections_) t.join();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  std::vector<boost::beast::http::request<boost::beast::http::string_body>> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  void Serve() {
    while (!stop_) {
      boost::system::error_code ec;
      boost::asio::ip::tcp::socket socket(io_);
      acceptor_.accept(socket, ec);
      if (ec || stop_) return;
      connections_.emplace_back([this, s = std::move(socket)]() mutable { Connection(s); });
    }
  }
  void Connection(boost::asio::ip::tcp::socket& socket) {
    namespace http = boost::beast::http;
    boost::beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      boost::system::error_code ec;
      http::read(socket, buffer, req, ec);
      if (ec) return;
      {
        std::lock_guard<std::mutex> lock(mu_);
        requests_.push_back(req);
      }
      std::string out =
          "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
          "Transfer-Encoding: chunked\r\n\r\n";
      auto chunk = [&](const std::string& data) {
        const std::string event = "data: " + data + "\n\n";
        out += absl::StrFormat("%x\r\n%s\r\n", event.size(), event);
      };
      for (const char* piece : {"a", "b", "c"}) {
        chunk(absl::StrFormat(R"({"choices":[{"index":0,"text":"%s"}],"usage":null})", piece));
      }
      chunk(R"({"choices":[],"usage":{"prompt_tokens":17,"completion_tokens":3,)"
            R"("prompt_tokens_details":{"cached_tokens":16}}})");
      chunk("[DONE]");
      out += "0\r\n\r\n";
      boost::asio::write(socket, boost::asio::buffer(out), ec);
      if (ec) return;
    }
  }

  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<std::thread> connections_;
  std::mutex mu_;
  std::vector<boost::beast::http::request<boost::beast::http::string_body>> requests_;
};

TEST(RunLoadTest, StreamsEveryRequestAndSendsThePolicyHeader) {
  FakeOpenAiServer server;
  Workload workload;
  workload.output_len = 3;
  for (int i = 0; i < 6; ++i) {
    Session s;
    s.user_messages = {absl::StrFormat(" prompt %d", i)};
    s.message_tokens = {2};
    workload.sessions.push_back(s);
  }
  LoadOptions options;
  options.endpoint = {"127.0.0.1", server.port()};
  options.model = "m";
  options.concurrency = 2;
  options.policy = "round-robin";
  options.progress = false;
  options.request_timeout = std::chrono::seconds(20);
  options.run_timeout = std::chrono::seconds(60);
  auto result = RunLoad(workload, options);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->records.size(), 6u);
  for (const RequestRecord& r : result->records) {
    EXPECT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.text, "abc");
    EXPECT_EQ(r.chunk_times.size(), 3u);
    EXPECT_EQ(r.output_tokens, 3);
  }
  const ServeMetrics m = ComputeServeMetrics(result->records, result->duration_s);
  EXPECT_EQ(m.completed, 6);
  EXPECT_DOUBLE_EQ(m.prefix_hit_rate, 16.0 / 17.0);
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 6u);
  std::set<std::string> prompts;
  for (const auto& req : requests) {
    EXPECT_EQ(req.target(), "/v1/completions");
    EXPECT_EQ(req["x-tern-routing-policy"], "round-robin");
    const nlohmann::json body = nlohmann::json::parse(req.body());
    EXPECT_EQ(body["model"], "m");
    EXPECT_EQ(body["max_tokens"], 3);
    EXPECT_EQ(body["stream"], true);
    EXPECT_EQ(body["stream_options"]["include_usage"], true);
    prompts.insert(body["prompt"].get<std::string>());
  }
  EXPECT_EQ(prompts.size(), 6u);
}

TEST(RunLoadTest, UnreachableServerFailsEveryRequestWithinTheTimeout) {
  // A port that was just free: connections are refused.
  uint16_t port = 0;
  {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }
  Workload workload;
  workload.output_len = 3;
  workload.sessions.resize(3);
  for (auto& s : workload.sessions) s.user_messages = {" x", " y"};  // two turns each
  LoadOptions options;
  options.endpoint = {"127.0.0.1", port};
  options.model = "m";
  options.chat = true;
  options.progress = false;
  options.request_timeout = std::chrono::seconds(5);
  options.run_timeout = std::chrono::seconds(10);
  auto result = RunLoad(workload, options);
  ASSERT_TRUE(result.ok());
  const ServeMetrics m = ComputeServeMetrics(result->records, result->duration_s);
  EXPECT_EQ(m.completed, 0);
  EXPECT_EQ(m.failed, 6);
  EXPECT_EQ(m.errors.at("connect"), 3);
  EXPECT_EQ(m.errors.at("earlier turn failed"), 3);
}

}  // namespace
}  // namespace tern::cli
