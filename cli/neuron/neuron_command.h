// `tern neuron plan --config tern.yaml [--format text|json]`: prints the
// vLLM Neuron servers for one trn2.48xlarge that the config describes
// (cli/neuron/neuron_plan.h). Unverified on hardware. Call from main only.
#ifndef TERN_CLI_NEURON_NEURON_COMMAND_H_
#define TERN_CLI_NEURON_NEURON_COMMAND_H_

namespace tern::cli {

// Flags start at argv[first] (the verb: "plan"). Returns the exit status:
// 0, 1 when a file cannot be read, 2 for bad flags or a config the plan rejects.
int RunNeuronCommand(int argc, char** argv, int first);

}  // namespace tern::cli

#endif  // TERN_CLI_NEURON_NEURON_COMMAND_H_
