// tern-worker: flags -> config -> load the model -> engine + Worker service ->
// serve until SIGINT/SIGTERM (then drain: finish what it has, take nothing new).
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <optional>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/neuron/neuron_launcher.h"
#include "cli/neuron/neuron_plan.h"
#include "common/config.h"
#include "common/flags.h"
#include "common/grpc_tls.h"
#include "common/log.h"
#include "common/metrics_server.h"
#include "common/signals.h"
#include "structured/constraint.h"
#include "worker/engine/engine.h"
#include "worker/model/model.h"
#include "worker/model/model_config.h"
#include "worker/router_registration.h"
#include "worker/vllm/vllm_engine.h"
#include "worker/vllm/vllm_server_spec.h"
#include "worker/worker_metrics.h"
#include "worker/worker_service.h"

namespace {

constexpr char kUsage[] =
    "usage: tern-worker --model DIR [--config tern.yaml] [--listen HOST:PORT]\n"
    "                   [--engine native|vllm] [--vllm "
    "URL[,events=EP][,replay=EP][,model=NAME]]...\n"
    "                   [--served-model-name NAME] [--max-num-seqs N] [--max-model-len N]\n"
    "                   [--tp N] [--cpus 0,1,2] [--kv-cache-gib G] [--block-size N]\n"
    "                   [--max-num-batched-tokens N] [--no-prefix-caching]\n"
    "                   [--lm-head auto|as-stored|int8]\n"
    "                   [--metrics-listen HOST:PORT] [--log-level info]\n"
    "                   [--register-with ROUTER_HOST:PORT [--advertise HOST:PORT]]\n"
    "                   [--mtls-ca-file F --mtls-cert-file F --mtls-key-file F]\n"
    "                   [--check-config]\n";

constexpr char kVersion[] = "0.1.0";

int Fail(const std::string& message) {
  std::cerr << "tern-worker: " << message << "\n";
  return 2;
}

// Compiles output constraints against the model directory's tokenizer.json;
// null (constrained requests refused) when there is none or it is unreadable.
std::shared_ptr<tern::structured::ConstraintCache> LoadConstraintCache(const std::string& model_dir,
                                                                       int32_t vocab_size) {
  const std::filesystem::path path = std::filesystem::path(model_dir) / "tokenizer.json";
  if (!std::filesystem::exists(path)) {
    TERN_LOG(Warning) << "no " << path.string() << ": structured outputs are off";
    return nullptr;
  }
  const auto start = std::chrono::steady_clock::now();
  auto vocabulary = tern::structured::TokenVocabulary::FromTokenizerJson(path.string(), vocab_size);
  if (!vocabulary.ok()) {
    TERN_LOG(Warning) << "structured outputs are off: " << vocabulary.status().message();
    return nullptr;
  }
  TERN_LOG(Info) << "token vocabulary for structured outputs read in "
                 << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
                 << " s";
  return std::make_shared<tern::structured::ConstraintCache>(*std::move(vocabulary));
}

// The address a worker serving on `listen` (port `port`) tells a router.
absl::StatusOr<std::string> AdvertiseAddress(const tern::Flags& flags, const std::string& listen,
                                             int port, int offset) {
  const std::string host = listen.substr(0, listen.rfind(':'));
  if (auto advertise = flags.Get("advertise")) {
    const size_t colon = advertise->rfind(':');
    int advertised_port = 0;
    if (colon == std::string::npos ||
        !absl::SimpleAtoi(advertise->substr(colon + 1), &advertised_port)) {
      return absl::InvalidArgumentError("--advertise must be HOST:PORT");
    }
    return absl::StrCat(advertise->substr(0, colon), ":", advertised_port + offset);
  }
  if (host.empty() || host == "0.0.0.0" || host == "[::]") {
    return absl::InvalidArgumentError(
        "--register-with needs --advertise HOST:PORT when listening on " + listen);
  }
  return absl::StrCat(host, ":", port);
}

// One vLLM server served as one routable worker: its engine, metrics,
// Worker service and gRPC server.
// Members are destroyed bottom-up: the metrics, which the engine reports
// to, outlive it.
struct VllmServing {
  std::unique_ptr<tern::worker::WorkerMetrics> metrics;
  std::unique_ptr<tern::worker::vllm::VllmEngine> engine;
  std::unique_ptr<tern::worker::WorkerService> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<tern::worker::RouterRegistration> registration;
  int port = 0;
  bool serving = false;
};

// What the vllm engines see of their servers (docs/metrics.md, "vllm
// engine"): health and the KV event stream's replays, gaps and restarts.
std::vector<prometheus::MetricFamily> VllmAdapterFamilies(
    const std::string& model, const std::vector<VllmServing>& servings) {
  using Samples = std::vector<std::pair<tern::MetricLabels, double>>;
  Samples up, batches, replays, replayed, gaps, lost, restarts, undecodable, skipped;
  for (size_t i = 0; i < servings.size(); ++i) {
    const tern::MetricLabels labels = {{"model_name", model}, {"engine", std::to_string(i)}};
    const tern::worker::vllm::VllmEngineStats s = servings[i].engine->stats();
    up.push_back({labels, servings[i].engine->healthy() ? 1.0 : 0.0});
    batches.push_back({labels, static_cast<double>(s.event_batches)});
    replays.push_back({labels, static_cast<double>(s.replays)});
    replayed.push_back({labels, static_cast<double>(s.replayed_batches)});
    gaps.push_back({labels, static_cast<double>(s.gaps)});
    lost.push_back({labels, static_cast<double>(s.lost)});
    restarts.push_back({labels, static_cast<double>(s.restarts)});
    undecodable.push_back({labels, static_cast<double>(s.undecodable)});
    skipped.push_back({labels, static_cast<double>(s.blocks_skipped)});
  }
  return {
      tern::GaugeFamily("tern_worker_vllm_up", "1 while the vLLM server answers /health.", up),
      tern::CounterFamily("tern_worker_vllm_kv_event_batches_total",
                          "KV event batches taken from the vLLM server (PUB and replay).", batches),
      tern::CounterFamily("tern_worker_vllm_kv_event_replays_total",
                          "Requests to the server's replay socket (gaps and idle checks).",
                          replays),
      tern::CounterFamily("tern_worker_vllm_kv_event_replayed_batches_total",
                          "Batches recovered through the replay socket.", replayed),
      tern::CounterFamily("tern_worker_vllm_kv_event_gaps_total",
                          "Sequence gaps seen on the PUB socket.", gaps),
      tern::CounterFamily("tern_worker_vllm_kv_event_lost_total",
                          "Gaps replay could not fill: the prefix index restarted from empty.",
                          lost),
      tern::CounterFamily("tern_worker_vllm_restarts_total",
                          "vLLM server restarts seen in its event sequence.", restarts),
      tern::CounterFamily("tern_worker_vllm_kv_event_undecodable_total",
                          "Event payloads that could not be decoded (skipped).", undecodable),
      tern::CounterFamily("tern_worker_vllm_blocks_skipped_total",
                          "Stored blocks not re-keyed (unknown parent, extra keys, other "
                          "block size or medium).",
                          skipped),
  };
}

// tern-worker --engine vllm: one engine per --vllm server, engine i served
// on the listen port + i (each its own ephemeral port with port 0). An
// engine's gRPC health is SERVING while its server answers /health.
// Unverified against a real vLLM: tested against a protocol test double.
int RunVllmWorker(const tern::Flags& flags, const tern::ClusterConfig& config,
                  int32_t expected_block_size) {
  const tern::WorkerSection& section = config.worker;
  std::vector<tern::worker::vllm::VllmServerSpec> specs;
  std::optional<tern::cli::NeuronPlan> plan;
  if (flags.Has("launch")) {
    // The servers of the neuron section's plan, started and kept running
    // here; the engines attach to them as `tern neuron plan` prints them.
    if (!section.vllm.empty()) return Fail("--launch runs the planned servers; drop --vllm");
    auto facts = tern::cli::ReadCheckpointFacts(config.model.path);
    if (!facts.ok()) return Fail(std::string(facts.status().message()));
    auto planned = tern::cli::PlanNeuronServers(config, *facts);
    if (!planned.ok()) return Fail(std::string(planned.status().message()));
    plan = *std::move(planned);
    for (const tern::cli::NeuronServer& server : plan->servers) {
      auto spec = tern::worker::vllm::ParseVllmServerSpec(
          absl::StrCat(server.url, ",events=", server.kv_events_endpoint,
                       ",replay=", server.kv_replay_endpoint, ",model=", plan->served_name));
      if (!spec.ok()) return Fail(std::string(spec.status().message()));
      specs.push_back(*std::move(spec));
    }
    if (expected_block_size == 0) expected_block_size = plan->block_size;
  } else {
    if (section.vllm.empty()) {
      return Fail(
          "--engine vllm needs at least one --vllm URL[,events=...][,replay=...], or --launch");
    }
    for (const std::string& text : section.vllm) {
      auto spec = tern::worker::vllm::ParseVllmServerSpec(text);
      if (!spec.ok()) return Fail(std::string(spec.status().message()));
      specs.push_back(*std::move(spec));
    }
  }
  const size_t colon = section.listen.rfind(':');
  int base_port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(section.listen.substr(colon + 1), &base_port)) {
    return Fail("--listen must be HOST:PORT, got " + section.listen);
  }
  const std::string host = section.listen.substr(0, colon);
  // Only the checkpoint's config: the vocabulary and the EOS ids.
  auto model_config = tern::worker::LoadModelConfig(config.model.path);
  if (!model_config.ok()) {
    return Fail("cannot read the checkpoint's config: " +
                std::string(model_config.status().message()));
  }
  const int32_t max_model_len = static_cast<int32_t>(
      config.model.max_model_len > 0
          ? std::min<int64_t>(config.model.max_model_len, model_config->max_position_embeddings)
          : model_config->max_position_embeddings);
  if (flags.Has("check-config")) {
    std::cout << "tern-worker: config ok (engine vllm, " << specs.size() << " server"
              << (specs.size() == 1 ? "" : "s") << (plan ? ", launched here" : "") << ")\n";
    return 0;
  }

