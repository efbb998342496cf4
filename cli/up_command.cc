#include "cli/up_command.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "cli/cpu_set.h"
#include "cli/process_supervisor.h"
#include "cli/tls_certs.h"
#include "common/config.h"
#include "common/flags.h"
#include "common/grpc_tls.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tern/v1/router.grpc.pb.h"
#include "worker/model/model_config.h"
#include "yaml-cpp/yaml.h"

namespace tern::cli {
namespace {

constexpr char kUsage[] =
    "usage: tern up --model DIR [--port 8000] [--workers N]\n"
    "               [--policy prefix|least-loaded|round-robin|random]\n"
    "               [--config tern.yaml] [--host 127.0.0.1] [--max-num-seqs N]\n"
    "               [--max-model-len N] [--served-model-name NAME] [--log-level info]\n"
    "               [--tp N] [--vllm URL[,events=EP][,replay=EP][,model=NAME]]...\n"
    "               [--grpc-port N] [--tls [--tls-dir DIR]]\n"
    "The workers share the CPUs this process may run on: each gets its own\n"
    "contiguous group (--cpus) and, unless --tp says otherwise, one\n"
    "tensor-parallel rank per CPU of its group.\n"
    "--vllm fronts a vLLM server that is already running (repeatable): each\n"
    "gets a tern-worker --engine vllm, and --workers defaults to 0 native ones.\n"
    "events= and replay= are its --kv-events-config endpoints, for prefix routing.\n"
    "The gateway also serves the gRPC API (tern.v1.Inference, with reflection) on\n"
    "--grpc-port, a free port by default.\n"
    "--tls: mutual TLS between gateway, router and workers, with a throw-away CA\n"
    "and certificates (127.0.0.1, localhost; 7 days) written to --tls-dir, by\n"
    "default a fresh folder under $TMPDIR removed when the cluster stops.\n";

using Clock = std::chrono::steady_clock;

// Restarts of one worker before `tern up` gives up and stops the cluster.
constexpr int kMaxWorkerRestarts = 10;

void Say(const std::string& line) { std::cout << "[tern up] " << line << std::endl; }

std::filesystem::path BinDir() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path();
}

// The identities `tern up --tls` makes certificates for; "client" is its own
// (the readiness probes) and the operator's (grpcurl -cacert/-cert/-key).
const std::vector<std::string> kTlsIdentities = {"gateway", "router", "worker", "client"};

// Removes a folder when it goes out of scope (the throw-away certificates).
struct RemoveFolderAtExit {
  ~RemoveFolderAtExit() {
    std::error_code ignored;
    if (!path.empty()) std::filesystem::remove_all(path, ignored);
  }
  std::string path;
};

bool WorkerServing(const std::string& address, const ChannelSecurity& security) {
  auto channel = security.CreateChannel(address);
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  grpc::health::v1::HealthCheckResponse response;
  return stub->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &response).ok() &&
         response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

int RouterReadyWorkers(const std::string& address, const ChannelSecurity& security) {
  auto stub = tern::v1::Router::NewStub(security.CreateChannel(address));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  tern::v1::ListModelsResponse response;
  if (!stub->ListModels(&ctx, tern::v1::ListModelsRequest(), &response).ok()) return 0;
  int ready = 0;
  for (const auto& card : response.models()) ready += card.ready_workers();
  return ready;
}

// `text` as one word for a POSIX shell: in single quotes, each ' written '\''.
std::string ShellQuoted(const std::string& text) {
  return absl::StrCat("'", absl::StrReplaceAll(text, {{"'", "'\\''"}}), "'");
}

// Sends `request` over TLS on the connected socket `fd` and returns the
// start of the answer; empty when the handshake fails or the server's
// certificate does not verify against `ca_file` and name `ip`.
std::string ExchangeOverTls(int fd, const std::string& ip, const std::string& ca_file,
                            const std::string& request) {
  std::unique_ptr<SSL_CTX, void (*)(SSL_CTX*)> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  std::string answer;
  if (ctx != nullptr && SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr) == 1) {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    std::unique_ptr<SSL, void (*)(SSL*)> ssl(SSL_new(ctx.get()), SSL_free);
    if (ssl != nullptr && SSL_set_fd(ssl.get(), fd) == 1 &&
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), ip.c_str()) == 1 &&
        SSL_connect(ssl.get()) == 1 &&
        SSL_write(ssl.get(), request.data(), static_cast<int>(request.size())) > 0) {
      char buf[64] = {};
      const int n = SSL_read(ssl.get(), buf, sizeof(buf) - 1);
      if (n > 0) answer.assign(buf, n);
    }
  }
  ERR_clear_error();
  return answer;
}

