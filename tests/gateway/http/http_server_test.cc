#include "gateway/http/http_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "absl/synchronization/notification.h"
#include "tests/gateway/http/http_test_client.h"

namespace tern::gateway {
namespace {

using testing::Get;
using ::testing::HasSubstr;
using testing::PostJson;
using testing::TestHttpClient;

constexpr absl::Duration kWait = absl::Seconds(10);

// Exchanges handed from io threads to the test thread.
class Inbox {
 public:
  void Put(std::shared_ptr<HttpExchange> exchange) {
    std::lock_guard<std::mutex> lock(mu_);
    exchanges_.push_back(std::move(exchange));
    cv_.notify_all();
  }
  std::shared_ptr<HttpExchange> Take() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(10), [&] { return !exchanges_.empty(); }))
      return nullptr;
    auto exchange = exchanges_.front();
    exchanges_.pop_front();
    return exchange;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<HttpExchange>> exchanges_;
};

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpServerOptions options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.io_threads = 2;
    options.max_body_bytes = 1024;
    options.max_header_bytes = 2048;
    auto server = HttpServer::Start(
        options, [this](HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
          Handle(std::move(request), std::move(exchange));
        });
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    ASSERT_NE(server_->port(), 0);
  }

  void Handle(HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
    if (request.path == "/echo") {
      HttpResponse response;
      response.content_type = "text/plain";
      response.body = request.method + " " + request.path + " ?" + request.query +
                      " auth=" + request.authorization + " body=" + request.body;
      response.headers.emplace_back("X-Test", "1");
      exchange->Respond(std::move(response));
    } else if (request.path == "/hints") {
      HttpResponse response;
      response.content_type = "text/plain";
      response.body = "policy=" + request.routing_policy + " session=" + request.session_id;
      exchange->Respond(std::move(response));
    } else if (request.path == "/stream") {
      exchange->StartEventStream();
      exchange->SetOnClientGone([this] { client_gone_.Notify(); });
      inbox_.Put(std::move(exchange));
    } else if (request.path == "/hold") {
      exchange->SetOnClientGone([this] { client_gone_.Notify(); });
      inbox_.Put(std::move(exchange));
    } else if (request.path == "/throw") {
      throw std::runtime_error("handler bug");
    } else {
      HttpResponse response;
      response.status = 404;
      exchange->Respond(std::move(response));
    }
  }

  // Runs `task` with the exchange on its io thread and waits for it.
  static void OnIoThread(const std::shared_ptr<HttpExchange>& exchange,
                         std::function<void(HttpExchange&)> task) {
    absl::Notification done;
    exchange->Post([&] {
      task(*exchange);
      done.Notify();
    });
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWait));
  }

  std::unique_ptr<HttpServer> server_;
  Inbox inbox_;
  absl::Notification client_gone_;
};

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  TestHttpClient client(server_->port());
  ASSERT_TRUE(client.connected());
  auto first = client.Request(PostJson("/echo?x=1", "{\"a\":1}", "Authorization: Bearer k\r\n"));
  ASSERT_TRUE(first.ok);
  EXPECT_EQ(first.status, 200);
  EXPECT_EQ(first.body, "POST /echo ?x=1 auth=Bearer k body={\"a\":1}");
  EXPECT_EQ(first.Header("connection"), "keep-alive");
  EXPECT_EQ(first.Header("x-test"), "1");
  EXPECT_EQ(first.Header("content-type"), "text/plain");
  auto second = client.Request(Get("/echo"));
  ASSERT_TRUE(second.ok);
  EXPECT_EQ(second.body, "GET /echo ? auth= body=");
}

TEST_F(HttpServerTest, RoutingHintsComeFromTheirHeaders) {
  TestHttpClient client(server_->port());
  auto hinted = client.Request(
      PostJson("/hints", "{}", "X-Tern-Routing-Policy: round-robin\r\nX-Session-Id: chat-42\r\n"));
  ASSERT_TRUE(hinted.ok);
  EXPECT_EQ(hinted.body, "policy=round-robin session=chat-42");
  auto plain = client.Request(Get("/hints"));
  ASSERT_TRUE(plain.ok);
  EXPECT_EQ(plain.body, "policy= session=");
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  TestHttpClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/echo?n=1") + Get("/echo?n=2")));
  auto first = client.Read();
  auto second = client.Read();
  EXPECT_THAT(first.body, HasSubstr("?n=1"));
  EXPECT_THAT(second.body, HasSubstr("?n=2"));
}