  tern::BlockTerminationSignals();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::vector<VllmServing> servings(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    VllmServing& s = servings[i];
    s.metrics =
        std::make_unique<tern::worker::WorkerMetrics>(config.model.served_name, std::to_string(i));
    tern::worker::vllm::VllmEngineOptions options;
    options.server = specs[i];
    options.served_model_name = config.model.served_name;
    options.block_size = expected_block_size;
    options.max_num_seqs = section.max_num_seqs;
    options.max_queue = section.max_queue;
    options.max_model_len = max_model_len;
    options.vocab_size = model_config->vocab_size;
    options.eos_token_ids = model_config->eos_token_ids;
    options.observer = s.metrics.get();
    auto engine = tern::worker::vllm::VllmEngine::Create(options);
    if (!engine.ok()) return Fail(std::string(engine.status().message()));
    s.engine = *std::move(engine);
    s.service = std::make_unique<tern::worker::WorkerService>(
        s.engine.get(), tern::worker::WorkerIdentity{config.model.served_name, kVersion});
    grpc::ServerBuilder builder;
    const std::string listen =
        absl::StrCat(host, ":", base_port == 0 ? 0 : base_port + static_cast<int>(i));
    builder.AddListeningPort(
        listen,
        tern::MakeServerCredentials(config.tls, tern::ClientCertificates::kRequireAndVerify),
        &s.port);
    builder.RegisterService(s.service.get());
    s.server = builder.BuildAndStart();
    if (!s.server || s.port == 0) {
      std::cerr << "tern-worker: cannot listen on " << listen << "\n";
      return 1;
    }
    s.server->GetHealthCheckService()->SetServingStatus(false);
    TERN_LOG(Info) << "engine " << i << ": vLLM at " << specs[i].url
                   << (specs[i].events.empty() ? " (no KV events: routed by load only)"
                                               : absl::StrCat(", KV events from ", specs[i].events))
                   << "; serving " << config.model.served_name << " on " << host << ":" << s.port;
  }

