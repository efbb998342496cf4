#include "cli/neuron/neuron_plan.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tern::cli {
namespace {

// trn2.48xlarge: 16 Trainium2 devices × 8 physical NeuronCores; LNC=2 shows 64
// logical cores (Neuron docs, logical-neuroncore-config). Unverified on hardware.
constexpr char kInstanceType[] = "trn2.48xlarge";
constexpr int32_t kPhysicalCores = 16 * 8;
// neuron_config.kv_segment_size_buckets must lie in this range (vLLM Neuron
// reference configuration).
constexpr int32_t kMinSegment = 512;
constexpr int32_t kMaxSegment = 8192;
// AWS's 70B recipe raises both from the 600 s default: a cold 70B compile
// takes 15–20 minutes.
constexpr char kTimeoutSeconds[] = "1200";
// Any fixed value works; all servers must share it so that vLLM's block
// hashes (seeded from PYTHONHASHSEED) are stable across restarts.
constexpr char kPythonHashSeed[] = "42";

// Flags the plan sets itself; extra_args may not repeat them, or the two
// could disagree.
const std::set<std::string>& DerivedFlags() {
  static const auto* flags = new std::set<std::string>{"--tensor-parallel-size",
                                                       "--enable-prefix-caching",
                                                       "--max-model-len",
                                                       "--max-num-batched-tokens",
                                                       "--max-num-seqs",
                                                       "--block-size",
                                                       "--optimization-level",
                                                       "--additional-config",
                                                       "--served-model-name",
                                                       "--host",
                                                       "--port",
                                                       "--kv-events-config",
                                                       "--model",
                                                       "--data-parallel-size"};
  return *flags;
}

std::string FlagName(const std::string& arg) { return arg.substr(0, arg.find('=')); }

std::string List(const std::vector<int32_t>& values) {
  return absl::StrCat("[", absl::StrJoin(values, ", "), "]");
}

bool StrictlyAscendingPositive(const std::vector<int32_t>& values) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] <= 0 || (i > 0 && values[i] <= values[i - 1])) return false;
  }
  return true;
}

// The address the co-located tern worker dials for a server bound to `host`.
std::string DialHost(const std::string& host) {
  if (host == "0.0.0.0" || host == "::" || host == "*" || host.empty()) return "127.0.0.1";
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]");
  return host;
}

}  // namespace

