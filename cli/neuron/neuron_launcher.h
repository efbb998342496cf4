// Runs the `vllm serve` processes of a NeuronPlan and keeps them running,
// for `tern-worker --engine vllm --launch`: each server is started with its
// environment (NEURON_RT_VISIBLE_CORES and the rest) on top of the worker's;
// one that exits is started again after a backoff that doubles from 1 s to
// 60 s and resets once a run lasted a minute. Readiness is not judged here:
// the worker's engine for each server waits for its /health (vLLM answers
// only once its warm-up compile is done). "vllm" is looked up in PATH.
//
// Unverified on hardware: no plan has been run on a trn2 instance yet.
//
// Thread contract: Start and Stop from one thread (the owner's); the
// launcher's own thread owns the processes.
#ifndef TERN_CLI_NEURON_NEURON_LAUNCHER_H_
#define TERN_CLI_NEURON_NEURON_LAUNCHER_H_

#include <atomic>
#include <chrono>
#include <thread>

#include "absl/status/status.h"
#include "cli/neuron/neuron_plan.h"

namespace tern::cli {

class NeuronLauncher {
 public:
  explicit NeuronLauncher(NeuronPlan plan) : plan_(std::move(plan)) {}
  // Stops the servers (as Stop with a 30 s grace) if Stop was not called.
  ~NeuronLauncher();

  NeuronLauncher(const NeuronLauncher&) = delete;
  NeuronLauncher& operator=(const NeuronLauncher&) = delete;

  // Starts every server and the thread that restarts them.
  absl::Status Start();
  // SIGTERM to every server, SIGKILL to those alive after `grace`; returns
  // once they are gone.
  void Stop(std::chrono::milliseconds grace);

  // Servers started again after they exited, since Start.
  int restarts() const { return restarts_.load(); }

 private:
  void Run();

  const NeuronPlan plan_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> grace_ms_{30000};
  std::atomic<int> restarts_{0};
};

}  // namespace tern::cli

#endif  // TERN_CLI_NEURON_NEURON_LAUNCHER_H_
