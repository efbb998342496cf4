// The listener: io threads, the acceptor with its connection caps, and the
// TLS context new connections take. The connections themselves are
// http_connection.cc's.
#include "gateway/http/http_server.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <future>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "gateway/http/connection_limiter.h"
#include "gateway/http/http_connection.h"
#include "gateway/http/tls_context.h"

namespace tern::gateway {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

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

struct HttpServer::Impl {
  std::shared_ptr<ConnectionShared> shared;
  std::unique_ptr<ServerTlsContext> tls;  // null: plain HTTP
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
    acceptor->async_accept(target, [this](error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor->is_open()) return;
      if (ec) {
        // Typically EMFILE: back off instead of spinning on the error.
        TERN_LOG(Warning) << "http: accept failed: " << ec.message();
        retry_timer->expires_after(std::chrono::milliseconds(100));
        retry_timer->async_wait([this](error_code timer_ec) {
          if (!timer_ec && acceptor->is_open()) Accept();
        });
        return;
      }
      Admit(std::move(socket));
      Accept();
    });
  }

  // Counts the connection against the caps and hands it to its context, or
  // closes it at once.
  void Admit(tcp::socket socket) {
    error_code ec;
    const tcp::endpoint peer = socket.remote_endpoint(ec);
    if (ec) return;  // already reset by the client; the socket closes here
    std::string client = peer.address().to_string();
    const HttpServerOptions::Events& events = shared->options.events;
    if (const ConnectionCap cap = shared->limiter.TryAdmit(client); cap != ConnectionCap::kNone) {
      if (events.rejected) events.rejected(ConnectionCapName(cap));
      socket.close(ec);
      return;
    }
    if (events.opened) events.opened();
    const net::any_io_executor executor = socket.get_executor();
    net::post(executor, [socket = std::move(socket), client = std::move(client), shared = shared,
                         context = tls ? tls->Current() : nullptr]() mutable {
      ServeConnection(std::move(socket), std::move(client), std::move(shared), std::move(context));
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
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "gateway TLS needs both a certificate file and a key file (or neither)");
  }
  if (!options.tls_cert_file.empty()) {
    auto tls = ServerTlsContext::Load(options.tls_cert_file, options.tls_key_file,
                                      options.tls_poll_interval);
    if (!tls.ok()) return tls.status();
    impl->tls = *std::move(tls);
  }
  impl->shared = std::make_shared<ConnectionShared>(std::move(options), std::move(handler));
  for (int i = 0; i < threads; ++i) {
    impl->contexts.push_back(std::make_unique<net::io_context>(1));
    impl->guards.push_back(net::make_work_guard(*impl->contexts.back()));
  }
  net::io_context& first = *impl->contexts.front();

  error_code ec;
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

bool HttpServer::tls() const { return impl_->tls != nullptr; }

int HttpServer::open_connections() const { return impl_->shared->limiter.open(); }

absl::Status HttpServer::ReloadTls() {
  if (impl_->tls == nullptr) {
    return absl::FailedPreconditionError("the HTTP listener has no TLS certificate to reload");
  }
  return impl_->tls->Reload();
}

void HttpServer::StopAccepting() {
  impl_->shared->stopping = true;
  if (impl_->stopped || !impl_->accepting) return;
  impl_->accepting = false;
  std::promise<void> closed;
  net::post(*impl_->contexts.front(), [this, &closed] {
    error_code ec;
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