  std::unique_ptr<tern::MetricsServer> metrics;
  if (!section.metrics_listen.empty()) {
    auto started = tern::MetricsServer::Start(section.metrics_listen, [&servings, &config] {
      std::vector<std::pair<const tern::worker::WorkerMetrics*, const tern::worker::ServingEngine*>>
          engines;
      for (const VllmServing& s : servings) engines.emplace_back(s.metrics.get(), s.engine.get());
      std::vector<prometheus::MetricFamily> families = tern::worker::CollectWorkerMetrics(engines);
      for (prometheus::MetricFamily& family :
           VllmAdapterFamilies(config.model.served_name, servings)) {
        families.push_back(std::move(family));
      }
      return families;
    });
    if (!started.ok()) return Fail(std::string(started.status().message()));
    metrics = *std::move(started);
    TERN_LOG(Info) << "metrics on http://"
                   << section.metrics_listen.substr(0, section.metrics_listen.rfind(':')) << ":"
                   << metrics->port() << "/metrics";
  }

  std::unique_ptr<tern::cli::NeuronLauncher> launcher;
  if (plan) {
    launcher = std::make_unique<tern::cli::NeuronLauncher>(*plan);
    if (absl::Status started = launcher->Start(); !started.ok()) {
      return Fail(std::string(started.message()));
    }
    TERN_LOG(Info) << "launched " << plan->servers.size()
                   << " vLLM servers (unverified on hardware); each engine is ready once its "
                      "server answers /health";
  }

