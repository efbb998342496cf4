#include "gateway/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <string>
#include <utility>

#include "common/metric_buckets.h"
#include "common/process_metrics.h"
#include "gateway/http/api_error.h"

namespace tern::gateway {
namespace {

prometheus::Histogram* AddHistogram(prometheus::Registry& registry, const std::string& name,
                                    const std::string& help, std::vector<double> buckets) {
  return &prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add(
      {}, std::move(buckets));
}

}  // namespace

GatewayMetrics::GatewayMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  requests_ = &prometheus::BuildCounter()
                   .Name("tern_gateway_requests_total")
                   .Help("HTTP requests answered, by endpoint and status code")
                   .Register(r);
  errors_ = &prometheus::BuildCounter()
                 .Name("tern_gateway_errors_total")
                 .Help("Error responses, by OpenAI error type")
                 .Register(r);
  in_flight_ = &prometheus::BuildGauge()
                    .Name("tern_gateway_requests_in_flight")
                    .Help("Generation requests being served")
                    .Register(r)
                    .Add({});
  active_streams_ = &prometheus::BuildGauge()
                         .Name("tern_gateway_active_streams")
                         .Help("Server-sent event streams open")
                         .Register(r)
                         .Add({});
  key_requests_ = &prometheus::BuildCounter()
                       .Name("tern_gateway_key_requests_total")
                       .Help("Generation requests admitted, by API key name.")
                       .Register(*registry_);
  key_tokens_ = &prometheus::BuildCounter()
                     .Name("tern_gateway_key_tokens_total")
                     .Help("Prompt plus completion tokens, by API key name.")
                     .Register(*registry_);
  key_rejected_ = &prometheus::BuildCounter()
                       .Name("tern_gateway_key_rejected_total")
                       .Help("Requests refused by a per-key limit, by key name and limit.")
                       .Register(*registry_);
  open_connections_ = &prometheus::BuildGauge()
                           .Name("tern_gateway_open_connections")
                           .Help("HTTP connections open (counted against the connection caps)")
                           .Register(r)
                           .Add({});
  connections_rejected_ = &prometheus::BuildCounter()
                               .Name("tern_gateway_connections_rejected_total")
                               .Help("HTTP connections closed at accept by a cap, by reason")
                               .Register(r);
  client_disconnects_ = &prometheus::BuildCounter()
                             .Name("tern_gateway_client_disconnects_total")
                             .Help("Requests whose client went away before the answer was complete")
                             .Register(r)
                             .Add({});
  prompt_tokens_ = &prometheus::BuildCounter()
                        .Name("tern_gateway_prompt_tokens_total")
                        .Help("Prompt tokens sent to the router")
                        .Register(r)
                        .Add({});
  generation_tokens_ = &prometheus::BuildCounter()
                            .Name("tern_gateway_generation_tokens_total")
                            .Help("Generated tokens received from the router")
                            .Register(r)
                            .Add({});
  ttft_ = AddHistogram(r, "tern_gateway_time_to_first_token_seconds",
                       "Time from receiving a request to its first generated token",
                       metric_buckets::TimeToFirstToken());
  itl_ = AddHistogram(r, "tern_gateway_inter_token_latency_seconds",
                      "Time between consecutive generated tokens of a request",
                      metric_buckets::InterTokenLatency());
  e2e_ = AddHistogram(r, "tern_gateway_e2e_request_latency_seconds",
                      "Time from receiving a generation request to its last response byte queued",
                      metric_buckets::RequestLatency());
  request_prompt_tokens_ = AddHistogram(r, "tern_gateway_request_prompt_tokens",
                                        "Prompt length of answered generation requests, in tokens",
                                        metric_buckets::RequestTokens());
  request_generation_tokens_ = AddHistogram(r, "tern_gateway_request_generation_tokens",
                                            "Tokens generated for answered generation requests",
                                            metric_buckets::RequestTokens());
}

GatewayMetrics::~GatewayMetrics() = default;

void GatewayMetrics::RecordRequest(std::string_view endpoint, int http_status) {
  requests_->Add({{"endpoint", std::string(endpoint)}, {"status", std::to_string(http_status)}})
      .Increment();
  if (http_status >= 400 && http_status != 499) {
    RecordStreamError(ErrorTypeForHttpStatus(http_status));
  }
}

void GatewayMetrics::RecordStreamError(std::string_view type) {
  errors_->Add({{"type", std::string(type)}}).Increment();
}

void GatewayMetrics::KeyAdmitted(const std::string& key) {
  key_requests_->Add({{"key", key}}).Increment();
}

void GatewayMetrics::KeyTokens(const std::string& key, int64_t tokens) {
  key_tokens_->Add({{"key", key}}).Increment(static_cast<double>(tokens));
}

void GatewayMetrics::KeyRejected(const std::string& key, const std::string& limit) {
  key_rejected_->Add({{"key", key}, {"limit", limit}}).Increment();
}

void GatewayMetrics::StreamOpened() { active_streams_->Increment(); }
void GatewayMetrics::StreamClosed() { active_streams_->Decrement(); }
void GatewayMetrics::ClientDisconnected() { client_disconnects_->Increment(); }
void GatewayMetrics::ConnectionOpened() { open_connections_->Increment(); }
void GatewayMetrics::ConnectionClosed() { open_connections_->Decrement(); }
void GatewayMetrics::ConnectionRejected(std::string_view reason) {
  connections_rejected_->Add({{"reason", std::string(reason)}}).Increment();
}

void GatewayMetrics::RequestStarted() { in_flight_->Increment(); }
void GatewayMetrics::RequestFinished() { in_flight_->Decrement(); }

void GatewayMetrics::AddPromptTokens(int64_t tokens) {
  prompt_tokens_->Increment(static_cast<double>(tokens));
}

void GatewayMetrics::AddGenerationTokens(int64_t tokens) {
  generation_tokens_->Increment(static_cast<double>(tokens));
}

void GatewayMetrics::ObserveTimeToFirstToken(absl::Duration latency) {
  ttft_->Observe(absl::ToDoubleSeconds(latency));
}

void GatewayMetrics::ObserveInterTokenLatency(absl::Duration gap, int tokens) {
  if (tokens <= 0) return;
  const double each = absl::ToDoubleSeconds(gap) / tokens;
  for (int i = 0; i < tokens; ++i) itl_->Observe(each);
}

void GatewayMetrics::ObserveRequestTokens(int64_t prompt_tokens, int64_t generation_tokens) {
  request_prompt_tokens_->Observe(static_cast<double>(prompt_tokens));
  request_generation_tokens_->Observe(static_cast<double>(generation_tokens));
}

void GatewayMetrics::ObserveRequestLatency(absl::Duration latency) {
  e2e_->Observe(absl::ToDoubleSeconds(latency));
}

std::string GatewayMetrics::Serialize() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (prometheus::MetricFamily& family : ProcessMetricFamilies("gateway")) {
    families.push_back(std::move(family));
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace tern::gateway
