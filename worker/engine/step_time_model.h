// How long an engine step takes, as a function of the tokens it computes,
// learnt from the steps the engine ran. The worker publishes the estimate
// (WorkerLoad.expected_step_ms) so a router judges a long step by how long
// such steps take here, not by a fixed bound.
//
// Model: a step costs roughly a fixed part (reading every weight once) plus
// a part per token. Steps are grouped by token count in powers of two
// (1, 2-3, 4-7, ...); each group keeps an exponentially weighted mean of its
// token counts and durations (the newest step weighs kWeight), so the
// estimate follows a machine that gets slower or faster within a few steps.
// Estimate(n) interpolates linearly between the groups around n; above the
// largest group it extends the line through the two largest (through the
// origin with one group: proportional to tokens, which overestimates when
// the fixed part dominates); below the smallest it is the smallest group's
// duration. A group that is never observed again keeps its last mean.
//
// Thread contract: not thread-safe; owned by one thread (the engine loop).
#ifndef TERN_WORKER_ENGINE_STEP_TIME_MODEL_H_
#define TERN_WORKER_ENGINE_STEP_TIME_MODEL_H_

#include <array>
#include <cstdint>

#include "absl/time/time.h"

namespace tern::worker {

class StepTimeModel {
 public:
  // Weight of the newest step in its group's means.
  static constexpr double kWeight = 0.3;

  // Records a step of `tokens` (>= 1; smaller counts as 1) that took `duration`.
  void Observe(int64_t tokens, absl::Duration duration);

  // The expected duration of a step of `tokens` tokens; zero before the
  // first observation.
  absl::Duration Estimate(int64_t tokens) const;

  bool has_estimate() const { return observed_groups_ > 0; }

 private:
  struct Group {
    bool observed = false;
    double tokens = 0;   // mean token count
    double seconds = 0;  // mean duration
  };
  // Token counts up to 2^63.
  std::array<Group, 64> groups_;
  int observed_groups_ = 0;
};

}  // namespace tern::worker

#endif  // TERN_WORKER_ENGINE_STEP_TIME_MODEL_H_