  // Readiness: each engine is SERVING once its server answers /health and
  // its block size is known; a block size other than the configured one
  // stops the worker.
  std::atomic<bool> stop{false};
  std::atomic<int> fatal{0};
  std::thread readiness([&] {
    while (!stop.load()) {
      for (size_t i = 0; i < servings.size(); ++i) {
        VllmServing& s = servings[i];
        if (const absl::Status wrong = s.engine->ConfigError(); !wrong.ok()) {
          std::cerr << "tern-worker: engine " << i << ": " << wrong.message() << "\n";
          fatal.store(1);
          kill(getpid(), SIGTERM);
          return;
        }
        const bool ready = s.engine->ready();
        if (ready != s.serving) {
          s.server->GetHealthCheckService()->SetServingStatus(ready);
          s.serving = ready;
          const tern::worker::EngineInfo info = s.engine->Info();
          TERN_LOG(Info) << "engine " << i << (ready ? " ready" : " not ready") << " (block size "
                         << info.kv_block_size << ", " << info.kv_blocks_total << " blocks)";
        }
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
  });
  if (auto router = flags.Get("register-with")) {
    const tern::ChannelSecurity router_security(config.tls);
    for (size_t i = 0; i < servings.size(); ++i) {
      auto advertise =
          AdvertiseAddress(flags, section.listen, servings[i].port, static_cast<int>(i));
      if (!advertise.ok()) {
        stop.store(true);
        readiness.join();
        return Fail(std::string(advertise.status().message()));
      }
      servings[i].registration =
          std::make_unique<tern::worker::RouterRegistration>(*router, *advertise, router_security);
    }
  }
  std::cout << "tern-worker: vllm engines on";
  for (const VllmServing& s : servings) std::cout << " " << host << ":" << s.port;
  std::cout << std::endl;

  const int signal_number = tern::WaitForTerminationSignal();
  stop.store(true);
  readiness.join();
  TERN_LOG(Info) << "signal " << signal_number << ": draining";
  for (VllmServing& s : servings) {
    s.server->GetHealthCheckService()->SetServingStatus(false);
    s.engine->Drain();
  }
  auto drain_timeout = flags.GetInt("drain-timeout-s");
  const int64_t drain_s = drain_timeout.ok() && *drain_timeout ? **drain_timeout : 30;
  const absl::Time drain_until = absl::Now() + absl::Seconds(fatal.load() ? 0 : drain_s);
  for (VllmServing& s : servings) {
    while (absl::Now() < drain_until) {
      const tern::worker::EngineLoad load = s.engine->Load();
      if (load.running + load.waiting == 0) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  for (VllmServing& s : servings) {
    if (s.registration != nullptr) s.registration->Stop();
    s.service->StopWatchers();
  }
  for (VllmServing& s : servings) {
    s.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
  // Engines go next: their destructors abort what is still in flight; the
  // servers they talk to last.
  servings.clear();
  if (launcher != nullptr) launcher->Stop(std::chrono::seconds(30));
  return fatal.load();
}

int Run(int argc, char** argv) {
  auto flags = tern::Flags::Parse(argc, argv, 1,
                                  {"config",
                                   "model",
                                   "listen",
                                   "served-model-name",
                                   "max-num-seqs",
                                   "max-model-len",
                                   "log-level",
                                   "drain-timeout-s",
                                   "metrics-listen",
                                   "tp",
                                   "cpus",
                                   "kv-cache-gib",
                                   "max-num-batched-tokens",
                                   "block-size",
                                   "register-with",
                                   "advertise",
                                   "engine",
                                   "vllm",
                                   "mtls-ca-file",
                                   "mtls-cert-file",
                                   "mtls-key-file",
                                   "debug-step-delay-ms"},
                                  {"help", "no-prefix-caching", "check-config", "launch"});
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
                                 {"lm-head", &section.lm_head},
                                 {"kv-cache-gib", &section.kv_cache_gib},
                                 {"no-prefix-caching", &section.enable_prefix_caching, false},
                                 {"engine", &section.engine},
                                 {"mtls-ca-file", &config.tls.ca_file},
                                 {"mtls-cert-file", &config.tls.cert_file},
                                 {"mtls-key-file", &config.tls.key_file}});
  if (!configured.ok()) return Fail(std::string(configured.message()));
  if (const absl::Status tls = tern::CheckTlsFiles(config.tls); !tls.ok()) {
    return Fail(std::string(tls.message()));
  }
  if (config.model.path.empty()) return Fail(std::string("--model DIR is required\n") + kUsage);
  if (config.model.served_name.empty()) {
    config.model.served_name = tern::DefaultServedModelName(config.model.path);
  }
  if (config.model.served_name.empty()) {
    return Fail("cannot derive a model name from " + config.model.path +
                "; pass --served-model-name");
  }
  if (!flags->GetAll("vllm").empty()) section.vllm = flags->GetAll("vllm");
  if (section.engine == "vllm") {
    // vLLM states its own block size; --block-size only asserts it.
    const int32_t expected_block_size = flags->Has("block-size") ? section.kv_block_size : 0;
    return RunVllmWorker(*flags, config, expected_block_size);
  }
  if (!section.vllm.empty()) return Fail("--vllm needs --engine vllm");
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
  engine_options.constraints = LoadConstraintCache(config.model.path, mc.vocab_size);
  engine_options.max_num_seqs = config.worker.max_num_seqs;
  engine_options.max_queue = config.worker.max_queue;
  engine_options.max_num_batched_tokens = config.worker.max_num_batched_tokens;
  engine_options.enable_prefix_caching = config.worker.enable_prefix_caching;
  engine_options.executor.tp = config.worker.tp;
  engine_options.executor.cpus = config.worker.cpus;
  auto lm_head = tern::worker::ParseLmHeadFormat(config.worker.lm_head);
  if (!lm_head.ok()) return Fail("--lm-head: " + std::string(lm_head.status().message()));
  engine_options.executor.lm_head = *lm_head;
  engine_options.executor.block_size = config.worker.kv_block_size;
  engine_options.executor.kv_cache_bytes =
      static_cast<int64_t>(std::llround(config.worker.kv_cache_gib * (1 << 30)));
  const int64_t model_max = mc.max_position_embeddings;
  engine_options.max_model_len = static_cast<int32_t>(
      config.model.max_model_len > 0 ? std::min<int64_t>(config.model.max_model_len, model_max)
                                     : std::min<int64_t>(model_max, 8192));
  // Hidden, for fault drills (tests/e2e/faults_workers.test.mjs): a slow
  // worker, every engine step sleeping this long first.
  auto step_delay_ms = flags->GetInt("debug-step-delay-ms");
  if (!step_delay_ms.ok()) return Fail(std::string(step_delay_ms.status().message()));
  if (*step_delay_ms && **step_delay_ms > 0) {
    const absl::Duration delay = absl::Milliseconds(**step_delay_ms);
    TERN_LOG(Warning) << "--debug-step-delay-ms: every engine step sleeps " << **step_delay_ms
                      << " ms (test only)";
    engine_options.before_step_for_testing = [delay](int64_t) { absl::SleepFor(delay); };
  }
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
      &engine, tern::worker::WorkerIdentity{config.model.served_name, kVersion});

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
  builder.AddListeningPort(
      config.worker.listen,
      tern::MakeServerCredentials(config.tls, tern::ClientCertificates::kRequireAndVerify), &port);
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
    registration = std::make_unique<tern::worker::RouterRegistration>(
        *router, advertise, tern::ChannelSecurity(config.tls));
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
