// The front door of HttpServer: read deadlines (408), connection caps,
// one request at a time per connection, and HTTPS with certificate reload.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gateway/http/http_server.h"
#include "tests/gateway/http/http_test_client.h"
#include "tests/gateway/http/tls_test_util.h"

namespace tern::gateway {
namespace {

using testing::Get;
using ::testing::HasSubstr;
using testing::PostJson;
using testing::TestHttpClient;
using testing::TlsTestClient;

// Waits (bounded) for a condition another thread makes true.
template <typename Predicate>
bool Eventually(Predicate predicate) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (predicate()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return predicate();
}

class FrontDoorTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (server_ != nullptr) server_->Stop();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  HttpServerOptions Options() {
    HttpServerOptions options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.io_threads = 2;
    options.events.opened = [this] { ++opened_; };
    options.events.closed = [this] { ++closed_; };
    options.events.rejected = [this](std::string_view reason) {
      absl::MutexLock lock(&mu_);
      rejections_.emplace_back(reason);
    };
    return options;
  }

  void Start(HttpServerOptions options) {
    auto server = HttpServer::Start(
        std::move(options), [this](HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
          ++requests_;
          if (request.path == "/stream") {
            exchange->StartEventStream();
            exchange->SendEvent("data: 1\n\n");
            absl::MutexLock lock(&mu_);
            stream_ = std::move(exchange);
            return;
          }
          HttpResponse response;
          response.content_type = "text/plain";
          response.body = "ok " + request.path;
          exchange->Respond(std::move(response));
        });
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
  }

  // A folder for certificate files, removed after the test.
  std::string TempDir() {
    char pattern[] = "/tmp/tern-front-door-XXXXXX";
    if (::mkdtemp(pattern) != nullptr) dir_ = pattern;
    return dir_;
  }

  std::vector<std::string> rejections() {
    absl::MutexLock lock(&mu_);
    return rejections_;
  }

