// tern-worker: flags -> config -> load the model -> engine + Worker service ->
// serve until SIGINT/SIGTERM (then drain: finish what it has, take nothing new).
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/metrics_server.h"
#include "common/signals.h"
#include "worker/engine/engine.h"
#include "worker/model/model.h"
#include "worker/router_registration.h"
#include "worker/worker_metrics.h"
#include "worker/worker_service.h"

namespace {

constexpr char kUsage[] =
    "usage: tern-worker --model DIR [--config tern.yaml] [--listen HOST:PORT]\n"
    "                   [--served-model-name NAME] [--max-num-seqs N] [--max-model-len N]\n"
    "                   [--tp N] [--cpus 0,1,2] [--kv-cache-gib G] [--block-size N]\n"
    "                   [--max-num-batched-tokens N] [--no-prefix-caching]\n"
    "                   [--metrics-listen HOST:PORT] [--log-level info]\n"
    "                   [--register-with ROUTER_HOST:PORT [--advertise HOST:PORT]]\n"
    "                   [--check-config]\n";

int Fail(const std::string& message) {
  std::cerr << "tern-worker: " << message << "\n";
  return 2;
}

int Run(int argc, char** argv) {
  auto flags = tern::Flags::Parse(
      argc, argv, 1,
      {"config", "model", "listen", "served-model-name", "max-num-seqs", "max-model-len",
       "log-level", "drain-timeout-s", "metrics-listen", "tp", "cpus", "kv-cache-gib",
       "max-num-batched-tokens", "block-size", "register-with", "advertise"},
      {"help", "no-prefix-caching", "check-config"});
  if (!flags.ok()) return Fail(std::string(flags.status().message()) + "\n" + kUsage);
  if (flags->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  tern::InitLogging("worker", tern::ParseLogLevel(flags->GetOr("log-level", "info")));

  tern::ClusterConfig config;
  tern::WorkerSection& section = config.worker;
  const absl::Status configured =
      tern::LoadConfigWithFlags(*flags, &config,
                                {{"model", &config.model.path},
                                 {"served-model-name", &config.model.served_name},
                                 {"max-model-len", &config.model.max_model_len},
                                 {"listen", &section.listen},
                                 {"metrics-listen", &section.metrics_listen},
                                 {"max-num-seqs", &section.max_num_seqs},
                                 {"tp", &section.tp},
                                 {"max-num-batched-tokens", &section.max_num_batched_tokens},
                                 {"block-size", &section.kv_block_size},
                                 {"cpus", &section.cpus},
                                 {"kv-cache-gib", &section.kv_cache_gib},
                                 {"no-prefix-caching", &section.enable_prefix_caching, false}});
  if (!configured.ok()) return Fail(std::string(configured.message()));
  if (config.model.path.empty()) return Fail(std::string("--model DIR is required\n") + kUsage);
  if (config.model.served_name.empty()) {
    config.model.served_name = tern::DefaultServedModelName(config.model.path);
  }
  if (config.model.served_name.empty()) {
    return Fail("cannot derive a model name from " + config.model.path +
                "; pass --served-model-name");
  }
  if (flags->Has("check-config")) {
    std::cout << "tern-worker: config ok\n";
    return 0;
  }

  tern::BlockTerminationSignals();
  TERN_LOG(Info) << "loading model from " << config.model.path;
  const auto load_start = std::chrono::steady_clock::now();
  auto model = tern::worker::Model::Load(config.model.path);
  if (!model.ok()) return Fail("cannot load the model: " + std::string(model.status().message()));
  const auto& mc = (*model)->config();
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  TERN_LOG(Info) << "model loaded in " << load_s << " s: " << mc.num_hidden_layers
                 << " layers, hidden " << mc.hidden_size << ", vocab " << mc.vocab_size;

  tern::worker::EngineOptions engine_options;
  engine_options.max_num_seqs = config.worker.max_num_seqs;
  engine_options.max_queue = config.worker.max_queue;
  engine_options.max_num_batched_tokens = config.worker.max_num_batched_tokens;
  engine_options.enable_prefix_caching = config.worker.enable_prefix_caching;
  engine_options.executor.tp = config.worker.tp;
  engine_options.executor.cpus = config.worker.cpus;
  engine_options.executor.block_size = config.worker.kv_block_size;
  engine_options.executor.kv_cache_bytes =
      static_cast<int64_t>(std::llround(config.worker.kv_cache_gib * (1 << 30)));
  const int64_t model_max = mc.max_position_embeddings;
  engine_options.max_model_len = static_cast<int32_t>(
      config.model.max_model_len > 0 ? std::min<int64_t>(config.model.max_model_len, model_max)
                                     : std::min<int64_t>(model_max, 8192));
  // Before the engine, which reports to it from its first step.
  tern::worker::WorkerMetrics worker_metrics(config.model.served_name);
  engine_options.observer = &worker_metrics;
  auto created = tern::worker::Engine::Create(model->get(), engine_options);
  if (!created.ok()) {
    std::cerr << "tern-worker: cannot start the engine: " << created.status().message() << "\n";
    return 1;
  }
  std::unique_ptr<tern::worker::Engine> engine_owner = *std::move(created);
  tern::worker::Engine& engine = *engine_owner;
  TERN_LOG(Info) << "engine: tp " << engine.tp() << ", " << engine.num_kv_blocks()
                 << " KV blocks of " << engine.kv_block_size() << " tokens ("
                 << config.worker.kv_cache_gib << " GiB pool), max_num_batched_tokens "
                 << engine_options.max_num_batched_tokens << ", prefix caching "
                 << (engine_options.enable_prefix_caching ? "on" : "off")
                 << "; a one-token step takes ~" << engine.Load().expected_step_ms << " ms";
  tern::worker::WorkerService service(
      &engine, model->get(),
      tern::worker::WorkerIdentity{config.model.served_name, config.worker.kv_block_size, "0.1.0"});

  std::unique_ptr<tern::MetricsServer> metrics;
  if (!config.worker.metrics_listen.empty()) {
    auto started = tern::MetricsServer::Start(
        config.worker.metrics_listen,
        [&worker_metrics, &engine] { return worker_metrics.Collect(engine); });
    if (!started.ok()) return Fail(std::string(started.status().message()));
    metrics = *std::move(started);
    TERN_LOG(Info) << "metrics on http://"
                   << config.worker.metrics_listen.substr(0,
                                                          config.worker.metrics_listen.rfind(':'))
                   << ":" << metrics->port() << "/metrics";
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config.worker.listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::cerr << "tern-worker: cannot listen on " << config.worker.listen << "\n";
    return 1;
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  const std::string host = config.worker.listen.substr(0, config.worker.listen.rfind(':'));
  TERN_LOG(Info) << "worker serving " << config.model.served_name << " on " << host << ":" << port
                 << " (max_model_len " << engine_options.max_model_len << ", max_num_seqs "
                 << engine_options.max_num_seqs << ")";
  std::unique_ptr<tern::worker::RouterRegistration> registration;
  if (auto router = flags->Get("register-with")) {
    const std::string advertise = flags->GetOr("advertise", absl::StrCat(host, ":", port));
    if (host.empty() || host == "0.0.0.0" || host == "[::]") {
      if (!flags->Get("advertise")) {
        return Fail("--register-with needs --advertise HOST:PORT when listening on " +
                    config.worker.listen);
      }
    }
    registration = std::make_unique<tern::worker::RouterRegistration>(*router, advertise);
  }

  const int signal_number = tern::WaitForTerminationSignal();
  TERN_LOG(Info) << "signal " << signal_number << ": draining";
  server->GetHealthCheckService()->SetServingStatus(false);
  engine.Drain();
  auto drain_timeout = flags->GetInt("drain-timeout-s");
  const int64_t drain_s = drain_timeout.ok() && *drain_timeout ? **drain_timeout : 30;
  // The state streams stay open while the engine finishes its sequences, so
  // routers see a draining worker (health NOT_SERVING) rather than a lost one
  // and let its requests end here.
  const absl::Time drain_until = absl::Now() + absl::Seconds(drain_s);
  while (absl::Now() < drain_until) {
    const tern::worker::EngineLoad load = engine.Load();
    if (load.running + load.waiting == 0) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  // Renew no more: the router drops this worker when the lease ends.
  if (registration != nullptr) registration->Stop();
  service.StopWatchers();
  // What is left are the final writes of finished calls (or, past the drain
  // timeout, calls that are cancelled now).
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
