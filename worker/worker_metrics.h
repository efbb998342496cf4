// The worker's Prometheus metrics, computed from the engine at scrape time:
//   tern_worker_running_sequences, tern_worker_waiting_sequences   gauges
//   tern_worker_engine_steps_total                                   counter
//   tern_worker_prompt_tokens_total, tern_worker_generation_tokens_total
//   tern_worker_requests_total{finish_reason}                        counter
//   tern_worker_kv_blocks_{total,free,cached}                        gauges
//   tern_worker_queued_prefill_tokens                                gauge
//   tern_worker_preemptions_total                                    counter
//   tern_worker_prefix_cache_{query,hit}_tokens_total                counters
// Thread-safe (Engine::Load is).
#ifndef TERN_WORKER_WORKER_METRICS_H_
#define TERN_WORKER_WORKER_METRICS_H_

#include <prometheus/metric_family.h>

#include <vector>

#include "worker/engine/engine.h"

namespace tern::worker {

std::vector<prometheus::MetricFamily> CollectWorkerMetrics(const Engine& engine);

}  // namespace tern::worker

#endif  // TERN_WORKER_WORKER_METRICS_H_
