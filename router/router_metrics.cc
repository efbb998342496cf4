#include "router/router_metrics.h"

#include <prometheus/family.h>

#include <string>
#include <utility>

#include "common/metric_buckets.h"
#include "common/metrics_server.h"
#include "common/process_metrics.h"

namespace tern::router {
namespace {

using Samples = std::vector<std::pair<MetricLabels, double>>;

// Seconds: 1 µs to 100 ms, the range one routing decision falls in.
std::vector<double> DecisionBuckets() {
  return {1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 1e-1};
}

std::string CircuitStateLabel(const std::string& circuit) {
  return circuit == "half-open" ? "half_open" : circuit;
}

}  // namespace

RouterMetrics::RouterMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  queue_time_ = &prometheus::BuildHistogram()
                     .Name("tern_router_queue_time_seconds")
                     .Help("Time from admission to being bound to a worker (0 when bound at once).")
                     .Register(*registry_)
                     .Add({}, metric_buckets::RequestLatency());
  decision_time_ = &prometheus::BuildHistogram()
                        .Name("tern_router_routing_decision_seconds")
                        .Help("Time the router takes to bind or queue a request.")
                        .Register(*registry_)
                        .Add({}, DecisionBuckets());
}

void RouterMetrics::OnBound(absl::Duration queue_time) {
  queue_time_->Observe(absl::ToDoubleSeconds(queue_time));
}

void RouterMetrics::OnAdmitted(absl::Duration decision_time) {
  decision_time_->Observe(absl::ToDoubleSeconds(decision_time));
}

