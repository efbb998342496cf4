// The worker's Prometheus metrics (docs/metrics.md, "Worker"): gauges and
// counters computed from Engine::Load at scrape time, under tern's names and
// under the four vLLM names of the Gateway API Inference Extension's
// model-server protocol; histograms fed by the engine as an EngineObserver
// (step duration and batch size; time to first token, inter-token latency,
// end-to-end latency, queue time and request lengths, as the engine sees
// them); and the process families every tier exports.
//
// Thread contract: the observer methods run on the engine thread, Collect
// on the metrics server's threads; prometheus-cpp's histograms are
// thread-safe and Engine::Load is.
#ifndef TERN_WORKER_WORKER_METRICS_H_
#define TERN_WORKER_WORKER_METRICS_H_

#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/metrics_server.h"
#include "worker/engine/sequence.h"
#include "worker/engine/serving_engine.h"

namespace tern::worker {

class WorkerMetrics final : public EngineObserver {
 public:
  // `model_name` labels every family (vLLM's `model_name`); a non-empty
  // `engine` adds the label engine (a process fronting several vLLM servers
  // reports each as its own engine, as vLLM labels its engine cores).
  explicit WorkerMetrics(std::string model_name, std::string engine = "");

  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  void OnStep(const StepReport& step) override;
  void OnInterTokenLatency(absl::Duration gap) override;
  void OnSequenceFinished(const SequenceReport& sequence) override;
  void OnConstraintMask(absl::Duration duration) override;

  // Everything above, with the engine's current load, and the process families.
  std::vector<prometheus::MetricFamily> Collect(const ServingEngine& engine) const;
  // The same without the process families.
  std::vector<prometheus::MetricFamily> CollectEngine(const ServingEngine& engine) const;

 private:
  const MetricLabels labels_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Histogram* step_duration_;
  prometheus::Histogram* batch_size_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* e2e_;
  prometheus::Histogram* queue_time_;
  prometheus::Histogram* prompt_tokens_;
  prometheus::Histogram* generation_tokens_;
  prometheus::Histogram* constraint_mask_;
};

// Several engines of one process in one scrape: families of the same name
// merged, then the process families once.
std::vector<prometheus::MetricFamily> CollectWorkerMetrics(
    const std::vector<std::pair<const WorkerMetrics*, const ServingEngine*>>& engines);

}  // namespace tern::worker

#endif  // TERN_WORKER_WORKER_METRICS_H_