TEST_F(HttpServerTest, ConnectionCloseIsHonoured) {
  TestHttpClient client(server_->port());
  auto response = client.Request(Get("/echo", "Connection: close\r\n"));
  ASSERT_TRUE(response.ok);
  EXPECT_EQ(response.Header("connection"), "close");
  EXPECT_TRUE(client.PeerClosed());
}

TEST_F(HttpServerTest, Http10DefaultsToClose) {
  TestHttpClient client(server_->port());
  auto response = client.Request("GET /echo HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(response.ok);
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.Header("connection"), "close");
  EXPECT_TRUE(client.PeerClosed());
}

TEST_F(HttpServerTest, HeadGetsHeadersOnly) {
  TestHttpClient client(server_->port());
  ASSERT_TRUE(client.Send("HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n" + Get("/echo?after")));
  auto head = client.Read([](const std::string&) {}, /*head_request=*/true);
  ASSERT_TRUE(head.ok);
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.Header("content-length"), "24");  // "HEAD /echo ? auth= body="
  // No body bytes came: the next bytes are the next response.
  auto next = client.Read();
  ASSERT_TRUE(next.ok);
  EXPECT_EQ(next.body, "GET /echo ?after auth= body=");
}

TEST_F(HttpServerTest, OversizedBodyIs413WithOpenAiError) {
  TestHttpClient client(server_->port());
  auto response = client.Request(PostJson("/echo", std::string(5000, 'x')));
  ASSERT_TRUE(response.ok);
  EXPECT_EQ(response.status, 413);
  const auto body = nlohmann::json::parse(response.body);
  EXPECT_THAT(body["error"]["message"].get<std::string>(), HasSubstr("1024"));
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(response.Header("connection"), "close");
}

TEST_F(HttpServerTest, OversizedChunkedBodyIs413) {
  TestHttpClient client(server_->port());
  std::string request = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 3; ++i) request += "200\r\n" + std::string(512, 'y') + "\r\n";
  request += "0\r\n\r\n";
  auto response = client.Request(request);
  ASSERT_TRUE(response.ok);
  EXPECT_EQ(response.status, 413);
}

TEST_F(HttpServerTest, BodyAtTheLimitIsAccepted) {
  TestHttpClient client(server_->port());
  auto response = client.Request(PostJson("/echo", std::string(1024, 'z')));
  ASSERT_TRUE(response.ok);
  EXPECT_EQ(response.status, 200);
}

TEST_F(HttpServerTest, OversizedHeaderIs431) {
  TestHttpClient client(server_->port());
  auto response = client.Request(Get("/echo", "X-Big: " + std::string(4096, 'h') + "\r\n"));
  ASSERT_TRUE(response.ok);
  EXPECT_EQ(response.status, 431);
  EXPECT_TRUE(nlohmann::json::parse(response.body).contains("error"));
}

TEST_F(HttpServerTest, MalformedRequestIs400) {
  for (const char* garbage : {"GARBAGE\r\n\r\n", "GET / HTTP/9.9\r\n\r\n",
                              "POST /echo HTTP/1.1\r\nContent-Length: x\r\n\r\n"}) {
    TestHttpClient client(server_->port());
    auto response = client.Request(garbage);
    ASSERT_TRUE(response.ok) << garbage;
    EXPECT_EQ(response.status, 400) << garbage;
    EXPECT_TRUE(nlohmann::json::parse(response.body).contains("error"));
  }
}

TEST_F(HttpServerTest, ExpectContinueGetsAnInterimResponse) {
  TestHttpClient client(server_->port());
  const std::string body = "{\"k\":\"v\"}";
  ASSERT_TRUE(
      client.Send("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\n\r\n"));
  auto interim = client.Read();
  ASSERT_TRUE(interim.ok);
  EXPECT_EQ(interim.status, 100);
  ASSERT_TRUE(client.Send(body));
  auto response = client.Read();
  EXPECT_EQ(response.status, 200);
  EXPECT_THAT(response.body, HasSubstr(body));
}

TEST_F(HttpServerTest, HandlerExceptionBecomes500) {
  TestHttpClient client(server_->port());
  auto response = client.Request(Get("/throw"));
  ASSERT_TRUE(response.ok);
  EXPECT_EQ(response.status, 500);
  EXPECT_EQ(nlohmann::json::parse(response.body)["error"]["type"], "server_error");
  // The connection still serves the next request.
  EXPECT_EQ(client.Request(Get("/echo")).status, 200);
}