  std::unique_ptr<HttpServer> server_;
  std::atomic<int> requests_{0};
  std::atomic<int> opened_{0};
  std::atomic<int> closed_{0};
  absl::Mutex mu_;
  std::vector<std::string> rejections_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<HttpExchange> stream_ ABSL_GUARDED_BY(mu_);
  std::string dir_;
};

TEST_F(FrontDoorTest, HeaderThatStallsIs408) {
  HttpServerOptions options = Options();
  options.header_timeout = absl::Milliseconds(300);
  Start(std::move(options));
  TestHttpClient client(server_->port());
  ASSERT_TRUE(client.Send("GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Trickle: a"));
  auto response = client.Read();
  ASSERT_TRUE(response.ok);
  EXPECT_EQ(response.status, 408);
  EXPECT_EQ(response.Header("connection"), "close");
  EXPECT_THAT(response.body, HasSubstr("header"));
  EXPECT_TRUE(client.PeerClosed());
  EXPECT_EQ(requests_, 0);
}

TEST_F(FrontDoorTest, BodyThatStallsIs408) {
  HttpServerOptions options = Options();
  options.body_idle_timeout = absl::Milliseconds(300);
  Start(std::move(options));
  TestHttpClient client(server_->port());
  ASSERT_TRUE(
      client.Send("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n12345"));
  auto response = client.Read();
  ASSERT_TRUE(response.ok);
  EXPECT_EQ(response.status, 408);
  EXPECT_THAT(response.body, HasSubstr("body"));
  EXPECT_EQ(requests_, 0);
}

TEST_F(FrontDoorTest, BodyThatKeepsComingIsNotTimedOut) {
  HttpServerOptions options = Options();
  options.body_idle_timeout = absl::Milliseconds(500);
  Start(std::move(options));
  TestHttpClient client(server_->port());
  ASSERT_TRUE(client.Send("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\n"));
  // Three gaps of 200 ms: longer than the idle timeout in all, shorter each.
  for (const char* piece : {"a", "b", "c"}) {
    absl::SleepFor(absl::Milliseconds(200));
    ASSERT_TRUE(client.Send(piece));
  }
  ASSERT_TRUE(client.Send("d"));
  auto response = client.Read();
  ASSERT_TRUE(response.ok);
  EXPECT_EQ(response.status, 200);
}

TEST_F(FrontDoorTest, ConnectionThatSendsNothingIsClosedWithoutAResponse) {
  HttpServerOptions options = Options();
  options.header_timeout = absl::Milliseconds(200);
  Start(std::move(options));
  TestHttpClient client(server_->port());
  EXPECT_TRUE(client.PeerClosed());
  EXPECT_TRUE(Eventually([&] { return server_->open_connections() == 0; }));
}

TEST_F(FrontDoorTest, PerClientCapClosesTheExtraConnectionAtOnce) {
  HttpServerOptions options = Options();
  options.max_connections_per_client = 2;
  Start(std::move(options));
  auto first = std::make_unique<TestHttpClient>(server_->port());
  TestHttpClient second(server_->port());
  ASSERT_EQ(first->Request(Get("/a")).status, 200);
  ASSERT_EQ(second.Request(Get("/b")).status, 200);
  TestHttpClient third(server_->port());
  ASSERT_TRUE(third.connected());  // the kernel accepted it; the server closes it
  EXPECT_FALSE(third.Request(Get("/c")).ok);
  EXPECT_THAT(rejections(), ::testing::ElementsAre("max_connections_per_client"));
  EXPECT_EQ(server_->open_connections(), 2);

  first.reset();
  ASSERT_TRUE(Eventually([&] { return server_->open_connections() == 1; }));
  TestHttpClient fourth(server_->port());
  EXPECT_EQ(fourth.Request(Get("/d")).status, 200);
  EXPECT_EQ(opened_, 3);
}

TEST_F(FrontDoorTest, TotalCapClosesTheExtraConnectionAtOnce) {
  HttpServerOptions options = Options();
  options.max_connections = 1;
  Start(std::move(options));
  TestHttpClient first(server_->port());
  ASSERT_EQ(first.Request(Get("/a")).status, 200);
  TestHttpClient second(server_->port());
  EXPECT_FALSE(second.Request(Get("/b")).ok);
  EXPECT_THAT(rejections(), ::testing::ElementsAre("max_connections"));
  EXPECT_EQ(first.Request(Get("/a")).status, 200);
  first.Close();
  EXPECT_TRUE(Eventually([&] { return closed_ == 1 && server_->open_connections() == 0; }));
}

TEST_F(FrontDoorTest, PipelinedRequestBehindAStreamIsNotReadUntilItEnds) {
  Start(Options());
  TestHttpClient client(server_->port());
  ASSERT_TRUE(client.Send(Get("/stream") + Get("/after")));
  std::shared_ptr<HttpExchange> stream;
  ASSERT_TRUE(Eventually([&] {
    absl::MutexLock lock(&mu_);
    stream = stream_;
    return stream != nullptr;
  }));
  // The stream's first event is written; the pipelined request must still
  // be unread a while later.
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(requests_, 1);
  absl::Notification ended;
  stream->Post([&] {
    stream->EndEventStream();
    ended.Notify();
  });
  ASSERT_TRUE(ended.WaitForNotificationWithTimeout(absl::Seconds(10)));
  auto streamed = client.Read();
  ASSERT_TRUE(streamed.ok);
  EXPECT_EQ(streamed.body, "data: 1\n\n");
  auto after = client.Read();
  ASSERT_TRUE(after.ok);
  EXPECT_EQ(after.body, "ok /after");
  EXPECT_EQ(requests_, 2);
}

TEST_F(FrontDoorTest, OnlyOneOfTheTlsFilesIsInvalidArgument) {
  HttpServerOptions options = Options();
  options.tls_cert_file = "/nonexistent/tls.crt";
  auto server = HttpServer::Start(options, [](HttpRequest, std::shared_ptr<HttpExchange>) {});
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
}

class HttpsTest : public FrontDoorTest {
 protected:
  void SetUp() override {
    const std::string dir = TempDir();
    ASSERT_FALSE(dir.empty());
    cert_ = dir + "/tls.crt";
    key_ = dir + "/tls.key";
    ASSERT_TRUE(testing::WriteSelfSignedCert(cert_, key_, "first"));
  }

  void StartTls(absl::Duration poll_interval = absl::ZeroDuration()) {
    HttpServerOptions options = Options();
    options.tls_cert_file = cert_;
    options.tls_key_file = key_;
    options.tls_poll_interval = poll_interval;
    Start(std::move(options));
  }

  // The CA a client trusts: a copy of the certificate served now.
  std::string TrustNow(const std::string& name) {
    const std::string ca = dir_ + "/" + name + ".pem";
    std::filesystem::copy_file(cert_, ca, std::filesystem::copy_options::overwrite_existing);
    return ca;
  }