absl::StatusOr<CheckpointFacts> ReadCheckpointFacts(const std::string& model_path) {
  CheckpointFacts facts;
  const std::string path = absl::StrCat(model_path, "/config.json");
  std::ifstream in(path);
  if (model_path.empty() || !in) return facts;
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not an object"));
  facts.has_config = true;
  auto text = [](const nlohmann::json& object, const char* key) {
    auto it = object.find(key);
    return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  auto quant = config.find("quantization_config");
  if (quant != config.end() && quant->is_object()) {
    const std::string method = text(*quant, "quant_method");
    const std::string algo = text(*quant, "quant_algo");
    facts.quantization = absl::StrCat(method.empty() ? "unknown" : method,
                                      algo.empty() ? "" : absl::StrCat(" ", algo));
    facts.fp8 = method == "modelopt" && algo == "FP8";
  }
  auto positions = config.find("max_position_embeddings");
  if (positions != config.end() && positions->is_number_integer()) {
    facts.max_position_embeddings = positions->get<int32_t>();
  }
  return facts;
}

absl::StatusOr<NeuronPlan> PlanNeuronServers(const ClusterConfig& config,
                                             const CheckpointFacts& checkpoint) {
  const NeuronSection& n = config.neuron;
  std::vector<std::string> problems;
  auto fail = [&](auto&&... parts) { problems.push_back(absl::StrCat(parts...)); };

  NeuronPlan plan;
  plan.model = config.model.path;
  plan.served_name = config.model.served_name.empty() ? DefaultServedModelName(config.model.path)
                                                      : config.model.served_name;
  if (config.model.path.empty()) fail("model.path is required: it is what `vllm serve` loads");

  // Cores and servers.
  plan.instance_type = n.instance_type;
  if (n.instance_type != kInstanceType) {
    fail("neuron.instance_type '", n.instance_type, "' is not supported: only ", kInstanceType);
  }
  plan.lnc = n.lnc;
  if (n.lnc != 1 && n.lnc != 2) fail("neuron.lnc must be 1 or 2, got ", n.lnc);
  plan.logical_cores = n.lnc == 1 || n.lnc == 2 ? kPhysicalCores / n.lnc : 0;
  plan.tp = n.tp;
  int32_t servers = 0;
  if (n.tp <= 0) {
    fail("neuron.tp must be positive, got ", n.tp);
  } else if (plan.logical_cores > 0) {
    if (n.servers == 0 && plan.logical_cores % n.tp != 0) {
      fail("neuron.tp ", n.tp, " does not divide the ", plan.logical_cores,
           " logical NeuronCores of a ", kInstanceType, " at neuron.lnc ", n.lnc);
    } else if (n.servers != 0 && n.servers * n.tp != plan.logical_cores) {
      fail("neuron.servers × neuron.tp must equal the ", plan.logical_cores,
           " logical NeuronCores at neuron.lnc ", n.lnc, ", got ", n.servers, " × ", n.tp, " = ",
           n.servers * n.tp);
    } else {
      servers = n.servers != 0 ? n.servers : plan.logical_cores / n.tp;
    }
  }

  // Buckets. vLLM Neuron compiles one graph per bucket; a shape outside them
  // compiles during serving or fails ("Request exceeds largest bucket").
  plan.block_size = n.block_size;
  if (n.block_size <= 0) fail("neuron.block_size must be positive, got ", n.block_size);
  if (n.prefill_buckets.empty() || !StrictlyAscendingPositive(n.prefill_buckets)) {
    fail("neuron.prefill_buckets must be a non-empty ascending list of positive sizes, got ",
         List(n.prefill_buckets));
  } else {
    for (int32_t bucket : n.prefill_buckets) {
      if (bucket < kMinSegment || bucket > kMaxSegment) {
        fail("neuron.prefill_buckets entry ", bucket, " is outside ", kMinSegment, "–", kMaxSegment,
             " (they are also the KV segment sizes)");
      } else if (n.block_size > 0 && bucket % n.block_size != 0) {
        fail("neuron.prefill_buckets entry ", bucket, " is not divisible by neuron.block_size ",
             n.block_size);
      }
    }
  }
  const int32_t last_prefill = n.prefill_buckets.empty() ? 0 : n.prefill_buckets.back();
  if (!n.kv_segment_size_buckets.empty() && n.kv_segment_size_buckets != n.prefill_buckets) {
    fail("neuron.kv_segment_size_buckets ", List(n.kv_segment_size_buckets),
         " must equal neuron.prefill_buckets ", List(n.prefill_buckets),
         " (leave it out to derive it)");
  }
  if (n.max_num_batched_tokens != 0 && n.max_num_batched_tokens != last_prefill) {
    fail("neuron.max_num_batched_tokens ", n.max_num_batched_tokens,
         " must equal the last of neuron.prefill_buckets ", List(n.prefill_buckets),
         " (leave it 0 to derive it)");
  }
  if (n.max_num_seqs <= 0) fail("neuron.max_num_seqs must be positive, got ", n.max_num_seqs);
  const std::vector<int32_t> seq_buckets =
      n.num_seqs_buckets.empty() ? std::vector<int32_t>{n.max_num_seqs} : n.num_seqs_buckets;
  if (!StrictlyAscendingPositive(seq_buckets)) {
    fail("neuron.num_seqs_buckets must be an ascending list of positive sizes, got ",
         List(seq_buckets));
  } else if (n.max_num_seqs > 0 && seq_buckets.back() < n.max_num_seqs) {
    fail("neuron.num_seqs_buckets ", List(seq_buckets), " must cover neuron.max_num_seqs ",
         n.max_num_seqs, ": its last entry is smaller");
  }

  // Context. The worker reports model.max_model_len and the gateway admits
  // prompt + completion up to it, so vLLM must take at least that much.
  plan.gateway_max_model_len = config.model.max_model_len;
  plan.max_model_len = n.max_model_len != 0 ? n.max_model_len : config.model.max_model_len;
  if (config.model.max_model_len <= 0) {
    fail(
        "model.max_model_len must be set: it is the gateway's context limit, and "
        "--max-model-len is derived from it");
  } else if (n.max_model_len != 0 && n.max_model_len < config.model.max_model_len) {
    fail("neuron.max_model_len ", n.max_model_len, " is below model.max_model_len ",
         config.model.max_model_len, ", the longest prompt + completion the gateway admits");
  }
  if (checkpoint.max_position_embeddings > 0 &&
      plan.max_model_len > checkpoint.max_position_embeddings) {
    fail(n.max_model_len != 0 ? "neuron.max_model_len " : "model.max_model_len ",
         plan.max_model_len, " exceeds the checkpoint's max_position_embeddings ",
         checkpoint.max_position_embeddings, " (model.path/config.json)");
  }

  // FP8. The checkpoint selects FP8 itself (never --quantization); its FP8 KV
  // cache must be packed for segmented prefill.
  if (n.fp8 == "auto") {
    if (!checkpoint.has_config) {
      fail("neuron.fp8 is auto but model.path '", config.model.path,
           "' has no config.json to read the quantization from: set neuron.fp8 to true or "
           "false");
    }
    plan.fp8 = checkpoint.fp8;
    plan.fp8_source = "model.path/config.json";
  } else {
    plan.fp8 = n.fp8 == "true";
    plan.fp8_source = "neuron.fp8";
    if (checkpoint.has_config && plan.fp8 != checkpoint.fp8) {
      fail("neuron.fp8 is ", n.fp8, " but model.path/config.json says the checkpoint is ",
           checkpoint.fp8 ? "" : "not ", "ModelOpt FP8 (quantization: ", checkpoint.quantization,
           ")");
    }
  }

  if (n.optimization_level < 0 || n.optimization_level > 3) {
    fail("neuron.optimization_level must be 0–3, got ", n.optimization_level);
  }
  if (n.cache_root.empty() || n.cache_root.front() != '/') {
    fail("neuron.cache_root must be an absolute path (the compile cache), got '", n.cache_root,
         "'");
  }
  for (const std::string& arg : n.extra_args) {
    const std::string flag = FlagName(arg);
    if (flag == "--quantization" || flag == "-q") {
      fail("neuron.extra_args must not pass ", flag,
           ": the checkpoint selects FP8 (set neuron.fp8 instead)");
    } else if (DerivedFlags().count(flag)) {
      fail("neuron.extra_args must not pass ", flag, ": the plan derives it from the other keys");
    }
  }

  // Ports: three per server, all distinct.
  const std::pair<const char*, int32_t> bases[] = {{"neuron.port", n.port},
                                                   {"neuron.kv_events_port", n.kv_events_port},
                                                   {"neuron.kv_replay_port", n.kv_replay_port}};
  std::vector<std::pair<int32_t, const char*>> used;
  for (const auto& [key, base] : bases) {
    if (base <= 0 || base + std::max(servers, 1) - 1 > 65535) {
      fail(key, " ", base, " leaves no valid port for each of the ", std::max(servers, 1),
           " servers (1–65535)");
    }
    for (int32_t i = 0; i < servers; ++i) used.emplace_back(base + i, key);
  }
  std::sort(used.begin(), used.end());
  std::set<std::string> clashes;
  for (size_t i = 1; i < used.size(); ++i) {
    if (used[i].first == used[i - 1].first && used[i].second != used[i - 1].second) {
      clashes.insert(absl::StrCat(used[i - 1].second, " and ", used[i].second));
    }
  }
  for (const std::string& pair : clashes) {
    fail("the port ranges of ", pair, " overlap across the ", servers,
         " servers (server i uses base + i)");
  }

  if (!problems.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the neuron plan breaks ", problems.size(),
                                                   problems.size() == 1 ? " rule" : " rules",
                                                   ":\n  ", absl::StrJoin(problems, "\n  ")));
  }

  const nlohmann::ordered_json additional = {{"neuron_config",
                                              {{"kv_segment_size_buckets", n.prefill_buckets},
                                               {"num_batched_tokens_buckets", n.prefill_buckets},
                                               {"num_seqs_buckets", seq_buckets},
                                               {"fp8_packed_kv", plan.fp8}}}};
  const std::string dial = DialHost(n.host);
  for (int32_t i = 0; i < servers; ++i) {
    NeuronServer server;
    server.index = i;
    server.visible_cores = absl::StrCat(i * n.tp, "-", (i + 1) * n.tp - 1);
    const nlohmann::ordered_json events = {
        {"enable_kv_cache_events", true},
        {"publisher", "zmq"},
        {"endpoint", absl::StrCat("tcp://*:", n.kv_events_port + i)},
        {"replay_endpoint", absl::StrCat("tcp://*:", n.kv_replay_port + i)}};
    // The recipe's flags first, in its order; then what tern adds.
    server.argv = {"vllm",
                   "serve",
                   config.model.path,
                   "--tensor-parallel-size",
                   absl::StrCat(n.tp),
                   "--enable-prefix-caching",
                   "--max-model-len",
                   absl::StrCat(plan.max_model_len),
                   "--max-num-batched-tokens",
                   absl::StrCat(last_prefill),
                   "--max-num-seqs",
                   absl::StrCat(n.max_num_seqs),
                   "--block-size",
                   absl::StrCat(n.block_size),
                   "--optimization-level",
                   absl::StrCat(n.optimization_level),
                   "--additional-config",
                   additional.dump(),
                   "--served-model-name",
                   plan.served_name,
                   "--host",
                   n.host,
                   "--port",
                   absl::StrCat(n.port + i),
                   "--kv-events-config",
                   events.dump()};
    server.argv.insert(server.argv.end(), n.extra_args.begin(), n.extra_args.end());
    server.env = {{"NEURON_RT_VISIBLE_CORES", server.visible_cores},
                  {"NEURON_LOGICAL_NC_CONFIG", absl::StrCat(n.lnc)},
                  {"PYTHONHASHSEED", kPythonHashSeed},
                  {"VLLM_CACHE_ROOT", n.cache_root},
                  {"VLLM_NEURON_COMPILATION_TIMEOUT", kTimeoutSeconds},
                  {"VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", kTimeoutSeconds}};
    if (!n.remote_cache.empty())
      server.env.emplace_back("NEURON_LIBTORCH_REMOTE_CACHE", n.remote_cache);
    server.url = absl::StrCat("http://", dial, ":", n.port + i);
    server.kv_events_endpoint = absl::StrCat("tcp://", dial, ":", n.kv_events_port + i);
    server.kv_replay_endpoint = absl::StrCat("tcp://", dial, ":", n.kv_replay_port + i);
    plan.servers.push_back(std::move(server));
  }
  return plan;
}

}  // namespace tern::cli