TEST_F(HttpServerTest, EachEventReachesTheClientBeforeTheNextIsProduced) {
  TestHttpClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/stream")));
  auto exchange = inbox_.Take();
  ASSERT_NE(exchange, nullptr);
  OnIoThread(exchange, [](HttpExchange& ex) { ex.SendEvent("data: 0\n\n"); });
  int next = 0;
  auto response = client.Read([&](const std::string& chunk) {
    EXPECT_EQ(chunk, "data: " + std::to_string(next) + "\n\n");
    ++next;
    OnIoThread(exchange, [&](HttpExchange& ex) {
      if (next < 3) {
        ex.SendEvent("data: " + std::to_string(next) + "\n\n");
      } else {
        ex.EndEventStream();
      }
    });
  });
  ASSERT_TRUE(response.ok);
  EXPECT_EQ(next, 3);
  EXPECT_EQ(response.chunks.size(), 3u);
}

TEST_F(HttpServerTest, StreamHeadersAndChunks) {
  TestHttpClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/stream")));
  auto exchange = inbox_.Take();
  ASSERT_NE(exchange, nullptr);
  OnIoThread(exchange, [](HttpExchange& ex) {
    ex.SendEvent("data: a\n\n");
    ex.SendEvent("data: b\n\n");
    ex.EndEventStream();
    // Late calls after the end are ignored.
    ex.SendEvent("data: late\n\n");
    ex.Respond(HttpResponse{});
  });
  auto response = client.Read();
  ASSERT_TRUE(response.ok);
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.Header("content-type"), "text/event-stream");
  EXPECT_EQ(response.Header("transfer-encoding"), "chunked");
  EXPECT_EQ(response.Header("cache-control"), "no-cache");
  EXPECT_THAT(response.chunks, ::testing::ElementsAre("data: a\n\n", "data: b\n\n"));
  // Keep-alive: the connection serves another request after the stream.
  auto next = client.Request(Get("/echo"));
  EXPECT_EQ(next.status, 200);
  EXPECT_EQ(next.body, "GET /echo ? auth= body=");
}

TEST_F(HttpServerTest, ClientClosingDuringAStreamIsReported) {
  auto client = std::make_unique<TestHttpClient>(server_->port());
  ASSERT_TRUE(client->Send(Get("/stream")));
  auto exchange = inbox_.Take();
  ASSERT_NE(exchange, nullptr);
  OnIoThread(exchange, [](HttpExchange& ex) { ex.SendEvent("data: 1\n\n"); });
  client.reset();  // closes the socket mid-stream, with nothing more being written
  EXPECT_TRUE(client_gone_.WaitForNotificationWithTimeout(kWait));
}

TEST_F(HttpServerTest, ClientClosingBeforeAnyResponseIsReported) {
  auto client = std::make_unique<TestHttpClient>(server_->port());
  ASSERT_TRUE(client->Send(PostJson("/hold", "{}")));
  auto exchange = inbox_.Take();
  ASSERT_NE(exchange, nullptr);
  client.reset();
  EXPECT_TRUE(client_gone_.WaitForNotificationWithTimeout(kWait));
  // Responding afterwards is harmless.
  OnIoThread(exchange, [](HttpExchange& ex) { ex.Respond(HttpResponse{}); });
}

TEST_F(HttpServerTest, DeferredResponseFromAnotherThread) {
  TestHttpClient client(server_->port());
  ASSERT_TRUE(client.Send(PostJson("/hold", "{}")));
  auto exchange = inbox_.Take();
  ASSERT_NE(exchange, nullptr);
  exchange->Post([exchange] {
    HttpResponse response;
    response.status = 503;
    response.body = "{}";
    response.headers.emplace_back("Retry-After", "1");
    exchange->Respond(std::move(response));
  });
  auto response = client.Read();
  EXPECT_EQ(response.status, 503);
  EXPECT_EQ(response.Header("retry-after"), "1");
  EXPECT_FALSE(client_gone_.HasBeenNotified());
}

TEST_F(HttpServerTest, StopAcceptingRefusesNewConnections) {
  server_->StopAccepting();
  TestHttpClient client(server_->port());
  EXPECT_FALSE(client.connected() && client.Request(Get("/echo")).ok);
  server_->Stop();
}

TEST(HttpServerStartTest, BindFailureIsUnavailable) {
  HttpServerOptions options;
  options.port = 0;
  options.io_threads = 1;
  auto first = HttpServer::Start(options, [](HttpRequest, std::shared_ptr<HttpExchange>) {});
  ASSERT_TRUE(first.ok());
  options.port = (*first)->port();
  auto second = HttpServer::Start(options, [](HttpRequest, std::shared_ptr<HttpExchange>) {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  options.host = "no-such-host.invalid";
  EXPECT_FALSE(HttpServer::Start(options, [](HttpRequest, std::shared_ptr<HttpExchange>) {}).ok());
}

}  // namespace
}  // namespace tern::gateway
