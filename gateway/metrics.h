// The gateway's Prometheus metrics (docs/metrics.md, "Gateway"), served as
// text on GET /metrics: requests by endpoint and status, errors by OpenAI
// error type, requests in flight, open SSE streams, client disconnects,
// tokens, and the client's view of time to first token, inter-token
// latency, end-to-end latency and request lengths (vLLM's bucket edges);
// plus the process families every tier exports.
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

  // A response; one with status 400 or more (but not 499, the client went
  // away) also counts as an error of the OpenAI type that status maps to.
  void RecordRequest(std::string_view endpoint, int http_status);
  // An error sent inside an event stream that had started with 200.
  void RecordStreamError(std::string_view type);
  // Per API key (its name, never the key).
  void KeyAdmitted(const std::string& key);
  void KeyTokens(const std::string& key, int64_t tokens);
  void KeyRejected(const std::string& key, const std::string& limit);
  void StreamOpened();
  void StreamClosed();
  void ClientDisconnected();
  // HTTP connections: counted while open; refused by a cap (`reason`: the
  // cap's config key, e.g. "max_connections_per_client").
  void ConnectionOpened();
  void ConnectionClosed();
  void ConnectionRejected(std::string_view reason);
  void RequestStarted();
  void RequestFinished();
  void AddPromptTokens(int64_t tokens);
  void AddGenerationTokens(int64_t tokens);
  void ObserveTimeToFirstToken(absl::Duration latency);
  // `gap` since the previous token; a message of n tokens counts n gaps of gap/n.
  void ObserveInterTokenLatency(absl::Duration gap, int tokens);
  // Lengths of an answered request.
  void ObserveRequestTokens(int64_t prompt_tokens, int64_t generation_tokens);
  void ObserveRequestLatency(absl::Duration latency);

  // Prometheus text exposition format (version 0.0.4).
  std::string Serialize() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Counter>* errors_;
  prometheus::Family<prometheus::Counter>* key_requests_;
  prometheus::Family<prometheus::Counter>* key_tokens_;
  prometheus::Family<prometheus::Counter>* key_rejected_;
  prometheus::Gauge* in_flight_;
  prometheus::Gauge* active_streams_;
  prometheus::Counter* client_disconnects_;
  prometheus::Gauge* open_connections_;
  prometheus::Family<prometheus::Counter>* connections_rejected_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* e2e_;
  prometheus::Histogram* request_prompt_tokens_;
  prometheus::Histogram* request_generation_tokens_;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_METRICS_H_
