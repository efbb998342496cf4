#include "router/router_metrics.h"

#include "common/metrics_server.h"

namespace tern::router {

std::vector<prometheus::MetricFamily> CollectRouterMetrics(const Fleet& fleet,
                                                           const RouterService& service) {
  const tern::v1::ClusterStateResponse state = fleet.ClusterState();
  std::vector<std::pair<MetricLabels, double>> healthy;
  std::vector<std::pair<MetricLabels, double>> inflight;
  std::vector<std::pair<MetricLabels, double>> cached;
  for (const auto& worker : state.workers()) {
    healthy.push_back({{{"worker", worker.address()}, {"model", worker.model_id()}},
                       worker.healthy() ? 1.0 : 0.0});
    inflight.push_back({{{"worker", worker.address()}}, static_cast<double>(worker.inflight())});
    cached.push_back({{{"worker", worker.address()}}, static_cast<double>(worker.cached_blocks())});
  }
  const DispatcherStats stats = service.dispatcher().stats();
  auto count = [](uint64_t v) {
    return std::vector<std::pair<MetricLabels, double>>{{{}, static_cast<double>(v)}};
  };
  return {
      CounterFamily("tern_router_requests_total", "Generate calls received.",
                    count(service.requests_received())),
      GaugeFamily("tern_router_worker_healthy", "1 when the worker passes health checks.", healthy),
      GaugeFamily("tern_router_worker_inflight", "Requests the router has in flight on the worker.",
                  inflight),
      GaugeFamily("tern_router_worker_cached_blocks",
                  "Prefix blocks the worker holds, by its KV events.", cached),
      GaugeFamily("tern_router_queue_depth", "Requests waiting in the router's queues.",
                  count(service.dispatcher().queued())),
      CounterFamily("tern_router_dispatched_total", "Requests bound to a worker.",
                    count(stats.dispatched)),
      CounterFamily("tern_router_queued_total", "Requests that waited in the queue.",
                    count(stats.queued)),
      CounterFamily("tern_router_rejected_total",
                    "Requests turned away: queue full or waited too long.",
                    count(stats.rejected_full + stats.expired)),
      CounterFamily("tern_router_prefix_hits_total",
                    "Dispatches to a worker holding part of the prompt.", count(stats.cache_hits)),
      CounterFamily("tern_router_index_resyncs_total", "KV event gaps that re-subscribed a worker.",
                    count(state.index_resyncs())),
  };
}

}  // namespace tern::router
