// tern-gateway: flags -> config -> served model + router client + HTTP server
// (+ the gRPC API when gateway.grpc_listen is set) -> serve until SIGINT/SIGTERM
// (SIGHUP reloads the HTTPS certificate).
#include <sys/resource.h>

#include <csignal>
#include <iostream>
#include <memory>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "common/flags.h"
#include "common/grpc_tls.h"
#include "common/log.h"
#include "common/signals.h"
#include "gateway/api_service.h"
#include "gateway/http/host_port.h"
#include "gateway/http/http_server.h"
#include "gateway/inference_api/inference_server.h"
#include "gateway/metrics.h"
#include "gateway/model_registry.h"
#include "gateway/openai/served_model.h"
#include "gateway/router_client.h"

namespace {

constexpr char kUsage[] =
    "usage: tern-gateway [--config tern.yaml] [--model DIR] [--listen HOST:PORT] [--router "
    "HOST:PORT]\n"
    "                    [--grpc-listen HOST:PORT] [--served-model-name NAME] [--io-threads N]\n"
    "                    [--log-level info] [--drain-timeout-s 30]\n"
    "                    [--api-key-file keys.yaml]\n"
    "                    [--mtls-ca-file F --mtls-cert-file F --mtls-key-file F]\n"
    "                    [--check-config]\n";

// File descriptors beyond one per HTTP connection: gRPC channels, the
// listeners, files.
constexpr rlim_t kReservedFds = 256;

// Raises the soft RLIMIT_NOFILE to the hard one: every connection is an fd
// and distributions default the soft limit to 1024.
void RaiseFileLimit(int max_connections) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    const rlim_t before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) getrlimit(RLIMIT_NOFILE, &limit);
    TERN_LOG(Info) << "open file limit raised from " << before << " to " << limit.rlim_cur;
  }
  if (max_connections > 0 && static_cast<rlim_t>(max_connections) + kReservedFds > limit.rlim_cur) {
    TERN_LOG(Warning) << "open file limit " << limit.rlim_cur
                      << " is below gateway.max_connections (" << max_connections << ") + "
                      << kReservedFds
                      << ": accepts may fail with EMFILE before the cap refuses them";
  }
}

int Fail(const std::string& message) {
  std::cerr << "tern-gateway: " << message << "\n";
  return 2;
}

