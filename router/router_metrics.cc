#include "router/router_metrics.h"

#include "common/metrics_server.h"

namespace tern::router {

std::vector<prometheus::MetricFamily> CollectRouterMetrics(const Fleet& fleet,
                                                           const RouterService& service) {
  const tern::v1::ClusterStateResponse state = fleet.ClusterState();
  std::vector<std::pair<MetricLabels, double>> healthy;
  std::vector<std::pair<MetricLabels, double>> inflight;
  for (const auto& worker : state.workers()) {
    healthy.push_back({{{"worker", worker.address()}, {"model", worker.model_id()}},
                       worker.healthy() ? 1.0 : 0.0});
    inflight.push_back({{{"worker", worker.address()}}, static_cast<double>(worker.inflight())});
  }
  return {
      CounterFamily("tern_router_requests_total", "Generate calls received.",
                    {{{}, static_cast<double>(service.requests_received())}}),
      GaugeFamily("tern_router_worker_healthy", "1 when the worker passes health checks.", healthy),
      GaugeFamily("tern_router_worker_inflight", "Requests the router has in flight on the worker.",
                  inflight),
  };
}

}  // namespace tern::router
