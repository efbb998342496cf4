// tern-gateway: flags -> config -> served model + router client + HTTP server
// -> serve until SIGINT/SIGTERM.
#include <iostream>
#include <memory>

#include "common/config.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/signals.h"
#include "gateway/api_service.h"
#include "gateway/http/host_port.h"
#include "gateway/http/http_server.h"
#include "gateway/metrics.h"
#include "gateway/model_registry.h"
#include "gateway/openai/served_model.h"
#include "gateway/router_client.h"

namespace {

constexpr char kUsage[] =
    "usage: tern-gateway [--config tern.yaml] [--model DIR] [--listen HOST:PORT] [--router "
    "HOST:PORT]\n"
    "                    [--served-model-name NAME] [--io-threads N] [--log-level info]\n"
    "                    [--api-key-file keys.yaml]\n"
    "                    [--check-config]\n";

int Fail(const std::string& message) {
  std::cerr << "tern-gateway: " << message << "\n";
  return 2;
}

int Run(int argc, char** argv) {
  using namespace tern::gateway;
  auto flags = tern::Flags::Parse(argc, argv, 1,
                                  {"config", "model", "listen", "router", "served-model-name",
                                   "io-threads", "log-level", "api-key-file"},
                                  {"help", "check-config"});
  if (!flags.ok() || flags->Has("help")) {
    if (!flags.ok()) std::cerr << "tern-gateway: " << flags.status().message() << "\n";
    std::cerr << kUsage;
    return flags.ok() ? 0 : 2;
  }
  tern::InitLogging("gateway", tern::ParseLogLevel(flags->GetOr("log-level", "info")));

  tern::ClusterConfig config;
  tern::GatewaySection& section = config.gateway;
  const absl::Status configured =
      tern::LoadConfigWithFlags(*flags, &config,
                                {{"model", &config.model.path},
                                 {"served-model-name", &config.model.served_name},
                                 {"listen", &section.listen},
                                 {"router", &section.router},
                                 {"io-threads", &section.io_threads},
                                 {"api-key-file", &section.api_key_file}});
  if (!configured.ok()) return Fail(std::string(configured.message()));
  if (config.model.path.empty()) return Fail("no model directory (--model DIR or model.path)");
  auto listen = ParseHostPort(section.listen);
  if (!listen.ok()) return Fail(std::string(listen.status().message()));
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
  if (flags->Has("check-config")) {
    std::cout << "tern-gateway: config ok\n";
    return 0;
  }

  auto model = LoadServedModel(config.model.path, config.model.served_name);
  if (!model.ok()) return Fail(std::string(model.status().message()));
  const std::string model_name = (*model)->name;

  // Before any thread starts (gRPC's included), so only sigwait sees them.
  tern::BlockTerminationSignals();
  GatewayMetrics metrics;
  std::unique_ptr<RouterClient> router = RouterClient::Connect(section.router);
  ModelRegistry registry(std::move(model).value());
  registry.Start(router.get(), absl::Seconds(1));

  ApiServiceOptions api_options;
  api_options.api_keys = keys;
  if (!keys->empty()) TERN_LOG(Info) << keys->entries().size() << " API key(s); /v1 needs one";
  api_options.request_timeout = absl::Seconds(section.request_timeout_s);
  ApiService api(api_options, &registry, router.get(), &metrics);

  HttpServerOptions server_options;
  server_options.host = listen->host;
  server_options.port = listen->port;
  server_options.io_threads = section.io_threads;
  server_options.max_body_bytes = section.max_body_bytes;
  auto server = HttpServer::Start(server_options,
                                  [&api](HttpRequest request, std::shared_ptr<HttpExchange> ex) {
                                    api.Handle(std::move(request), std::move(ex));
                                  });
  if (!server.ok()) {
    registry.Stop();
    std::cerr << "tern-gateway: " << server.status().message() << "\n";
    return 1;
  }
  TERN_LOG(Info) << "gateway listening on http://"
                 << FormatHostPort({listen->host, (*server)->port()}) << " model=" << model_name
                 << " router=" << section.router;

  const int signal_number = tern::WaitForTerminationSignal();
  TERN_LOG(Info) << "signal " << signal_number << ": shutting down";
  (*server)->StopAccepting();
  router->CancelAll();
  if (!router->WaitUntilIdle(absl::Seconds(10)))
    TERN_LOG(Warning) << "router calls still in flight at exit";
  registry.Stop();
  (*server)->Stop();
  server->reset();
  router.reset();
  TERN_LOG(Info) << "gateway stopped";
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
