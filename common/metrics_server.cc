#include "common/metrics_server.h"

#include <prometheus/exposer.h>

#include <exception>

#include "absl/strings/str_cat.h"

namespace tern {
namespace {

class FunctionCollectable : public prometheus::Collectable {
 public:
  explicit FunctionCollectable(MetricsFunction collect) : collect_(std::move(collect)) {}
  std::vector<prometheus::MetricFamily> Collect() const override { return collect_(); }

 private:
  const MetricsFunction collect_;
};

prometheus::MetricFamily Family(const std::string& name, const std::string& help,
                                prometheus::MetricType type,
                                const std::vector<std::pair<MetricLabels, double>>& samples) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  for (const auto& [labels, value] : samples) {
    prometheus::ClientMetric metric;
    for (const auto& [key, label_value] : labels) metric.label.push_back({key, label_value});
    if (type == prometheus::MetricType::Counter) {
      metric.counter.value = value;
    } else {
      metric.gauge.value = value;
    }
    family.metric.push_back(std::move(metric));
  }
  return family;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen,
                                                                    MetricsFunction collect) {
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  try {
    server->exposer_ = std::make_unique<prometheus::Exposer>(listen);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve /metrics on ", listen, ": ", e.what()));
  }
  server->collectable_ = std::make_shared<FunctionCollectable>(std::move(collect));
  server->exposer_->RegisterCollectable(server->collectable_);
  const auto ports = server->exposer_->GetListeningPorts();
  server->port_ = ports.empty() ? 0 : ports.front();
  return server;
}

MetricsServer::~MetricsServer() = default;

prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help,
                                     const std::vector<std::pair<MetricLabels, double>>& samples) {
  return Family(name, help, prometheus::MetricType::Gauge, samples);
}

prometheus::MetricFamily CounterFamily(
    const std::string& name, const std::string& help,
    const std::vector<std::pair<MetricLabels, double>>& samples) {
  return Family(name, help, prometheus::MetricType::Counter, samples);
}

}  // namespace tern
