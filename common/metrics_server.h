// Prometheus /metrics for the router and worker processes: an HTTP endpoint
// (prometheus-cpp's pull exposer) whose families are computed at scrape time
// by a function, so values come straight from the owning objects' state.
// Start and the destructor run on the main thread; the function runs on the
// exposer's threads and must be thread-safe.
#ifndef TERN_COMMON_METRICS_SERVER_H_
#define TERN_COMMON_METRICS_SERVER_H_

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
}

namespace tern {

using MetricsFunction = std::function<std::vector<prometheus::MetricFamily>()>;

class MetricsServer {
 public:
  // Listens on HOST:PORT (port 0 picks one). UNAVAILABLE when it cannot bind.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                              MetricsFunction collect);
  ~MetricsServer();

  int port() const { return port_; }

 private:
  MetricsServer() = default;

  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Collectable> collectable_;
  int port_ = 0;
};

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// One family of gauges or counters with a sample per label set.
prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help,
                                     const std::vector<std::pair<MetricLabels, double>>& samples);
prometheus::MetricFamily CounterFamily(const std::string& name, const std::string& help,
                                       const std::vector<std::pair<MetricLabels, double>>& samples);

}  // namespace tern

#endif  // TERN_COMMON_METRICS_SERVER_H_
