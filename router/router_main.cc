// tern-router: flags -> config -> fleet + Router service -> serve until SIGINT/SIGTERM.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <cstdio>
#include <iostream>

#include "common/config.h"
#include "common/flags.h"
#include "common/grpc_tls.h"
#include "common/log.h"
#include "common/metrics_server.h"
#include "common/signals.h"
#include "router/core/dispatcher.h"
#include "router/core/policy.h"
#include "router/fleet.h"
#include "router/router_metrics.h"
#include "router/router_service.h"

namespace {

constexpr char kUsage[] =
    "usage: tern-router [--config tern.yaml] [--listen HOST:PORT]\n"
    "                   [--workers HOST:PORT,dns:NAME:PORT,...]\n"
    "                   [--policy prefix|least-loaded|round-robin|random]\n"
    "                   [--health-interval-ms N] [--stall-timeout-ms N] [--max-queue N]\n"
    "                   [--max-queue-wait-ms N] [--slack N] [--overload-ttft-factor X]\n"
    "                   [--metrics-listen HOST:PORT] [--log-level info] [--check-config]\n"
    "                   [--mtls-ca-file F --mtls-cert-file F --mtls-key-file F]\n";

int Run(int argc, char** argv) {
  auto flags = tern::Flags::Parse(
      argc, argv, 1,
      {"config", "listen", "workers", "policy", "health-interval-ms", "stall-timeout-ms",
       "max-queue", "max-queue-wait-ms", "slack", "overload-ttft-factor", "log-level",
       "metrics-listen", "mtls-ca-file", "mtls-cert-file", "mtls-key-file"},
      {"help", "check-config"});
  if (!flags.ok() || flags->Has("help")) {
    if (!flags.ok()) std::cerr << "tern-router: " << flags.status().message() << "\n";
    std::cerr << kUsage;
    return flags.ok() ? 0 : 2;
  }
  tern::InitLogging("router", tern::ParseLogLevel(flags->GetOr("log-level", "info")));

  tern::ClusterConfig config;
  tern::RouterSection& section = config.router;
  if (const absl::Status configured =
          tern::LoadConfigWithFlags(*flags, &config,
                                    {{"listen", &section.listen},
                                     {"workers", &section.workers},
                                     {"policy", &section.policy},
                                     {"metrics-listen", &section.metrics_listen},
                                     {"health-interval-ms", &section.health_interval_ms},
                                     {"stall-timeout-ms", &section.stall_timeout_ms},
                                     {"max-queue", &section.max_queue},
                                     {"max-queue-wait-ms", &section.max_queue_wait_ms},
                                     {"slack", &section.slack},
                                     {"overload-ttft-factor", &section.overload_ttft_factor},
                                     {"mtls-ca-file", &config.tls.ca_file},
                                     {"mtls-cert-file", &config.tls.cert_file},
                                     {"mtls-key-file", &config.tls.key_file}});
      !configured.ok()) {
    std::cerr << "tern-router: " << configured.message() << "\n";
    return 2;
  }
  absl::StatusOr<tern::router::PolicyKind> policy = tern::router::ParsePolicyKind(section.policy);
  if (!policy.ok()) {
    std::cerr << "tern-router: " << policy.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<absl::flat_hash_map<std::string, tern::router::PolicyKind>> model_policies =
      tern::router::ParseModelPolicies(section.model_policies);
  if (!model_policies.ok()) {
    std::cerr << "tern-router: " << model_policies.status().message() << "\n";
    return 2;
  }
  if (const absl::Status tls = tern::CheckTlsFiles(config.tls); !tls.ok()) {
    std::cerr << "tern-router: " << tls.message() << "\n";
    return 2;
  }
  if (flags->Has("check-config")) {
    std::cout << "tern-router: config ok\n";
    return 0;
  }
  if (section.workers.empty()) {
    TERN_LOG(Info) << "no workers configured: serving those that register (RegisterWorker)";
  }

  tern::BlockTerminationSignals();
  tern::router::FleetOptions fleet_options;
  fleet_options.worker_addresses = section.workers;
  fleet_options.dns_refresh = absl::Milliseconds(section.dns_refresh_ms);
  fleet_options.registration_lease = absl::Milliseconds(section.registration_lease_ms);
  fleet_options.health_interval = std::chrono::milliseconds(section.health_interval_ms);
  fleet_options.health_timeout = std::chrono::milliseconds(section.health_timeout_ms);
  fleet_options.stall_timeout = absl::Milliseconds(section.stall_timeout_ms);
  fleet_options.breaker.failure_threshold = section.circuit_failures;
  fleet_options.breaker.cool_down = absl::Milliseconds(section.circuit_cooldown_ms);
  fleet_options.security = tern::ChannelSecurity(config.tls);
  tern::router::Fleet fleet(fleet_options);
  tern::router::DispatcherOptions dispatcher_options;
  dispatcher_options.policy.kind = *policy;
  dispatcher_options.model_policies = *std::move(model_policies);
  dispatcher_options.session_affinity = section.session_affinity;
  dispatcher_options.slack = section.slack;
  dispatcher_options.queue.max_length = section.max_queue;
  dispatcher_options.queue.max_wait = absl::Milliseconds(section.max_queue_wait_ms);
  dispatcher_options.queue.max_priority_wait = absl::Milliseconds(section.max_priority_wait_ms);
  dispatcher_options.overload_ttft_factor = section.overload_ttft_factor;
  tern::router::RouterMetrics router_metrics;
  dispatcher_options.observer = &router_metrics;
  tern::router::Dispatcher dispatcher(&fleet.state(), dispatcher_options);
  fleet.SetListener([&dispatcher] { dispatcher.Pump(); });
  fleet.Start();
  tern::router::RelayOptions relay_options;
  relay_options.max_retries = section.max_retries;
  tern::router::RouterService service(&fleet, &dispatcher, relay_options);

  std::unique_ptr<tern::MetricsServer> metrics;
  if (!section.metrics_listen.empty()) {
    auto started = tern::MetricsServer::Start(
        section.metrics_listen,
        [&router_metrics, &fleet, &service] { return router_metrics.Collect(fleet, service); });
    if (!started.ok()) {
      std::cerr << "tern-router: " << started.status().message() << "\n";
      return 2;
    }
    metrics = *std::move(started);
    TERN_LOG(Info) << "metrics on port " << metrics->port() << " (/metrics)";
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(
      section.listen,
      tern::MakeServerCredentials(config.tls, tern::ClientCertificates::kRequireAndVerify), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::cerr << "tern-router: cannot listen on " << section.listen << "\n";
    return 1;
  }
  const std::string host = section.listen.substr(0, section.listen.rfind(':'));
  TERN_LOG(Info) << "router listening on " << host << ":" << port << " with "
                 << section.workers.size() << " worker(s), policy " << section.policy
                 << (config.tls.enabled() ? ", mutual TLS" : "");

  const int signal_number = tern::WaitForTerminationSignal();
  TERN_LOG(Info) << "signal " << signal_number << ": shutting down";
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  fleet.Stop();  // before the dispatcher its listener calls goes away
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
