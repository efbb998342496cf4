#include "cli/neuron/neuron_command.h"

#include <iostream>
#include <string>

#include "cli/neuron/neuron_plan.h"
#include "cli/neuron/neuron_plan_printer.h"
#include "common/config.h"
#include "common/flags.h"

namespace tern::cli {
namespace {

constexpr char kUsage[] =
    "usage: tern neuron plan --config FILE [--format text|json]\n"
    "  Prints the `vllm serve` commands and environment for vLLM Neuron on one\n"
    "  trn2.48xlarge, derived from the model and neuron sections of FILE, or every\n"
    "  rule the config breaks (exit 2). Unverified on hardware.\n"
    "  --format text   shell commands with comments (default)\n"
    "  --format json   each server's argv array and env map, for a launcher\n";

}  // namespace

int RunNeuronCommand(int argc, char** argv, int first) {
  if (first >= argc || std::string(argv[first]) != "plan") {
    const bool help = first < argc &&
                      (std::string(argv[first]) == "--help" || std::string(argv[first]) == "help");
    (help ? std::cout : std::cerr) << kUsage;
    return help ? 0 : 2;
  }
  auto flags = Flags::Parse(argc, argv, first + 1, {"config", "format"}, {"help"});
  if (!flags.ok()) {
    std::cerr << "tern neuron plan: " << flags.status().message() << "\n" << kUsage;
    return 2;
  }
  if (flags->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  const std::string format = flags->GetOr("format", "text");
  if (!flags->Has("config") || (format != "text" && format != "json")) {
    std::cerr << "tern neuron plan: --config FILE is required and --format is text or json\n"
              << kUsage;
    return 2;
  }
  absl::StatusOr<ClusterConfig> config = LoadClusterConfig(*flags->Get("config"));
  if (!config.ok()) {
    std::cerr << "tern neuron plan: " << config.status().message() << "\n";
    return config.status().code() == absl::StatusCode::kNotFound ? 1 : 2;
  }
  absl::StatusOr<CheckpointFacts> checkpoint = ReadCheckpointFacts(config->model.path);
  if (!checkpoint.ok()) {
    std::cerr << "tern neuron plan: " << checkpoint.status().message() << "\n";
    return 1;
  }
  absl::StatusOr<NeuronPlan> plan = PlanNeuronServers(*config, *checkpoint);
  if (!plan.ok()) {
    std::cerr << "tern neuron plan: " << plan.status().message() << "\n";
    return 2;
  }
  std::cout << (format == "json" ? RenderNeuronPlanJson(*plan) : RenderNeuronPlanText(*plan));
  return 0;
}

}  // namespace tern::cli
