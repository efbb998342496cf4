#include "cli/neuron/neuron_plan_printer.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace tern::cli {

std::string ShellQuote(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789_./:=@,+-") == std::string::npos) {
    return arg;
  }
  return absl::StrCat("'", absl::StrReplaceAll(arg, {{"'", "'\\''"}}), "'");
}

std::string RenderNeuronPlanText(const NeuronPlan& plan) {
  std::string out = absl::StrCat(
      "# tern neuron plan: vLLM Neuron on one ", plan.instance_type, " (UNVERIFIED ON HARDWARE)\n",
      "# model ", plan.model, ", served as ", plan.served_name, "\n", "# ", plan.servers.size(),
      " servers x TP", plan.tp, " = ", plan.logical_cores, " logical NeuronCores at LNC=", plan.lnc,
      "; each server pinned to its own range\n", "# --max-model-len ", plan.max_model_len,
      " covers the gateway's context limit: model.max_model_len = ", plan.gateway_max_model_len,
      "\n#   (the tern worker reports it; the gateway admits prompt + completion up to it)\n",
      "# FP8 checkpoint: ", plan.fp8 ? "yes" : "no", " (", plan.fp8_source, ") -> fp8_packed_kv ",
      plan.fp8 ? "true" : "false", "; no --quantization\n", "# block size ", plan.block_size,
      ": the router hashes prompts for these servers in blocks of this size\n",
      "# Run each command as its own process.\n");
  for (const NeuronServer& server : plan.servers) {
    absl::StrAppend(&out, "\n# server ", server.index, ": cores ", server.visible_cores, ", ",
                    server.url, "\n# tern worker: KV events ", server.kv_events_endpoint,
                    ", replay ", server.kv_replay_endpoint, "\n");
    for (const auto& [name, value] : server.env) {
      absl::StrAppend(&out, name, "=", ShellQuote(value), " \\\n");
    }
    // "vllm serve MODEL", then one flag with its value per line.
    absl::StrAppend(&out, server.argv[0]);
    for (size_t i = 1; i < server.argv.size(); ++i) {
      const std::string& arg = server.argv[i];
      const bool new_line = i >= 3 && arg.rfind("-", 0) == 0;
      absl::StrAppend(&out, new_line ? " \\\n    " : " ", ShellQuote(arg));
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

std::string RenderNeuronPlanJson(const NeuronPlan& plan) {
  nlohmann::ordered_json servers = nlohmann::ordered_json::array();
  for (const NeuronServer& server : plan.servers) {
    nlohmann::ordered_json env = nlohmann::ordered_json::object();
    for (const auto& [name, value] : server.env) env[name] = value;
    servers.push_back({{"index", server.index},
                       {"argv", server.argv},
                       {"env", env},
                       {"visible_cores", server.visible_cores},
                       {"url", server.url},
                       {"kv_events_endpoint", server.kv_events_endpoint},
                       {"kv_replay_endpoint", server.kv_replay_endpoint}});
  }
  const nlohmann::ordered_json json = {{"unverified_on_hardware", true},
                                       {"instance_type", plan.instance_type},
                                       {"model", plan.model},
                                       {"served_name", plan.served_name},
                                       {"lnc", plan.lnc},
                                       {"logical_cores", plan.logical_cores},
                                       {"tp", plan.tp},
                                       {"max_model_len", plan.max_model_len},
                                       {"gateway_max_model_len", plan.gateway_max_model_len},
                                       {"block_size", plan.block_size},
                                       {"fp8", plan.fp8},
                                       {"fp8_source", plan.fp8_source},
                                       {"servers", servers}};
  return json.dump(2) + "\n";
}

}  // namespace tern::cli
