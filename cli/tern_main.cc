// tern: the operator's command. `tern up` runs a local cluster, `tern model`
// makes and inspects checkpoints, `tern bench` measures, `tern neuron plan`
// renders the vLLM Neuron servers for a trn2 instance, `tern keys` manages
// the gateway's API keys.
#include <cstring>
#include <iostream>

#include "cli/bench/bench_command.h"
#include "cli/keys_command.h"
#include "cli/model/model_command.h"
#include "cli/neuron/neuron_command.h"
#include "cli/status_command.h"
#include "cli/up_command.h"

namespace {

constexpr char kUsage[] =
    "usage: tern <command> [flags]\n"
    "  up      start a local cluster (workers, router, gateway) in the foreground\n"
    "  model   synth: write a synthetic checkpoint; inspect: check a checkpoint\n"
    "  bench   engine: the worker's engine against llama.cpp on this machine;\n"
    "          serve: an OpenAI HTTP load generator; simulate: the router against\n"
    "          simulated fleets\n"
    "  status  the router's view of the cluster: workers, health, load, cache\n"
    "  keys    add, list, remove the gateway's API keys (stored as salted hashes)\n"
    "  neuron  plan: the vLLM Neuron `vllm serve` commands for one trn2.48xlarge\n"
    "          (unverified on hardware)\n"
    "Run `tern <command> --help` for its flags.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "help")) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (command == "up") return tern::cli::RunUpCommand(argc, argv, 2);
  if (command == "model") return tern::cli::RunModelCommand(argc, argv, 2);
  if (command == "bench") return tern::cli::RunBenchCommand(argc, argv, 2);
  if (command == "neuron") return tern::cli::RunNeuronCommand(argc, argv, 2);
  if (command == "status") return tern::cli::RunStatus(argc - 1, argv + 1);
  if (command == "keys") return tern::cli::RunKeysCommand(argc, argv, 2);
  std::cerr << "tern: unknown command '" << command << "'\n" << kUsage;
  return 2;
}