// The gateway's config under --tls: the --config file's content (if any)
// with gateway.tls_cert_file and tls_key_file naming its certificate, so its
// HTTP listener speaks HTTPS; written into `dir`.
absl::StatusOr<std::string> WriteGatewayHttpsConfig(const std::string& config_path,
                                                    const TlsSection& certificate,
                                                    const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "gateway.yaml").string();
  try {
    YAML::Node root =
        config_path.empty() ? YAML::Node(YAML::NodeType::Map) : YAML::LoadFile(config_path);
    if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
    root["gateway"]["tls_cert_file"] = certificate.cert_file;
    root["gateway"]["tls_key_file"] = certificate.key_file;
    YAML::Emitter out;
    out << root;
    std::ofstream file(path);
    file << out.c_str() << "\n";
    if (!file.flush()) return absl::InternalError("cannot write " + path);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", e.what()));
  }
  return path;
}

// GET /health on the gateway; true on a 200. Over HTTPS when
// `https_ca_file` is set (the certificate checked against it).
bool GatewayHealthy(const std::string& host, int port, const std::string& https_ca_file) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const std::string ip = host == "0.0.0.0" ? "127.0.0.1" : host;
  inet_pton(AF_INET, ip.c_str(), &addr.sin_addr);
  timeval timeout{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  bool ok = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if (!https_ca_file.empty()) {
      const std::string answer = ExchangeOverTls(fd, ip, https_ca_file, request);
      ok = answer.size() > 12 && answer.find(" 200 ") != std::string::npos;
    } else if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buf[64] = {};
      const ssize_t n = read(fd, buf, sizeof(buf) - 1);
      ok = n > 12 && std::string(buf, n).find(" 200 ") != std::string::npos;
    }
  }
  close(fd);
  return ok;
}

volatile sig_atomic_t g_stop_signal = 0;
void OnStopSignal(int signal_number) { g_stop_signal = signal_number; }

