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

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/metrics_server.h"
#include "common/signals.h"
#include "tern/v1/router.grpc.pb.h"
#include "worker/engine.h"
#include "worker/model.h"
#include "worker/worker_metrics.h"
#include "worker/worker_service.h"

namespace {

constexpr char kUsage[] =
    "usage: tern-worker --model DIR [--config tern.yaml] [--listen HOST:PORT]\n"
    "                   [--served-model-name NAME] [--max-num-seqs N] [--max-model-len N]\n"
    "                   [--tp N] [--cpus 0,1,2] [--kv-cache-gib G] [--block-size N]\n"
    "                   [--max-num-batched-tokens N] [--no-prefix-caching]\n"
    "                   [--metrics-listen HOST:PORT] [--log-level info]\n"
    "                   [--register-with ROUTER_HOST:PORT [--advertise HOST:PORT]]\n";

int Fail(const std::string& message) {
  std::cerr << "tern-worker: " << message << "\n";
  return 2;
}

// "0,1,2" -> {0, 1, 2}; empty text gives an empty list.
absl::StatusOr<std::vector<int32_t>> ParseCpuList(const std::string& text) {
  std::vector<int32_t> cpus;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int32_t cpu = 0;
    if (!absl::SimpleAtoi(part, &cpu) || cpu < 0) {
      return absl::InvalidArgumentError("--cpus takes a comma-separated list of CPU numbers, got " +
                                        text);
    }
    cpus.push_back(cpu);
  }
  return cpus;
}

// Keeps this worker a member of a router's fleet (Router.RegisterWorker):
// registers at once, then every lease/3, and every second while the router
// cannot be reached. Once stopped it renews no more and the router drops the
// worker when its lease ends.
class RouterRegistration {
 public:
  RouterRegistration(std::string router, std::string advertise)
      : router_(std::move(router)), advertise_(std::move(advertise)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~RouterRegistration() { Stop(); }

  // Idempotent; one thread only.
  void Stop() {
    if (!stop_.HasBeenNotified()) stop_.Notify();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    auto stub =
        tern::v1::Router::NewStub(grpc::CreateChannel(router_, grpc::InsecureChannelCredentials()));
    tern::v1::RegisterWorkerRequest request;
    request.set_address(advertise_);
    bool registered = false;
    absl::Duration wait = absl::ZeroDuration();
    while (!stop_.WaitForNotificationWithTimeout(wait)) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      tern::v1::RegisterWorkerResponse response;
      const grpc::Status status = stub->RegisterWorker(&ctx, request, &response);
      if (status.ok()) {
        if (!registered) {
          TERN_LOG(Info) << "registered with router " << router_ << " as " << advertise_
                         << " (lease " << response.lease_ms() << " ms)";
        }
        registered = true;
        wait = std::max(absl::Milliseconds(100), absl::Milliseconds(response.lease_ms()) / 3);
      } else {
        if (registered || wait == absl::ZeroDuration()) {
          TERN_LOG(Warning) << "cannot register with router " << router_ << ": "
                            << status.error_message() << " (retrying every second)";
        }
        registered = false;
        wait = absl::Seconds(1);
      }
    }
  }

  const std::string router_;
  const std::string advertise_;
  absl::Notification stop_;
  std::thread thread_;
};

int Run(int argc, char** argv) {
  auto flags = tern::Flags::Parse(
      argc, argv, 1,
      {"config", "model", "listen", "served-model-name", "max-num-seqs", "max-model-len",
       "log-level", "drain-timeout-s", "metrics-listen", "tp", "cpus", "kv-cache-gib",
       "max-num-batched-tokens", "block-size", "register-with", "advertise"},
      {"help", "no-prefix-caching"});
  if (!flags.ok()) return Fail(std::string(flags.status().message()) + "\n" + kUsage);
  if (flags->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  tern::InitLogging("worker", tern::ParseLogLevel(flags->GetOr("log-level", "info")));

  tern::ClusterConfig config;
  if (auto path = flags->Get("config")) {
    auto loaded = tern::LoadClusterConfig(*path);
    if (!loaded.ok()) return Fail(std::string(loaded.status().message()));
    config = *loaded;
  }
  if (auto v = flags->Get("model")) config.model.path = *v;
  if (auto v = flags->Get("served-model-name")) config.model.served_name = *v;
  if (auto v = flags->Get("listen")) config.worker.listen = *v;
  if (auto v = flags->Get("metrics-listen")) config.worker.metrics_listen = *v;
  for (const auto& [name, target] :
       {std::pair<const char*, int32_t*>{"max-num-seqs", &config.worker.max_num_seqs},
        {"max-model-len", &config.model.max_model_len},
        {"tp", &config.worker.tp},
        {"max-num-batched-tokens", &config.worker.max_num_batched_tokens},
        {"block-size", &config.worker.kv_block_size}}) {
    auto value = flags->GetInt(name);
    if (!value.ok()) return Fail(std::string(value.status().message()));
    if (*value) *target = static_cast<int32_t>(**value);
  }
  if (auto v = flags->Get("cpus")) {
    auto cpus = ParseCpuList(*v);
    if (!cpus.ok()) return Fail(std::string(cpus.status().message()));
    config.worker.cpus = *cpus;
  }
  if (auto v = flags->Get("kv-cache-gib")) {
    double gib = 0;
    if (!absl::SimpleAtod(*v, &gib) || !(gib > 0)) {
      return Fail("--kv-cache-gib takes a positive number, got " + *v);
    }
    config.worker.kv_cache_gib = gib;
  }
  if (flags->Has("no-prefix-caching")) config.worker.enable_prefix_caching = false;
  if (config.model.path.empty()) return Fail(std::string("--model DIR is required\n") + kUsage);
  if (config.model.served_name.empty()) {
    config.model.served_name = tern::DefaultServedModelName(config.model.path);
  }
  if (config.model.served_name.empty()) {
    return Fail("cannot derive a model name from " + config.model.path +
                "; pass --served-model-name");
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
                 << (engine_options.enable_prefix_caching ? "on" : "off");
  tern::worker::WorkerService service(
      &engine, model->get(),
      tern::worker::WorkerIdentity{config.model.served_name, config.worker.kv_block_size, "0.1.0"});

  std::unique_ptr<tern::MetricsServer> metrics;
  if (!config.worker.metrics_listen.empty()) {
    auto started = tern::MetricsServer::Start(config.worker.metrics_listen, [&engine] {
      return tern::worker::CollectWorkerMetrics(engine);
    });
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
  std::unique_ptr<RouterRegistration> registration;
  if (auto router = flags->Get("register-with")) {
    const std::string advertise = flags->GetOr("advertise", absl::StrCat(host, ":", port));
    if (host.empty() || host == "0.0.0.0" || host == "[::]") {
      if (!flags->Get("advertise")) {
        return Fail("--register-with needs --advertise HOST:PORT when listening on " +
                    config.worker.listen);
      }
    }
    registration = std::make_unique<RouterRegistration>(*router, advertise);
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
