#include "gateway/openai/stop_matcher.h"

#include <algorithm>
#include <utility>

namespace tern::gateway {

StopMatcher::StopMatcher(std::vector<std::string> stops, bool include_stop_in_output)
    : include_stop_in_output_(include_stop_in_output) {
  for (std::string& stop : stops) {
    if (stop.empty()) continue;
    longest_stop_ = std::max(longest_stop_, stop.size());
    stops_.push_back(std::move(stop));
  }
}

std::string StopMatcher::Push(std::string_view text) {
  if (stopped_) return "";
  if (stops_.empty()) return std::string(text);
  std::string buffer = std::move(pending_);
  pending_.clear();
  buffer.append(text);

  // The earliest occurrence of any stop string ends the output.
  size_t match_at = std::string::npos;
  size_t match_len = 0;
  for (const std::string& stop : stops_) {
    const size_t at = buffer.find(stop);
    if (at < match_at) {
      match_at = at;
      match_len = stop.size();
    }
  }
  if (match_at != std::string::npos) {
    stopped_ = true;
    buffer.resize(match_at + (include_stop_in_output_ ? match_len : 0));
    return buffer;
  }

  // Hold back the longest tail that is a proper prefix of a stop string. Only
  // tails shorter than the longest stop string can qualify.
  size_t hold = 0;
  const size_t max_tail = std::min(buffer.size(), longest_stop_ - 1);
  for (size_t len = max_tail; len > 0 && hold == 0; --len) {
    const std::string_view tail(buffer.data() + buffer.size() - len, len);
    for (const std::string& stop : stops_) {
      if (stop.size() > len && std::string_view(stop).substr(0, len) == tail) {
        hold = len;
        break;
      }
    }
  }
  pending_.assign(buffer, buffer.size() - hold, hold);
  buffer.resize(buffer.size() - hold);
  return buffer;
}

std::string StopMatcher::Flush() {
  if (stopped_) return "";
  std::string rest = std::move(pending_);
  pending_.clear();
  return rest;
}

}  // namespace tern::gateway
