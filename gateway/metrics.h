// The gateway's Prometheus metrics, served as text on GET /metrics.
//
//   tern_gateway_requests_total{endpoint, status}   requests answered, by HTTP status
//                                                   ("499": the client went away)
//   tern_gateway_requests_in_flight                 generation requests being served
//   tern_gateway_prompt_tokens_total                prompt tokens sent to the router
//   tern_gateway_generation_tokens_total            tokens received from the router
//   tern_gateway_time_to_first_token_seconds        request received -> first token
//   tern_gateway_e2e_request_latency_seconds        request received -> last byte queued
//
// Thread-safe (prometheus-cpp metrics are atomic; families lock internally).
#ifndef TERN_GATEWAY_METRICS_H_
#define TERN_GATEWAY_METRICS_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/time/time.h"

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace tern::gateway {

class GatewayMetrics {
 public:
  GatewayMetrics();
  ~GatewayMetrics();

  GatewayMetrics(const GatewayMetrics&) = delete;
  GatewayMetrics& operator=(const GatewayMetrics&) = delete;

  void RecordRequest(std::string_view endpoint, int http_status);
  void RequestStarted();
  void RequestFinished();
  void AddPromptTokens(int64_t tokens);
  void AddGenerationTokens(int64_t tokens);
  void ObserveTimeToFirstToken(absl::Duration latency);
  void ObserveRequestLatency(absl::Duration latency);

  // Prometheus text exposition format (version 0.0.4).
  std::string Serialize() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Gauge* in_flight_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* e2e_;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_METRICS_H_
