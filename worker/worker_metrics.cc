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
      GaugeFamily("tern_worker_kv_blocks_total", "Blocks in the paged KV pool.",
                  {{{}, static_cast<double>(load.total_kv_blocks)}}),
      GaugeFamily("tern_worker_kv_blocks_free",
                  "KV blocks an allocation may take now (unreferenced cached ones included).",
                  {{{}, static_cast<double>(load.free_kv_blocks)}}),
      GaugeFamily("tern_worker_kv_blocks_cached", "KV blocks in the prefix cache.",
                  {{{}, static_cast<double>(load.cached_kv_blocks)}}),
      GaugeFamily("tern_worker_queued_prefill_tokens",
                  "Prompt tokens of running and waiting sequences not computed yet.",
                  {{{}, static_cast<double>(load.queued_prefill_tokens)}}),
      CounterFamily("tern_worker_preemptions_total",
                    "Sequences preempted (blocks freed, recomputed later) for lack of KV blocks.",
                    {{{}, static_cast<double>(load.preemptions)}}),
      CounterFamily("tern_worker_prefix_cache_query_tokens_total",
                    "Prompt tokens looked up in the prefix cache.",
                    {{{}, static_cast<double>(load.prefix_query_tokens)}}),
      CounterFamily("tern_worker_prefix_cache_hit_tokens_total",
                    "Prompt tokens found in the prefix cache.",
                    {{{}, static_cast<double>(load.prefix_hit_tokens)}}),
      CounterFamily("tern_worker_requests_total", "Finished sequences by finish reason.",
                    {{{{"finish_reason", "stop"}}, finished(FinishReason::kStop)},
                     {{{"finish_reason", "length"}}, finished(FinishReason::kLength)},
                     {{{"finish_reason", "cancelled"}}, finished(FinishReason::kCancelled)},
                     {{{"finish_reason", "error"}}, finished(FinishReason::kError)}}),
  };
}

}  // namespace tern::worker