  std::string cert_, key_;
};

TEST_F(HttpsTest, ServesRequestsOverTls12And13WithAlpn) {
  StartTls();
  ASSERT_TRUE(server_->tls());
  const std::string ca = TrustNow("first");
  TlsTestClient client(server_->port(), ca);
  ASSERT_TRUE(client.connected());
  EXPECT_EQ(client.version(), "TLSv1.3");
  EXPECT_EQ(client.alpn(), "http/1.1");
  const std::string response = client.Request(Get("/hello"));
  EXPECT_THAT(response, HasSubstr("HTTP/1.1 200 OK"));
  EXPECT_THAT(response, HasSubstr("ok /hello"));
  // Keep-alive on the same TLS connection.
  EXPECT_THAT(client.Request(Get("/again")), HasSubstr("ok /again"));

  TlsTestClient tls12(server_->port(), ca, TLS1_2_VERSION);
  ASSERT_TRUE(tls12.connected());
  EXPECT_EQ(tls12.version(), "TLSv1.2");
  EXPECT_THAT(tls12.cipher(), ::testing::AnyOf(HasSubstr("GCM"), HasSubstr("CHACHA20")));
  EXPECT_THAT(tls12.Request(Get("/v12")), HasSubstr("ok /v12"));
}

TEST_F(HttpsTest, OldProtocolVersionsAreRefused) {
  StartTls();
  TlsTestClient client(server_->port(), TrustNow("first"), TLS1_1_VERSION);
  EXPECT_FALSE(client.connected());
}

TEST_F(HttpsTest, PlainHttpOnTheTlsPortIsClosedAndServingGoesOn) {
  StartTls();
  TestHttpClient plain(server_->port());
  EXPECT_FALSE(plain.Request(Get("/plain")).ok);
  TlsTestClient client(server_->port(), TrustNow("first"));
  EXPECT_THAT(client.Request(Get("/tls")), HasSubstr("ok /tls"));
  EXPECT_EQ(requests_, 1);
}

TEST_F(HttpsTest, TlsRequestThatStallsIs408) {
  HttpServerOptions options = Options();
  options.tls_cert_file = cert_;
  options.tls_key_file = key_;
  options.header_timeout = absl::Milliseconds(500);
  Start(std::move(options));
  TlsTestClient client(server_->port(), TrustNow("first"));
  ASSERT_TRUE(client.connected());
  EXPECT_THAT(client.Request("GET /slow HTTP/1.1\r\nHost: x\r\n"),
              HasSubstr("HTTP/1.1 408 Request Timeout"));
}

TEST_F(HttpsTest, ReloadServesTheNewCertificateToNewConnectionsOnly) {
  StartTls();
  TlsTestClient old_connection(server_->port(), TrustNow("first"));
  ASSERT_THAT(old_connection.Request(Get("/before")), HasSubstr("ok /before"));
  EXPECT_EQ(old_connection.PeerCommonName(), "first");

  ASSERT_TRUE(testing::WriteSelfSignedCert(cert_, key_, "second"));
  ASSERT_TRUE(server_->ReloadTls().ok());
  TlsTestClient new_connection(server_->port(), TrustNow("second"));
  ASSERT_TRUE(new_connection.connected());
  EXPECT_EQ(new_connection.PeerCommonName(), "second");
  EXPECT_THAT(new_connection.Request(Get("/new")), HasSubstr("ok /new"));
  // The connection from before the reload was not dropped.
  EXPECT_THAT(old_connection.Request(Get("/after")), HasSubstr("ok /after"));

  // A broken key: the reload fails and the second certificate stays.
  {
    std::FILE* file = std::fopen(key_.c_str(), "w");
    std::fputs("not a key\n", file);
    std::fclose(file);
  }
  EXPECT_FALSE(server_->ReloadTls().ok());
  TlsTestClient still_second(server_->port(), dir_ + "/second.pem");
  EXPECT_EQ(still_second.PeerCommonName(), "second");
}

TEST_F(HttpsTest, ChangedFilesAreReloadedByThePoll) {
  StartTls(absl::Milliseconds(50));
  ASSERT_TRUE(testing::WriteSelfSignedCert(cert_, key_, "polled"));
  const auto later = std::filesystem::last_write_time(cert_) + std::chrono::seconds(2);
  std::filesystem::last_write_time(cert_, later);
  const std::string ca = TrustNow("polled");
  EXPECT_TRUE(Eventually([&] {
    TlsTestClient client(server_->port(), ca);
    return client.connected() && client.PeerCommonName() == "polled";
  }));
}

}  // namespace
}  // namespace tern::gateway
