#include "common/config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace tern {
namespace {

absl::Status CheckKeys(const YAML::Node& node, const std::string& where,
                       const std::set<std::string>& allowed) {
  if (!node.IsMap()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected a mapping"));
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (!allowed.count(key)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": unknown key '", key, "' (known: ", absl::StrJoin(allowed, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

template <typename T>
void Read(const YAML::Node& node, const char* key, T* out) {
  if (node[key]) *out = node[key].as<T>();
}

absl::StatusOr<ClusterConfig> ParseNode(const YAML::Node& root) {
  ClusterConfig config;
  if (!root || root.IsNull()) return config;
  TERN_RETURN_IF_ERROR(
      CheckKeys(root, "tern.yaml", {"model", "worker", "router", "gateway", "neuron", "tls"}));
  if (const YAML::Node m = root["model"]) {
    TERN_RETURN_IF_ERROR(CheckKeys(m, "model", {"path", "served_name", "max_model_len"}));
    Read(m, "path", &config.model.path);
    Read(m, "served_name", &config.model.served_name);
    Read(m, "max_model_len", &config.model.max_model_len);
  }
  if (const YAML::Node w = root["worker"]) {
    TERN_RETURN_IF_ERROR(
        CheckKeys(w, "worker",
                  {"engine", "vllm", "listen", "max_num_seqs", "max_queue", "kv_block_size",
                   "kv_cache_gib", "max_num_batched_tokens", "enable_prefix_caching", "tp", "cpus",
                   "lm_head", "metrics_listen"}));
    Read(w, "engine", &config.worker.engine);
    Read(w, "vllm", &config.worker.vllm);
    Read(w, "listen", &config.worker.listen);
    Read(w, "max_num_seqs", &config.worker.max_num_seqs);
    Read(w, "max_queue", &config.worker.max_queue);
    Read(w, "kv_block_size", &config.worker.kv_block_size);
    Read(w, "kv_cache_gib", &config.worker.kv_cache_gib);
    Read(w, "max_num_batched_tokens", &config.worker.max_num_batched_tokens);
    Read(w, "enable_prefix_caching", &config.worker.enable_prefix_caching);
    Read(w, "tp", &config.worker.tp);
    Read(w, "cpus", &config.worker.cpus);
    Read(w, "lm_head", &config.worker.lm_head);
    Read(w, "metrics_listen", &config.worker.metrics_listen);
  }
  if (const YAML::Node r = root["router"]) {
    TERN_RETURN_IF_ERROR(CheckKeys(
        r, "router",
        {"listen", "policy", "model_policies", "session_affinity", "workers", "dns_refresh_ms",
         "registration_lease_ms", "health_interval_ms", "health_timeout_ms", "metrics_listen",
         "slack", "max_queue", "max_queue_wait_ms", "max_priority_wait_ms", "overload_ttft_factor",
         "stall_timeout_ms", "max_retries", "circuit_failures", "circuit_cooldown_ms"}));
    Read(r, "listen", &config.router.listen);
    Read(r, "policy", &config.router.policy);
    if (const YAML::Node p = r["model_policies"]) {
      if (!p.IsMap()) {
        return absl::InvalidArgumentError(
            "router.model_policies: expected a mapping of model name to policy");
      }
      config.router.model_policies = p.as<std::map<std::string, std::string>>();
    }
    Read(r, "session_affinity", &config.router.session_affinity);
    Read(r, "workers", &config.router.workers);
    Read(r, "dns_refresh_ms", &config.router.dns_refresh_ms);
    Read(r, "registration_lease_ms", &config.router.registration_lease_ms);
    Read(r, "health_interval_ms", &config.router.health_interval_ms);
    Read(r, "health_timeout_ms", &config.router.health_timeout_ms);
    Read(r, "metrics_listen", &config.router.metrics_listen);
    Read(r, "slack", &config.router.slack);
    Read(r, "max_queue", &config.router.max_queue);
    Read(r, "max_queue_wait_ms", &config.router.max_queue_wait_ms);
    Read(r, "max_priority_wait_ms", &config.router.max_priority_wait_ms);
    Read(r, "overload_ttft_factor", &config.router.overload_ttft_factor);
    Read(r, "stall_timeout_ms", &config.router.stall_timeout_ms);
    Read(r, "max_retries", &config.router.max_retries);
    Read(r, "circuit_failures", &config.router.circuit_failures);
    Read(r, "circuit_cooldown_ms", &config.router.circuit_cooldown_ms);
  }
  if (const YAML::Node g = root["gateway"]) {
    TERN_RETURN_IF_ERROR(CheckKeys(
        g, "gateway",
        {"listen", "grpc_listen", "router", "max_body_bytes", "request_timeout_s", "io_threads",
         "api_keys", "api_key_file", "max_connections", "max_connections_per_client",
         "header_timeout_s", "body_idle_timeout_s", "tls_cert_file", "tls_key_file"}));
    Read(g, "listen", &config.gateway.listen);
    Read(g, "grpc_listen", &config.gateway.grpc_listen);
    Read(g, "router", &config.gateway.router);
    Read(g, "max_body_bytes", &config.gateway.max_body_bytes);
    Read(g, "request_timeout_s", &config.gateway.request_timeout_s);
    Read(g, "io_threads", &config.gateway.io_threads);
    Read(g, "api_keys", &config.gateway.api_keys);
    Read(g, "api_key_file", &config.gateway.api_key_file);
    Read(g, "max_connections", &config.gateway.max_connections);
    Read(g, "max_connections_per_client", &config.gateway.max_connections_per_client);
    Read(g, "header_timeout_s", &config.gateway.header_timeout_s);
    Read(g, "body_idle_timeout_s", &config.gateway.body_idle_timeout_s);
    Read(g, "tls_cert_file", &config.gateway.tls_cert_file);
    Read(g, "tls_key_file", &config.gateway.tls_key_file);
  }
  if (const YAML::Node n = root["neuron"]) {
    TERN_RETURN_IF_ERROR(CheckKeys(n, "neuron",
                                   {"instance_type",
                                    "lnc",
                                    "tp",
                                    "servers",
                                    "max_model_len",
                                    "max_num_seqs",
                                    "max_num_batched_tokens",
                                    "block_size",
                                    "optimization_level",
                                    "prefill_buckets",
                                    "kv_segment_size_buckets",
                                    "num_seqs_buckets",
                                    "fp8",
                                    "host",
                                    "port",
                                    "kv_events_port",
                                    "kv_replay_port",
                                    "cache_root",
                                    "remote_cache",
                                    "extra_args"}));
    NeuronSection& neuron = config.neuron;
    Read(n, "instance_type", &neuron.instance_type);
    Read(n, "lnc", &neuron.lnc);
    Read(n, "tp", &neuron.tp);
    Read(n, "servers", &neuron.servers);
    Read(n, "max_model_len", &neuron.max_model_len);
    Read(n, "max_num_seqs", &neuron.max_num_seqs);
    Read(n, "max_num_batched_tokens", &neuron.max_num_batched_tokens);
    Read(n, "block_size", &neuron.block_size);
    Read(n, "optimization_level", &neuron.optimization_level);
    Read(n, "prefill_buckets", &neuron.prefill_buckets);
    Read(n, "kv_segment_size_buckets", &neuron.kv_segment_size_buckets);
    Read(n, "num_seqs_buckets", &neuron.num_seqs_buckets);
    Read(n, "fp8", &neuron.fp8);
    Read(n, "host", &neuron.host);
    Read(n, "port", &neuron.port);
    Read(n, "kv_events_port", &neuron.kv_events_port);
    Read(n, "kv_replay_port", &neuron.kv_replay_port);
    Read(n, "cache_root", &neuron.cache_root);
    Read(n, "remote_cache", &neuron.remote_cache);
    Read(n, "extra_args", &neuron.extra_args);
  }
  if (const YAML::Node t = root["tls"]) {
    TERN_RETURN_IF_ERROR(
        CheckKeys(t, "tls", {"ca_file", "cert_file", "key_file", "server_name_override"}));
    Read(t, "ca_file", &config.tls.ca_file);
    Read(t, "cert_file", &config.tls.cert_file);
    Read(t, "key_file", &config.tls.key_file);
    Read(t, "server_name_override", &config.tls.server_name_override);
  }
  TERN_RETURN_IF_ERROR(ValidateClusterConfig(config));
  return config;
}

}  // namespace

absl::Status ValidateClusterConfig(const ClusterConfig& config) {
  if (config.worker.max_num_seqs <= 0) {
    return absl::InvalidArgumentError("worker.max_num_seqs must be positive");
  }
  if (config.worker.engine != "native" && config.worker.engine != "vllm") {
    return absl::InvalidArgumentError(
        absl::StrCat("worker.engine must be native or vllm, got \"", config.worker.engine, "\""));
  }
  if (config.worker.kv_block_size <= 0) {
    return absl::InvalidArgumentError("worker.kv_block_size must be positive");
  }
  if (!(config.worker.kv_cache_gib > 0)) {
    return absl::InvalidArgumentError("worker.kv_cache_gib must be positive");
  }
  if (config.worker.max_num_batched_tokens <= 0) {
    return absl::InvalidArgumentError("worker.max_num_batched_tokens must be positive");
  }
  if (const double factor = config.router.overload_ttft_factor; !(factor == 0 || factor >= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.overload_ttft_factor must be 0 (off) or at least 1, got ", factor));
  }
  if (config.worker.tp < 0) return absl::InvalidArgumentError("worker.tp must not be negative");
  if (config.worker.lm_head != "auto" && config.worker.lm_head != "as-stored" &&
      config.worker.lm_head != "int8") {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker.lm_head must be auto, as-stored or int8, got \"", config.worker.lm_head, "\""));
  }
  if (config.router.dns_refresh_ms <= 0) {
    return absl::InvalidArgumentError("router.dns_refresh_ms must be positive");
  }
  if (config.router.registration_lease_ms <= 0) {
    return absl::InvalidArgumentError("router.registration_lease_ms must be positive");
  }
  if (config.gateway.max_body_bytes <= 0) {
    return absl::InvalidArgumentError("gateway.max_body_bytes must be positive");
  }
  const std::pair<const char*, int64_t> positive[] = {
      {"router.health_interval_ms", config.router.health_interval_ms},
      {"router.health_timeout_ms", config.router.health_timeout_ms},
      {"router.stall_timeout_ms", config.router.stall_timeout_ms},
      {"router.max_queue_wait_ms", config.router.max_queue_wait_ms},
      {"router.max_priority_wait_ms", config.router.max_priority_wait_ms},
      {"router.circuit_failures", config.router.circuit_failures},
      {"router.circuit_cooldown_ms", config.router.circuit_cooldown_ms},
      {"gateway.request_timeout_s", config.gateway.request_timeout_s},
      {"gateway.header_timeout_s", config.gateway.header_timeout_s},
      {"gateway.body_idle_timeout_s", config.gateway.body_idle_timeout_s}};
  for (const auto& [key, value] : positive) {
    if (value <= 0) return absl::InvalidArgumentError(absl::StrCat(key, " must be positive"));
  }
  const std::pair<const char*, int64_t> not_negative[] = {
      {"worker.max_queue", config.worker.max_queue},
      {"router.slack", config.router.slack},
      {"router.max_queue", config.router.max_queue},
      {"router.max_retries", config.router.max_retries},
      {"gateway.io_threads", config.gateway.io_threads},
      {"gateway.max_connections", config.gateway.max_connections},
      {"gateway.max_connections_per_client", config.gateway.max_connections_per_client},
      {"neuron.servers", config.neuron.servers},
      {"neuron.max_model_len", config.neuron.max_model_len},
      {"neuron.max_num_batched_tokens", config.neuron.max_num_batched_tokens}};
  for (const auto& [key, value] : not_negative) {
    if (value < 0) return absl::InvalidArgumentError(absl::StrCat(key, " must not be negative"));
  }
  if (const std::string& grpc = config.gateway.grpc_listen; !grpc.empty()) {
    const size_t colon = grpc.rfind(':');
    int port = -1;
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(grpc.substr(colon + 1), &port) || port < 0 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("gateway.grpc_listen must be HOST:PORT (or empty: off), got '", grpc, "'"));
    }
    if (port != 0 && grpc == config.gateway.listen) {
      return absl::InvalidArgumentError("gateway.grpc_listen must differ from gateway.listen");
    }
  }
  if (config.gateway.tls_cert_file.empty() != config.gateway.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "gateway.tls_cert_file and gateway.tls_key_file go together: set both or neither");
  }
  // Whether the files exist and fit together is for common/grpc_tls.h.
  const TlsSection& tls = config.tls;
  const int tls_files = !tls.ca_file.empty() + !tls.cert_file.empty() + !tls.key_file.empty();
  if (tls_files != 0 && tls_files != 3) {
    return absl::InvalidArgumentError(
        "tls: set all of ca_file, cert_file and key_file (mutual TLS), or none (plaintext)");
  }
  if (tls_files == 0 && !tls.server_name_override.empty()) {
    return absl::InvalidArgumentError(
        "tls.server_name_override needs ca_file, cert_file and key_file");
  }
  const std::string& fp8 = config.neuron.fp8;
  if (fp8 != "auto" && fp8 != "true" && fp8 != "false") {
    return absl::InvalidArgumentError(
        absl::StrCat("neuron.fp8 must be auto, true or false, got '", fp8, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ClusterConfig> ParseClusterConfig(const std::string& yaml_text) {
  try {
    return ParseNode(YAML::Load(yaml_text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tern.yaml: ", e.what()));
  }
}

std::string DefaultServedModelName(const std::string& model_path) {
  std::filesystem::path path = std::filesystem::path(model_path).lexically_normal();
  if (!path.has_filename()) path = path.parent_path();
  const std::string name = path.filename().string();
  return name == "." || name == ".." ? std::string() : name;
}

absl::StatusOr<ClusterConfig> LoadClusterConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open config file ", path));
  std::stringstream text;
  text << in.rdbuf();
  return ParseClusterConfig(text.str());
}

FlagOverride::FlagOverride(std::string flag, std::string* field)
    : flag_(std::move(flag)), field_(field) {}
FlagOverride::FlagOverride(std::string flag, int32_t* field)
    : flag_(std::move(flag)), field_(field) {}
FlagOverride::FlagOverride(std::string flag, double* field)
    : flag_(std::move(flag)), field_(field) {}
FlagOverride::FlagOverride(std::string flag, std::vector<std::string>* field)
    : flag_(std::move(flag)), field_(field) {}
FlagOverride::FlagOverride(std::string flag, std::vector<int32_t>* field)
    : flag_(std::move(flag)), field_(field) {}
FlagOverride::FlagOverride(std::string flag, bool* field, bool value_when_given)
    : flag_(std::move(flag)), field_(field), value_when_given_(value_when_given) {}

absl::Status FlagOverride::Apply(const Flags& flags) const {
  const std::optional<std::string> value = flags.Get(flag_);
  if (!value) return absl::OkStatus();
  auto bad = [&](const char* what) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag_, " takes ", what, ", got '", *value, "'"));
  };
  if (auto* field = std::get_if<std::string*>(&field_)) {
    **field = *value;
  } else if (auto* field = std::get_if<int32_t*>(&field_)) {
    int32_t parsed = 0;
    if (!absl::SimpleAtoi(*value, &parsed)) return bad("an integer");
    **field = parsed;
  } else if (auto* field = std::get_if<double*>(&field_)) {
    double parsed = 0;
    if (!absl::SimpleAtod(*value, &parsed) || !std::isfinite(parsed)) return bad("a number");
    **field = parsed;
  } else if (auto* field = std::get_if<std::vector<std::string>*>(&field_)) {
    **field = absl::StrSplit(*value, ',', absl::SkipEmpty());
  } else if (auto* field = std::get_if<std::vector<int32_t>*>(&field_)) {
    std::vector<int32_t> parsed;
    for (absl::string_view item : absl::StrSplit(*value, ',', absl::SkipEmpty())) {
      int32_t number = 0;
      if (!absl::SimpleAtoi(item, &number) || number < 0) {
        return bad("a comma-separated list of non-negative integers");
      }
      parsed.push_back(number);
    }
    **field = std::move(parsed);
  } else if (auto* field = std::get_if<bool*>(&field_)) {
    // A boolean flag holds "true", or "false" when written --flag=false.
    if (*value == "true") **field = value_when_given_;
  }
  return absl::OkStatus();
}

absl::Status LoadConfigWithFlags(const Flags& flags, ClusterConfig* config,
                                 std::initializer_list<FlagOverride> overrides) {
  if (const std::optional<std::string> path = flags.Get("config")) {
    TERN_ASSIGN_OR_RETURN(*config, LoadClusterConfig(*path));
  }
  for (const FlagOverride& override_ : overrides) TERN_RETURN_IF_ERROR(override_.Apply(flags));
  return ValidateClusterConfig(*config);
}

}  // namespace tern