std::vector<prometheus::MetricFamily> RouterMetrics::Collect(const Fleet& fleet,
                                                             const RouterService& service) const {
  const tern::v1::ClusterStateResponse state = fleet.ClusterState();
  Samples healthy, circuit, inflight, running, waiting, kv_usage, cached, routed, predicted,
      reported;
  for (const auto& worker : state.workers()) {
    const MetricLabels labels = {{"worker", worker.address()}};
    healthy.push_back({{{"worker", worker.address()}, {"model", worker.model_id()}},
                       worker.healthy() ? 1.0 : 0.0});
    const std::string current = CircuitStateLabel(worker.circuit());
    for (const char* state_label : {"closed", "open", "half_open"}) {
      circuit.push_back({{{"worker", worker.address()}, {"state", state_label}},
                         current == state_label ? 1.0 : 0.0});
    }
    inflight.push_back({labels, static_cast<double>(worker.inflight())});
    cached.push_back({labels, static_cast<double>(worker.cached_blocks())});
    routed.push_back({labels, static_cast<double>(worker.routed_prompt_tokens())});
    predicted.push_back({labels, static_cast<double>(worker.predicted_cached_tokens())});
    reported.push_back({labels, static_cast<double>(worker.reported_cached_tokens())});
    if (worker.has_load()) {
      const tern::v1::WorkerLoad& load = worker.load();
      running.push_back({labels, static_cast<double>(load.running_seqs())});
      waiting.push_back({labels, static_cast<double>(load.waiting_seqs())});
      const double total = static_cast<double>(worker.kv_blocks_total());
      if (total > 0) {
        kv_usage.push_back(
            {labels,
             static_cast<double>(worker.kv_blocks_total() - load.free_kv_blocks()) / total});
      }
    }
  }
  const DispatcherStats stats = service.dispatcher().stats();
  const auto count = [](uint64_t v) { return Samples{{{}, static_cast<double>(v)}}; };
  Samples queue_depth;
  for (const auto& [priority, depth] : service.dispatcher().QueuedByPriority()) {
    queue_depth.push_back({{{"priority", std::to_string(priority)}}, static_cast<double>(depth)});
  }
  if (queue_depth.empty()) queue_depth.push_back({{{"priority", "0"}}, 0.0});
  Samples paced;
  for (const auto& [address, limit] : service.dispatcher().Paced()) {
    paced.push_back({{{"worker", address}}, static_cast<double>(limit)});
  }

  std::vector<prometheus::MetricFamily> families = {
      CounterFamily("tern_router_requests_total", "Generate calls received.",
                    count(service.requests_received())),
      GaugeFamily("tern_router_worker_healthy", "1 when the worker passes health checks.", healthy),
      GaugeFamily("tern_router_worker_circuit_state",
                  "1 for the state the worker's circuit breaker is in, 0 for the others.", circuit),
      GaugeFamily("tern_router_worker_inflight", "Requests the router has in flight on the worker.",
                  inflight),
      GaugeFamily("tern_router_worker_running_sequences",
                  "Sequences running on the worker, by its last load report.", running),
      GaugeFamily("tern_router_worker_waiting_sequences",
                  "Sequences waiting in the worker, by its last load report.", waiting),
      GaugeFamily("tern_router_worker_kv_cache_usage_ratio",
                  "Fraction of the worker's KV blocks held by sequences, by its last report.",
                  kv_usage),
      GaugeFamily("tern_router_worker_cached_blocks",
                  "Prefix blocks the worker holds, by its KV events.", cached),
      CounterFamily("tern_router_worker_routed_prompt_tokens_total",
                    "Prompt tokens routed to the worker.", routed),
      CounterFamily("tern_router_worker_predicted_cached_tokens_total",
                    "Prompt tokens routed to the worker that the router expected it to hold.",
                    predicted),
      CounterFamily("tern_router_worker_reported_cached_tokens_total",
                    "Prompt tokens routed to the worker that it reported found in its cache.",
                    reported),
      GaugeFamily("tern_router_queue_depth", "Requests waiting in the router's queues.",
                  queue_depth),
      CounterFamily("tern_router_dispatched_total", "Requests bound to a worker.",
                    count(stats.dispatched)),
      CounterFamily("tern_router_queued_total", "Requests that waited in the queue.",
                    count(stats.queued)),
      CounterFamily(
          "tern_router_rejected_total", "Requests turned away, by reason.",
          {{{{"reason", "queue_full"}}, static_cast<double>(stats.rejected_full)},
           {{{"reason", "predicted_wait"}}, static_cast<double>(stats.rejected_predicted)},
           {{{"reason", "queue_timeout"}}, static_cast<double>(stats.expired)},
           {{{"reason", "no_worker"}}, static_cast<double>(stats.no_worker)}}),
      CounterFamily("tern_router_overloads_total",
                    "Times a model became overloaded (router.overload_ttft_factor).",
                    count(stats.overloads)),
      CounterFamily("tern_router_pace_reductions_total",
                    "Times overload pacing lowered a worker's concurrency for its TTFT.",
                    count(stats.paced_down)),
      GaugeFamily("tern_router_worker_paced_limit",
                  "Calls overload pacing allows in flight on the worker (listed while held "
                  "below max_num_seqs + slack).",
                  paced),
      CounterFamily("tern_router_priority_promotions_total",
                    "Queued requests promoted ahead of every priority by max_priority_wait_ms.",
                    count(stats.promoted)),
      CounterFamily("tern_router_prefix_hits_total",
                    "Dispatches to a worker holding part of the prompt.", count(stats.cache_hits)),
      CounterFamily("tern_router_retries_total",
                    "Requests dispatched again after their worker failed before the first token.",
                    count(service.relay_counters().retries.load())),
      CounterFamily("tern_router_resumes_total",
                    "Streams resumed on another worker after theirs failed mid-stream.",
                    count(service.relay_counters().resumes.load())),
      CounterFamily("tern_router_index_resyncs_total", "KV event gaps that re-subscribed a worker.",
                    count(state.index_resyncs())),
  };
  for (prometheus::MetricFamily& family : registry_->Collect()) {
    families.push_back(std::move(family));
  }
  for (prometheus::MetricFamily& family : ProcessMetricFamilies("router")) {
    families.push_back(std::move(family));
  }
  return families;
}

}  // namespace tern::router