// Waits until `ready()` or a child exits or a signal arrives or `limit` passes.
bool WaitUntil(ProcessSupervisor& supervisor, const std::string& what, std::chrono::seconds limit,
               const std::function<bool()>& ready) {
  const auto start = Clock::now();
  auto last_note = start;
  while (!g_stop_signal) {
    if (ready()) return true;
    if (auto exited = supervisor.ReapExited()) {
      Say(absl::StrCat("error: ", exited->description, " while waiting for ", what));
      return false;
    }
    if (Clock::now() - start > limit) {
      Say(absl::StrCat("error: ", what, " not ready after ", limit.count(), " s"));
      return false;
    }
    if (Clock::now() - last_note > std::chrono::seconds(5)) {
      last_note = Clock::now();
      Say(absl::StrCat(
          "still waiting for ", what, " (",
          std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - start).count(), " s)"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

}  // namespace

int RunUpCommand(int argc, char** argv, int first) {
  auto flags = Flags::Parse(
      argc, argv, first,
      {"model", "port", "workers", "policy", "config", "host", "max-num-seqs", "max-model-len",
       "served-model-name", "log-level", "tp", "vllm", "grpc-port", "tls-dir"},
      {"help", "tls"});
  if (!flags.ok()) {
    std::cerr << "tern up: " << flags.status().message() << "\n" << kUsage;
    return 2;
  }
  if (flags->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  ClusterConfig config;
  const std::string config_path = flags->GetOr("config", "");
  const absl::Status configured = LoadConfigWithFlags(
      *flags, &config,
      {{"model", &config.model.path}, {"served-model-name", &config.model.served_name}});
  if (!configured.ok()) {
    std::cerr << "tern up: " << configured.message() << "\n";
    return 2;
  }
  if (config.model.path.empty()) {
    std::cerr << "tern up: --model DIR is required\n" << kUsage;
    return 2;
  }
  if (!std::filesystem::exists(std::filesystem::path(config.model.path) / "config.json")) {
    std::cerr << "tern up: " << config.model.path << " is not a model directory (no config.json)\n";
    return 2;
  }
  const auto model_config = worker::LoadModelConfig(config.model.path);
  if (!model_config.ok()) {
    std::cerr << "tern up: " << model_config.status().message() << "\n";
    return 2;
  }
  auto port = flags->GetInt("port");
  auto workers = flags->GetInt("workers");
  auto tp = flags->GetInt("tp");
  auto grpc_port = flags->GetInt("grpc-port");
  if (!port.ok() || !workers.ok() || !tp.ok() || !grpc_port.ok()) {
    std::cerr << "tern up: "
              << (!port.ok()      ? port.status()
                  : !workers.ok() ? workers.status()
                  : !tp.ok()      ? tp.status()
                                  : grpc_port.status())
                     .message()
              << "\n";
    return 2;
  }
  if (grpc_port->has_value() && (**grpc_port < 1 || **grpc_port > 65535)) {
    std::cerr << "tern up: --grpc-port must be in [1, 65535]\n";
    return 2;
  }
  if (tp->has_value() && (**tp < 1 || **tp > 1024)) {
    std::cerr << "tern up: --tp must be in [1, 1024]\n";
    return 2;
  }
  const std::string host = flags->GetOr("host", "127.0.0.1");
  const int gateway_port = port->value_or(8000);
  const std::vector<std::string> vllm_servers = flags->GetAll("vllm");
  const int num_native = static_cast<int>(workers->value_or(vllm_servers.empty() ? 1 : 0));
  const int num_workers = num_native + static_cast<int>(vllm_servers.size());
  if (num_native < 0 || num_workers < 1 || num_workers > 64) {
    std::cerr << "tern up: --workers must be in [1, 64] (or 0 with --vllm)\n";
    return 2;
  }
  const std::string policy = flags->GetOr("policy", config.router.policy);
  const std::string log_level = flags->GetOr("log-level", "info");
  // CPUs named in the config are shared out instead of the whole affinity set.
  const std::vector<std::vector<int32_t>> worker_cpus = DivideCpus(
      config.worker.cpus.empty() ? ProcessCpus() : config.worker.cpus, std::max(1, num_native));

  // --tls: every tier gets its certificate; tern up probes with "client".
  // Without it, a tls section in --config reaches the tiers through the
  // config, and the probes use it too.
  std::map<std::string, TlsSection> tls;
  std::string tls_dir;
  RemoveFolderAtExit remove_tls_dir;
  ChannelSecurity probe_security(config.tls);
  if (flags->Has("tls")) {
    tls_dir = flags->GetOr("tls-dir", "");
    if (tls_dir.empty()) {
      std::string pattern =
          (std::filesystem::temp_directory_path() / "tern-up-tls-XXXXXX").string();
      if (mkdtemp(pattern.data()) == nullptr) {
        std::cerr << "tern up: cannot create a folder for the certificates\n";
        return 1;
      }
      tls_dir = pattern;
      remove_tls_dir.path = tls_dir;  // throw-away: gone with the cluster
    }
    std::vector<std::string> hosts = {"127.0.0.1", "localhost"};
    if (host != "0.0.0.0" && host != "127.0.0.1" && host != "localhost") hosts.push_back(host);
    auto written = WriteClusterCertificates(tls_dir, kTlsIdentities, hosts, absl::Hours(24 * 7));
    if (!written.ok()) {
      std::cerr << "tern up: " << written.status().message() << "\n";
      return 1;
    }
    tls = *std::move(written);
    probe_security = ChannelSecurity(tls["client"]);
    Say(absl::StrCat("mutual TLS between the tiers: throw-away CA and certificates in ", tls_dir));
  } else if (flags->Has("tls-dir")) {
    std::cerr << "tern up: --tls-dir needs --tls\n";
    return 2;
  }
  // The tier's --mtls-* flags under --tls; none otherwise.
  const auto tls_args = [&](const std::string& tier) {
    if (tls.empty()) return std::vector<std::string>();
    const TlsSection& section = tls[tier];
    return std::vector<std::string>{"--mtls-ca-file=" + section.ca_file,
                                    "--mtls-cert-file=" + section.cert_file,
                                    "--mtls-key-file=" + section.key_file};
  };

  // Ctrl-C reaches the whole foreground process group; the children stop on
  // their own and the supervisor waits for them.
  signal(SIGINT, OnStopSignal);
  signal(SIGTERM, OnStopSignal);
  const std::filesystem::path bin = BinDir();
  ProcessSupervisor supervisor;

  std::vector<std::string> worker_addresses;
  std::vector<std::string> metrics_urls;
  // What every worker gets: its own ports, the model, the log level, the
  // config and the overrides given here (its metrics URL is noted); null
  // when no free ports are found.
  const auto worker_args = [&](const std::string& name,
                               std::string* address) -> std::optional<std::vector<std::string>> {
    auto worker_port = PickFreePort();
    auto metrics_port = PickFreePort();
    if (!worker_port.ok() || !metrics_port.ok()) {
      std::cerr << "tern up: cannot find free ports\n";
      return std::nullopt;
    }
    *address = absl::StrCat("127.0.0.1:", *worker_port);
    const std::string metrics = absl::StrCat("127.0.0.1:", *metrics_port);
    metrics_urls.push_back(absl::StrCat("http://", metrics, "/metrics (", name, ")"));
    std::vector<std::string> args = {(bin / "tern-worker").string(),
                                     "--model",
                                     config.model.path,
                                     "--listen",
                                     *address,
                                     "--metrics-listen",
                                     metrics,
                                     "--log-level",
                                     log_level};
    if (!config_path.empty()) args.insert(args.end(), {"--config", config_path});
    const std::vector<std::string> worker_tls = tls_args("worker");
    args.insert(args.end(), worker_tls.begin(), worker_tls.end());
    for (const char* flag : {"max-num-seqs", "max-model-len", "served-model-name"}) {
      if (auto v = flags->Get(flag)) args.insert(args.end(), {std::string("--") + flag, *v});
    }
    return args;
  };
  // --tp, else the config's tp, else one rank per CPU of the worker's share
  // (as many as the model's heads divide evenly into).
  std::vector<int64_t> worker_tps;
  for (int i = 0; i < num_native; ++i) {
    int64_t worker_tp = config.worker.tp;
    if (tp->has_value()) {
      worker_tp = **tp;
    } else if (worker_tp <= 0) {
      worker_tp = LargestValidTp(*model_config, static_cast<int32_t>(worker_cpus[i].size()));
    }
    worker_tps.push_back(worker_tp);
  }
  // Rank threads wait for each other at every layer, so a gRPC poller or an
  // HTTP thread that preempts one rank stalls them all. Where some CPUs carry
  // no rank, every process starts confined to those (children inherit the
  // mask); the workers' ranks then pin themselves to their own CPUs.
  const std::vector<int32_t> spare_cpus =
      num_native > 0 ? SpareCpus(worker_cpus, worker_tps) : std::vector<int32_t>{};
  if (!spare_cpus.empty()) {
    Say(absl::StrCat("gateway, router and the workers' other threads on CPUs ",
                     CpuListFlag(spare_cpus), " (no rank runs there)"));
  }
  const auto start_worker = [&](const std::string& name, const std::vector<std::string>& args,
                                const std::string& address) {
    const ScopedThreadAffinity off_rank_cpus(spare_cpus);
    if (auto started = supervisor.Start(name, args); !started.ok()) {
      std::cerr << "tern up: " << started.status().message() << "\n";
      return false;
    }
    worker_addresses.push_back(address);
    return true;
  };
  for (int i = 0; i < num_native; ++i) {
    const std::string name = absl::StrCat("worker ", i + 1);
    std::string address;
    std::optional<std::vector<std::string>> args = worker_args(name, &address);
    if (!args) return 1;
    const int64_t worker_tp = worker_tps[i];
    args->insert(args->end(),
                 {"--cpus", CpuListFlag(worker_cpus[i]), "--tp", std::to_string(worker_tp)});
    Say(absl::StrCat("starting worker ", i + 1, "/", num_native, " on ", address, " (CPUs ",
                     CpuListFlag(worker_cpus[i]), ", tp ", worker_tp, ")"));
    if (!start_worker(name, *args, address)) return 1;
  }
  // One tern-worker per vLLM server, each its own routable worker.
  for (size_t i = 0; i < vllm_servers.size(); ++i) {
    const std::string name = absl::StrCat("vllm worker ", i + 1);
    std::string address;
    std::optional<std::vector<std::string>> args = worker_args(name, &address);
    if (!args) return 1;
    args->insert(args->end(), {"--engine", "vllm", "--vllm", vllm_servers[i]});
    Say(absl::StrCat("starting ", name, "/", vllm_servers.size(), " on ", address, " in front of ",
                     vllm_servers[i]));
    if (!start_worker(name, *args, address)) return 1;
  }
  Say(vllm_servers.empty() ? "loading the model in each worker"
                           : "waiting for every worker (vLLM servers: until they answer /health)");
  for (const std::string& address : worker_addresses) {
    if (!WaitUntil(supervisor, "worker " + address, std::chrono::seconds(600),
                   [&] { return WorkerServing(address, probe_security); })) {
      return g_stop_signal ? 0 : 1;
    }
  }

  auto router_port = PickFreePort();
  auto router_metrics_port = PickFreePort();
  if (!router_port.ok() || !router_metrics_port.ok()) return 1;
  const std::string router_address = absl::StrCat("127.0.0.1:", *router_port);
  const std::string router_metrics = absl::StrCat("127.0.0.1:", *router_metrics_port);
  metrics_urls.push_back(absl::StrCat("http://", router_metrics, "/metrics (router)"));
  Say(absl::StrCat("starting router on ", router_address, " (policy ", policy, ")"));
  std::vector<std::string> router_args = {(bin / "tern-router").string(),
                                          "--listen",
                                          router_address,
                                          "--workers",
                                          absl::StrJoin(worker_addresses, ","),
                                          "--policy",
                                          policy,
                                          "--metrics-listen",
                                          router_metrics,
                                          "--log-level",
                                          log_level};
  if (!config_path.empty()) router_args.insert(router_args.end(), {"--config", config_path});
  const std::vector<std::string> router_tls = tls_args("router");
  router_args.insert(router_args.end(), router_tls.begin(), router_tls.end());
  if (const ScopedThreadAffinity off_rank_cpus(spare_cpus);
      !supervisor.Start("router", router_args).ok()) {
    return 1;
  }
  if (!WaitUntil(supervisor, "router", std::chrono::seconds(60), [&] {
        return RouterReadyWorkers(router_address, probe_security) == num_workers;
      })) {
    return g_stop_signal ? 0 : 1;
  }

  const std::string gateway_listen = absl::StrCat(host, ":", gateway_port);
  int gateway_grpc_port = static_cast<int>(grpc_port->value_or(0));
  if (gateway_grpc_port == 0) {
    auto free_port = PickFreePort();
    if (!free_port.ok()) return 1;
    gateway_grpc_port = *free_port;
  }
  const std::string gateway_grpc_listen = absl::StrCat(host, ":", gateway_grpc_port);
  Say(absl::StrCat("starting gateway on http://", gateway_listen, " (gRPC on ", gateway_grpc_listen,
                   ")"));
  std::vector<std::string> gateway_args = {(bin / "tern-gateway").string(),
                                           "--listen",
                                           gateway_listen,
                                           "--grpc-listen",
                                           gateway_grpc_listen,
                                           "--router",
                                           router_address,
                                           "--model",
                                           config.model.path,
                                           "--log-level",
                                           log_level};
  // Under --tls the gateway's HTTP listener speaks HTTPS with its certificate.
  std::string gateway_config = config_path;
  if (!tls.empty()) {
    auto written = WriteGatewayHttpsConfig(config_path, tls["gateway"], tls_dir);
    if (!written.ok()) {
      std::cerr << "tern up: " << written.status().message() << "\n";
      return 1;
    }
    gateway_config = *written;
  }
  if (!gateway_config.empty()) {
    gateway_args.insert(gateway_args.end(), {"--config", gateway_config});
  }
  const std::vector<std::string> gateway_tls = tls_args("gateway");
  gateway_args.insert(gateway_args.end(), gateway_tls.begin(), gateway_tls.end());
  if (auto v = flags->Get("served-model-name")) {
    gateway_args.insert(gateway_args.end(), {"--served-model-name", *v});
  }
  if (const ScopedThreadAffinity off_rank_cpus(spare_cpus);
      !supervisor.Start("gateway", gateway_args).ok()) {
    return 1;
  }
  if (!WaitUntil(supervisor, "gateway", std::chrono::seconds(60), [&] {
        return GatewayHealthy(host, gateway_port, tls.empty() ? "" : tls["client"].ca_file);
      })) {
    return g_stop_signal ? 0 : 1;
  }

  const std::string client_host = host == "0.0.0.0" ? "127.0.0.1" : host;
  const std::string base =
      absl::StrCat(tls.empty() ? "http://" : "https://", client_host, ":", gateway_port, "/v1");
  // curl's flag to trust the throw-away CA.
  const std::string cacert =
      tls.empty() ? "" : absl::StrCat("--cacert ", tls["client"].ca_file, " ");
  const std::string grpc_address = absl::StrCat(client_host, ":", gateway_grpc_port);
  // The id the gateway serves the model under, as it derives it.
  const std::string model_id = config.model.served_name.empty()
                                   ? DefaultServedModelName(config.model.path)
                                   : config.model.served_name;
  const nlohmann::ordered_json example = {{"model", model_id},
                                          {"messages", {{{"role", "user"}, {"content", "Hello!"}}}},
                                          {"max_tokens", 32}};
  std::cout << "\n[tern up] ready: " << num_workers << " worker(s), model " << model_id
            << ", OpenAI API at " << base << "\n[tern up] try:\n  curl " << cacert << base
            << "/models\n  curl " << cacert << base
            << "/chat/completions -H 'Content-Type: application/json' \\\n"
            << "    -d " << ShellQuoted(example.dump()) << "\n"
            << "[tern up] gRPC API (tern.v1.Inference) at " << grpc_address
            << "; with reflection: grpcurl "
            << (tls.empty() ? std::string("-plaintext ")
                            : absl::StrCat("-cacert ", tls["client"].ca_file, " "))
            << grpc_address << " list\n"
            << "[tern up] metrics: " << base.substr(0, base.size() - 3) << "/metrics (gateway), "
            << absl::StrJoin(metrics_urls, ", ") << "\n"
            << (tls.empty() ? ""
                            : absl::StrCat("[tern up] TLS: HTTPS at the gateway; mutual TLS "
                                           "gateway -> router -> workers (router ",
                                           router_address, "); CA ", tls["client"].ca_file,
                                           ", a client certificate: ", tls["client"].cert_file,
                                           " + ", tls["client"].key_file, "\n"))
            << "[tern up] press Ctrl-C to stop\n"
            << std::endl;

  // A worker that dies is started again (same address and flags; the router
  // resumes its requests elsewhere meanwhile and takes it back once healthy),
  // after a delay that doubles with each restart. The router or the gateway
  // dying stops the cluster.
  struct PendingRestart {
    ChildProcess child;
    Clock::time_point at;
  };
  std::vector<PendingRestart> pending;
  std::map<std::string, int> restarts;
  int exit_code = 0;
  while (!g_stop_signal) {
    if (auto exited = supervisor.ReapExited()) {
      const bool worker = absl::StartsWith(exited->child.name, "worker");
      int& count = restarts[exited->child.name];
      if (!worker || count >= kMaxWorkerRestarts) {
        Say(absl::StrCat("error: ", exited->description, worker ? " too often" : "",
                         "; stopping the cluster"));
        exit_code = 1;
        break;
      }
      const auto delay = std::chrono::milliseconds(500) * (1 << std::min(count, 6));
      ++count;
      Say(absl::StrCat(exited->description, "; restarting it in ",
                       std::chrono::duration_cast<std::chrono::milliseconds>(delay).count(),
                       " ms (restart ", count, " of ", kMaxWorkerRestarts, ")"));
      pending.push_back({exited->child, Clock::now() + delay});
    }
    for (auto it = pending.begin(); it != pending.end();) {
      if (Clock::now() < it->at) {
        ++it;
        continue;
      }
      const ScopedThreadAffinity off_rank_cpus(spare_cpus);
      auto started = supervisor.Start(it->child.name, it->child.argv);
      if (!started.ok()) {
        Say(absl::StrCat("error: cannot restart ", it->child.name, ": ",
                         started.status().message()));
      } else {
        Say(absl::StrCat("restarted ", it->child.name, " (pid ", started->pid, ")"));
      }
      it = pending.erase(it);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  Say("stopping");
  supervisor.StopAll(std::chrono::seconds(10));
  Say("stopped");
  return exit_code;
}

}  // namespace tern::cli
