// Renders a NeuronPlan: as shell commands with comments for a person, or as
// JSON (each server's argv array and env map) for a launcher or a test.
// Pure functions; any thread.
#ifndef TERN_CLI_NEURON_NEURON_PLAN_PRINTER_H_
#define TERN_CLI_NEURON_NEURON_PLAN_PRINTER_H_

#include <string>

#include "cli/neuron/neuron_plan.h"

namespace tern::cli {

// One `ENV=... vllm serve ...` command per server, each preceded by comments
// saying what was derived from what and what the tern worker connects to.
std::string RenderNeuronPlanText(const NeuronPlan& plan);

// {"unverified_on_hardware": true, ..., "servers": [{"argv": [...],
// "env": {...}, "url": ..., "kv_events_endpoint": ..., ...}]}
std::string RenderNeuronPlanJson(const NeuronPlan& plan);

// `arg` as one shell word: unchanged when it is safe, else single-quoted.
std::string ShellQuote(const std::string& arg);

}  // namespace tern::cli

#endif  // TERN_CLI_NEURON_NEURON_PLAN_PRINTER_H_
