// The router's Prometheus metrics, computed at scrape time:
//   tern_router_requests_total                      Generate calls received
//   tern_router_worker_healthy{worker, model}       1 when healthy
//   tern_router_worker_inflight{worker}             requests relayed to it now
//   tern_router_worker_cached_blocks{worker}        prefix blocks it holds (KV events)
//   tern_router_queue_depth                         requests waiting for a worker
//   tern_router_{dispatched,queued,rejected,prefix_hits,index_resyncs}_total
// Thread-safe.
#ifndef TERN_ROUTER_ROUTER_METRICS_H_
#define TERN_ROUTER_ROUTER_METRICS_H_

#include <prometheus/metric_family.h>

#include <vector>

#include "router/fleet.h"
#include "router/router_service.h"

namespace tern::router {

std::vector<prometheus::MetricFamily> CollectRouterMetrics(const Fleet& fleet,
                                                           const RouterService& service);

}  // namespace tern::router

#endif  // TERN_ROUTER_ROUTER_METRICS_H_
