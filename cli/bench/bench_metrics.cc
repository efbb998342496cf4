#include "cli/bench/bench_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "nlohmann/json.hpp"

namespace tern::cli {

void SseParser::Feed(absl::string_view bytes) {
  for (char c : bytes) {
    if (skip_lf_) {
      skip_lf_ = false;
      if (c == '\n') continue;
    }
    if (c == '\r' || c == '\n') {
      skip_lf_ = c == '\r';
      Line(line_);
      line_.clear();
    } else {
      line_.push_back(c);
    }
  }
}

void SseParser::Line(absl::string_view line) {
  if (line.empty()) {
    if (has_data_) on_event_(data_);
    data_.clear();
    has_data_ = false;
    return;
  }
  if (line[0] == ':') return;
  const size_t colon = line.find(':');
  const absl::string_view field = line.substr(0, colon);
  absl::string_view value;
  if (colon != absl::string_view::npos) {
    value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  }
  if (field != "data") return;
  if (has_data_) data_.push_back('\n');
  data_.append(value.data(), value.size());
  has_data_ = true;
}

void StreamChunkReader::OnEvent(absl::string_view data, double now) {
  if (data == "[DONE]") {
    done_ = true;
    return;
  }
  nlohmann::json chunk = nlohmann::json::parse(data.begin(), data.end(), nullptr, false);
  if (chunk.is_discarded() || !chunk.is_object()) {
    if (error_.empty()) error_ = "bad stream json";
    return;
  }
  if (chunk.contains("error")) {
    if (error_.empty()) error_ = "stream error";
    return;
  }
  const auto choices = chunk.find("choices");
  if (choices != chunk.end() && choices->is_array()) {
    for (const auto& choice : *choices) {
      std::string piece;
      if (const auto text = choice.find("text"); text != choice.end() && text->is_string()) {
        piece = text->get<std::string>();
      } else if (const auto delta = choice.find("delta"); delta != choice.end()) {
        const auto content = delta->find("content");
        if (content != delta->end() && content->is_string()) piece = content->get<std::string>();
      }
      if (!piece.empty()) {
        record_->chunk_times.push_back(now);
        record_->text += piece;
      }
    }
  }
  const auto usage = chunk.find("usage");
  if (usage != chunk.end() && usage->is_object()) {
    record_->has_usage = true;
    record_->prompt_tokens = usage->value("prompt_tokens", int64_t{0});
    record_->output_tokens = usage->value("completion_tokens", int64_t{0});
    const auto details = usage->find("prompt_tokens_details");
    if (details != usage->end() && details->is_object()) {
      record_->cached_tokens = details->value("cached_tokens", int64_t{0});
    }
  }
}

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double pos = q / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return values[lo] + (values[hi] - values[lo]) * frac;
}

Distribution Summarize(const std::vector<double>& values) {
  Distribution d;
  d.count = values.size();
  if (values.empty()) return d;
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
  d.median = Percentile(values, 50);
  d.p90 = Percentile(values, 90);
  d.p99 = Percentile(values, 99);
  return d;
}

ServeMetrics ComputeServeMetrics(absl::Span<const RequestRecord> records, double duration_s) {
  ServeMetrics m;
  m.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2e;
  for (const RequestRecord& r : records) {
    if (!r.ok) {
      ++m.failed;
      ++m.errors[r.error.empty() ? "unknown" : r.error];
      continue;
    }
    ++m.completed;
    m.input_tokens += r.prompt_tokens;
    m.output_tokens += r.output_tokens;
    m.cached_tokens += r.cached_tokens;
    const double latency = r.end - r.start;
    e2e.push_back(latency * 1e3);
    if (r.chunk_times.empty()) continue;
    const double first = r.chunk_times.front() - r.start;
    ttft.push_back(first * 1e3);
    if (r.output_tokens > 1) {
      tpot.push_back((latency - first) / static_cast<double>(r.output_tokens - 1) * 1e3);
    }
    for (size_t i = 1; i < r.chunk_times.size(); ++i) {
      itl.push_back((r.chunk_times[i] - r.chunk_times[i - 1]) * 1e3);
    }
  }
  if (duration_s > 0) {
    m.request_throughput = static_cast<double>(m.completed) / duration_s;
    m.output_throughput = static_cast<double>(m.output_tokens) / duration_s;
    m.total_throughput = static_cast<double>(m.input_tokens + m.output_tokens) / duration_s;
  }
  if (m.input_tokens > 0) {
    m.prefix_hit_rate = static_cast<double>(m.cached_tokens) / static_cast<double>(m.input_tokens);
  }
  m.ttft_ms = Summarize(ttft);
  m.tpot_ms = Summarize(tpot);
  m.itl_ms = Summarize(itl);
  m.e2e_ms = Summarize(e2e);
  return m;
}

}  // namespace tern::cli
