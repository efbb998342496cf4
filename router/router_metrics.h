// The router's Prometheus metrics (docs/metrics.md, "Router"): per-worker
// health, circuit, load, cached blocks and prefix-hit accounting from the
// fleet's ClusterState, dispatch, failover and priority-promotion counters, queue
// depth by priority, computed at scrape time; the queue-time and routing-decision
// histograms, fed by the dispatcher as its DispatchObserver; and the process
// families every tier exports.
//
// Thread contract: the observer methods run on the dispatcher's callers'
// threads, Collect on the metrics server's; all are thread-safe.
#ifndef TERN_ROUTER_ROUTER_METRICS_H_
#define TERN_ROUTER_ROUTER_METRICS_H_

#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <memory>
#include <vector>

#include "router/core/dispatcher.h"
#include "router/fleet.h"
#include "router/router_service.h"

namespace tern::router {

class RouterMetrics final : public DispatchObserver {
 public:
  RouterMetrics();

  RouterMetrics(const RouterMetrics&) = delete;
  RouterMetrics& operator=(const RouterMetrics&) = delete;

  void OnBound(absl::Duration queue_time) override;
  void OnAdmitted(absl::Duration decision_time) override;

  std::vector<prometheus::MetricFamily> Collect(const Fleet& fleet,
                                                const RouterService& service) const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Histogram* queue_time_;
  prometheus::Histogram* decision_time_;
};

}  // namespace tern::router

#endif  // TERN_ROUTER_ROUTER_METRICS_H_
