#include "worker/engine/step_time_model.h"

#include <algorithm>
#include <bit>

namespace tern::worker {
namespace {

// The group of a token count: floor(log2(tokens)).
int GroupOf(int64_t tokens) {
  return std::bit_width(static_cast<uint64_t>(std::max<int64_t>(tokens, 1))) - 1;
}

}  // namespace

void StepTimeModel::Observe(int64_t tokens, absl::Duration duration) {
  tokens = std::max<int64_t>(tokens, 1);
  const double seconds = std::max(0.0, absl::ToDoubleSeconds(duration));
  Group& group = groups_[GroupOf(tokens)];
  if (!group.observed) {
    group = {true, static_cast<double>(tokens), seconds};
    ++observed_groups_;
    return;
  }
  group.tokens += kWeight * (static_cast<double>(tokens) - group.tokens);
  group.seconds += kWeight * (seconds - group.seconds);
}

absl::Duration StepTimeModel::Estimate(int64_t tokens) const {
  if (observed_groups_ == 0) return absl::ZeroDuration();
  const double n = static_cast<double>(std::max<int64_t>(tokens, 1));
  const Group* below = nullptr;  // the largest group with mean tokens <= n
  const Group* previous = nullptr;
  for (const Group& group : groups_) {
    if (!group.observed) continue;
    if (group.tokens >= n) {
      if (below == nullptr) return absl::Seconds(group.seconds);
      // Group means grow with the group index, so `below` and `group` bracket n.
      const double t = (n - below->tokens) / (group.tokens - below->tokens);
      return absl::Seconds(below->seconds + t * (group.seconds - below->seconds));
    }
    previous = below;
    below = &group;
  }
  // Past the largest group.
  if (previous == nullptr) return absl::Seconds(below->seconds * n / below->tokens);
  const double slope =
      std::max(0.0, (below->seconds - previous->seconds) / (below->tokens - previous->tokens));
  return absl::Seconds(below->seconds + slope * (n - below->tokens));
}

}  // namespace tern::worker
