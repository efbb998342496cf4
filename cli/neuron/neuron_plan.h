// The vLLM Neuron serve setup for one trn2.48xlarge, derived from tern.yaml
// (model + neuron sections) so that its parts cannot disagree: servers × TP
// fill the instance's logical NeuronCores, each server pinned to its own
// range; --max-num-batched-tokens is the last prefill bucket; the KV segment
// buckets are the prefill buckets; --max-model-len covers what the gateway
// admits; an FP8 checkpoint gets a packed FP8 KV cache; KV events are on,
// with ports per server that the tern worker subscribes to.
//
// The facts come from AWS's Llama 3.3 70B FP8 recipe for vLLM Neuron (SDK
// 2.32) and the Neuron runtime docs. Everything here is unverified on
// hardware: no plan has been run on a trn2 instance yet.
//
// PlanNeuronServers is a pure function: no I/O, any thread. ReadCheckpointFacts
// reads one file.
#ifndef TERN_CLI_NEURON_NEURON_PLAN_H_
#define TERN_CLI_NEURON_NEURON_PLAN_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"

namespace tern::cli {

// What the checkpoint's config.json says that the plan depends on.
struct CheckpointFacts {
  // False when model.path has no config.json (e.g. a Hugging Face repo id).
  bool has_config = false;
  // quantization_config.quant_method "modelopt" with quant_algo "FP8".
  bool fp8 = false;
  // How the checkpoint is quantized, for messages: "modelopt FP8", "none".
  std::string quantization = "none";
  // 0: not stated.
  int32_t max_position_embeddings = 0;
};

// Reads <model_path>/config.json. A missing file gives has_config = false;
// INVALID_ARGUMENT naming the file when it is not JSON.
absl::StatusOr<CheckpointFacts> ReadCheckpointFacts(const std::string& model_path);

// One `vllm serve` process.
struct NeuronServer {
  int32_t index = 0;
  // argv[0] is "vllm".
  std::vector<std::string> argv;
  // In the order printed.
  std::vector<std::pair<std::string, std::string>> env;
  // NEURON_RT_VISIBLE_CORES, e.g. "16-31".
  std::string visible_cores;
  // What the tern worker connects to: the HTTP base URL, the KV events PUB
  // socket and the replay socket.
  std::string url;
  std::string kv_events_endpoint;
  std::string kv_replay_endpoint;
};

struct NeuronPlan {
  std::string model;
  std::string served_name;
  std::string instance_type;
  int32_t lnc = 0;
  int32_t logical_cores = 0;
  int32_t tp = 0;
  // --max-model-len, and the gateway's context limit (model.max_model_len)
  // it covers.
  int32_t max_model_len = 0;
  int32_t gateway_max_model_len = 0;
  int32_t block_size = 0;
  bool fp8 = false;
  // Where `fp8` came from: "neuron.fp8" or "model.path/config.json".
  std::string fp8_source;
  std::vector<NeuronServer> servers;
};

// The plan, or INVALID_ARGUMENT listing every rule the config breaks, one per
// line, each naming the fields involved.
absl::StatusOr<NeuronPlan> PlanNeuronServers(const ClusterConfig& config,
                                             const CheckpointFacts& checkpoint);

}  // namespace tern::cli

#endif  // TERN_CLI_NEURON_NEURON_PLAN_H_
