#include "gateway/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <string>

namespace tern::gateway {
namespace {

// Seconds; the same spread vLLM uses for its latency histograms.
const prometheus::Histogram::BucketBoundaries& TtftBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,
      0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
  return *buckets;
}

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.3,  0.5,  0.8,  1.0,  1.5,  2.0,   2.5,   5.0,   10.0, 15.0,
      20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0};
  return *buckets;
}

}  // namespace

GatewayMetrics::GatewayMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("tern_gateway_requests_total")
                   .Help("HTTP requests answered, by endpoint and status code")
                   .Register(*registry_);
  in_flight_ = &prometheus::BuildGauge()
                    .Name("tern_gateway_requests_in_flight")
                    .Help("Generation requests being served")
                    .Register(*registry_)
                    .Add({});
  prompt_tokens_ = &prometheus::BuildCounter()
                        .Name("tern_gateway_prompt_tokens_total")
                        .Help("Prompt tokens sent to the router")
                        .Register(*registry_)
                        .Add({});
  generation_tokens_ = &prometheus::BuildCounter()
                            .Name("tern_gateway_generation_tokens_total")
                            .Help("Generated tokens received from the router")
                            .Register(*registry_)
                            .Add({});
  ttft_ = &prometheus::BuildHistogram()
               .Name("tern_gateway_time_to_first_token_seconds")
               .Help("Time from receiving a request to its first generated token")
               .Register(*registry_)
               .Add({}, TtftBuckets());
  e2e_ = &prometheus::BuildHistogram()
              .Name("tern_gateway_e2e_request_latency_seconds")
              .Help("Time from receiving a generation request to its last response byte queued")
              .Register(*registry_)
              .Add({}, LatencyBuckets());
}

GatewayMetrics::~GatewayMetrics() = default;

void GatewayMetrics::RecordRequest(std::string_view endpoint, int http_status) {
  requests_->Add({{"endpoint", std::string(endpoint)}, {"status", std::to_string(http_status)}})
      .Increment();
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

void GatewayMetrics::ObserveRequestLatency(absl::Duration latency) {
  e2e_->Observe(absl::ToDoubleSeconds(latency));
}

std::string GatewayMetrics::Serialize() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace tern::gateway
