#include "worker/worker_metrics.h"

#include "common/metrics_server.h"

namespace tern::worker {

std::vector<prometheus::MetricFamily> CollectWorkerMetrics(const Engine& engine) {
  const EngineLoad load = engine.Load();
  const auto finished = [&](FinishReason reason) {
    return static_cast<double>(load.finished[static_cast<size_t>(reason)]);
  };
  return {
      GaugeFamily("tern_worker_running_sequences", "Sequences in the running batch.",
                  {{{}, static_cast<double>(load.running)}}),
      GaugeFamily("tern_worker_waiting_sequences", "Sequences queued for a slot.",
                  {{{}, static_cast<double>(load.waiting)}}),
      CounterFamily("tern_worker_engine_steps_total", "Engine loop steps.",
                    {{{}, static_cast<double>(load.steps)}}),
      CounterFamily("tern_worker_prompt_tokens_total", "Prompt tokens computed.",
                    {{{}, static_cast<double>(load.prompt_tokens)}}),
      CounterFamily("tern_worker_generation_tokens_total", "Tokens sampled.",
                    {{{}, static_cast<double>(load.generation_tokens)}}),
      CounterFamily("tern_worker_requests_total", "Finished sequences by finish reason.",
                    {{{{"finish_reason", "stop"}}, finished(FinishReason::kStop)},
                     {{{"finish_reason", "length"}}, finished(FinishReason::kLength)},
                     {{{"finish_reason", "cancelled"}}, finished(FinishReason::kCancelled)},
                     {{{"finish_reason", "error"}}, finished(FinishReason::kError)}}),
  };
}

}  // namespace tern::worker