int Run(int argc, char** argv) {
  using namespace tern::gateway;
  auto flags =
      tern::Flags::Parse(argc, argv, 1,
                         {"config", "model", "listen", "grpc-listen", "router", "served-model-name",
                          "io-threads", "log-level", "api-key-file", "mtls-ca-file",
                          "mtls-cert-file", "mtls-key-file", "drain-timeout-s"},
                         {"help", "check-config"});
  if (!flags.ok() || flags->Has("help")) {
    if (!flags.ok()) std::cerr << "tern-gateway: " << flags.status().message() << "\n";
    std::cerr << kUsage;
    return flags.ok() ? 0 : 2;
  }
  tern::InitLogging("gateway", tern::ParseLogLevel(flags->GetOr("log-level", "info")));
  auto drain_flag = flags->GetInt("drain-timeout-s");
  if (!drain_flag.ok()) return Fail(std::string(drain_flag.status().message()));
  const int64_t drain_s = *drain_flag ? **drain_flag : 30;

  tern::ClusterConfig config;
  tern::GatewaySection& section = config.gateway;
  const absl::Status configured =
      tern::LoadConfigWithFlags(*flags, &config,
                                {{"model", &config.model.path},
                                 {"served-model-name", &config.model.served_name},
                                 {"listen", &section.listen},
                                 {"grpc-listen", &section.grpc_listen},
                                 {"router", &section.router},
                                 {"io-threads", &section.io_threads},
                                 {"api-key-file", &section.api_key_file},
                                 {"mtls-ca-file", &config.tls.ca_file},
                                 {"mtls-cert-file", &config.tls.cert_file},
                                 {"mtls-key-file", &config.tls.key_file}});
  if (!configured.ok()) return Fail(std::string(configured.message()));
  if (config.model.path.empty()) return Fail("no model directory (--model DIR or model.path)");
  auto listen = ParseHostPort(section.listen);
  if (!listen.ok()) return Fail(std::string(listen.status().message()));
  // Empty: no gRPC API.
  absl::StatusOr<HostPort> grpc_listen = HostPort{};
  if (!section.grpc_listen.empty()) grpc_listen = ParseHostPort(section.grpc_listen);
  if (!grpc_listen.ok()) return Fail(std::string(grpc_listen.status().message()));
  // API keys: the key file's salted hashes, plus any clear ones in the
  // config (hashed here). Never logged.
  auto keys = std::make_shared<ApiKeyStore>();
  if (!section.api_key_file.empty()) {
    auto loaded = ApiKeyStore::Load(section.api_key_file);
    if (!loaded.ok()) return Fail(std::string(loaded.status().message()));
    *keys = *std::move(loaded);
  }
  const ApiKeyStore clear_keys = ApiKeyStore::FromPlainKeys(section.api_keys);
  for (const ApiKeyEntry& entry : clear_keys.entries()) {
    if (absl::Status added = keys->Add(entry); !added.ok()) {
      return Fail(std::string(added.message()));
    }
  }
  if (const absl::Status tls = tern::CheckTlsFiles(config.tls); !tls.ok()) {
    return Fail(std::string(tls.message()));
  }
  if (flags->Has("check-config")) {
    std::cout << "tern-gateway: config ok\n";
    return 0;
  }

  auto model = LoadServedModel(config.model.path, config.model.served_name);
  if (!model.ok()) return Fail(std::string(model.status().message()));
  const std::string model_name = (*model)->name;

  // Before any thread starts (gRPC's included), so only sigwait sees them.
  tern::BlockTerminationSignals();
  tern::BlockReloadSignal();
  GatewayMetrics metrics;
  std::unique_ptr<RouterClient> router =
      RouterClient::Connect(section.router, tern::ChannelSecurity(config.tls));
  ModelRegistry registry(std::move(model).value());
  registry.Start(router.get(), absl::Seconds(1));

  ApiServiceOptions api_options;
  api_options.api_keys = keys;
  if (!keys->empty()) TERN_LOG(Info) << keys->entries().size() << " API key(s); /v1 needs one";
  api_options.request_timeout = absl::Seconds(section.request_timeout_s);
  // One budget per key across REST and the gRPC API.
  api_options.key_limiter = std::make_shared<KeyLimiter>();
  ApiService api(api_options, &registry, router.get(), &metrics);

  HttpServerOptions server_options;
  server_options.host = listen->host;
  server_options.port = listen->port;
  server_options.io_threads = section.io_threads;
  server_options.max_body_bytes = section.max_body_bytes;
  server_options.max_connections = section.max_connections;
  server_options.max_connections_per_client = section.max_connections_per_client;
  server_options.header_timeout = absl::Seconds(section.header_timeout_s);
  server_options.body_idle_timeout = absl::Seconds(section.body_idle_timeout_s);
  server_options.tls_cert_file = section.tls_cert_file;
  server_options.tls_key_file = section.tls_key_file;
  server_options.events.opened = [&metrics] { metrics.ConnectionOpened(); };
  server_options.events.closed = [&metrics] { metrics.ConnectionClosed(); };
  server_options.events.rejected = [&metrics](std::string_view reason) {
    metrics.ConnectionRejected(reason);
  };
  RaiseFileLimit(section.max_connections);
  auto server = HttpServer::Start(server_options,
                                  [&api](HttpRequest request, std::shared_ptr<HttpExchange> ex) {
                                    api.Handle(std::move(request), std::move(ex));
                                  });
  if (!server.ok()) {
    registry.Stop();
    std::cerr << "tern-gateway: " << server.status().message() << "\n";
    return 1;
  }
  TERN_LOG(Info) << "gateway listening on " << ((*server)->tls() ? "https://" : "http://")
                 << FormatHostPort({listen->host, (*server)->port()}) << " model=" << model_name
                 << " router=" << section.router;
  std::unique_ptr<InferenceServer> grpc_server;
  if (!section.grpc_listen.empty()) {
    InferenceServerOptions grpc_options;
    grpc_options.listen = section.grpc_listen;
    // Public like the HTTP listener, so with its certificate when it has one
    // (clients authenticate with API keys, not certificates).
    tern::TlsSection public_tls;
    public_tls.cert_file = section.tls_cert_file;
    public_tls.key_file = section.tls_key_file;
    grpc_options.credentials =
        tern::MakeServerCredentials(public_tls, tern::ClientCertificates::kNotRequested);
    grpc_options.service.api_keys = keys;
    grpc_options.service.key_limiter = api_options.key_limiter.get();
    grpc_options.service.request_timeout = api_options.request_timeout;
    auto started = InferenceServer::Start(grpc_options, &registry, router.get(), &metrics);
    if (!started.ok()) {
      (*server)->Stop();
      registry.Stop();
      std::cerr << "tern-gateway: " << started.status().message() << "\n";
      return 1;
    }
    grpc_server = std::move(started).value();
    TERN_LOG(Info) << "gateway gRPC API (tern.v1.Inference) listening on "
                   << FormatHostPort(
                          {grpc_listen->host, static_cast<uint16_t>(grpc_server->port())});
  }

  int signal_number = tern::WaitForTerminationOrReloadSignal();
  for (; signal_number == SIGHUP; signal_number = tern::WaitForTerminationOrReloadSignal()) {
    if ((*server)->tls()) {
      TERN_LOG(Info) << "SIGHUP: reloading the HTTPS certificate";
      (*server)->ReloadTls().IgnoreError();  // logged; the previous one stays
    }
  }
  TERN_LOG(Info) << "signal " << signal_number << ": draining";
  (*server)->StopAccepting();
  // Drain: new connections are refused (the listener is closed) while the
  // requests in progress, event streams included, run to their end, up to
  // the drain timeout; what is left then is cancelled.
  const absl::Duration drain_timeout = absl::Seconds(drain_s);
  if (grpc_server != nullptr) grpc_server->Shutdown(drain_timeout);
  if (!router->WaitUntilIdle(drain_timeout)) {
    TERN_LOG(Warning) << "drain timeout: cancelling the requests still in progress";
  }
  // The last events of the streams that just ended are still being written.
  const absl::Time flush_until = absl::Now() + absl::Seconds(2);
  while ((*server)->open_connections() > 0 && absl::Now() < flush_until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  router->CancelAll();
  if (!router->WaitUntilIdle(absl::Seconds(10)))
    TERN_LOG(Warning) << "router calls still in flight at exit";
  registry.Stop();
  (*server)->Stop();
  server->reset();
  grpc_server.reset();
  router.reset();
  TERN_LOG(Info) << "gateway stopped";
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
