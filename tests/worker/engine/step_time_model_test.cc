#include "worker/engine/step_time_model.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tern::worker {
namespace {

double EstimateMs(const StepTimeModel& model, int64_t tokens) {
  return absl::ToDoubleMilliseconds(model.Estimate(tokens));
}

TEST(StepTimeModelTest, NoEstimateBeforeTheFirstStep) {
  StepTimeModel model;
  EXPECT_FALSE(model.has_estimate());
  EXPECT_EQ(model.Estimate(1), absl::ZeroDuration());
  EXPECT_EQ(model.Estimate(256), absl::ZeroDuration());
}

TEST(StepTimeModelTest, OneObservationScalesWithTokensAboveAndStaysFlatBelow) {
  StepTimeModel model;
  model.Observe(32, absl::Milliseconds(320));
  EXPECT_TRUE(model.has_estimate());
  EXPECT_DOUBLE_EQ(EstimateMs(model, 32), 320);
  EXPECT_DOUBLE_EQ(EstimateMs(model, 64), 640);
  EXPECT_DOUBLE_EQ(EstimateMs(model, 1), 320);
}

TEST(StepTimeModelTest, InterpolatesBetweenAndExtrapolatesPastObservedSizes) {
  // A fixed 100 ms plus 10 ms per token, observed at 1 and 32 tokens.
  StepTimeModel model;
  model.Observe(1, absl::Milliseconds(110));
  model.Observe(32, absl::Milliseconds(420));
  EXPECT_NEAR(EstimateMs(model, 1), 110, 1e-9);
  EXPECT_NEAR(EstimateMs(model, 16), 260, 1e-9);
  EXPECT_NEAR(EstimateMs(model, 32), 420, 1e-9);
  EXPECT_NEAR(EstimateMs(model, 256), 2660, 1e-9);
  // Below the smallest observed size the estimate does not drop.
  EXPECT_NEAR(EstimateMs(model, 0), 110, 1e-9);
}

TEST(StepTimeModelTest, FollowsAMachineThatSlowsDown) {
  StepTimeModel model;
  for (int i = 0; i < 5; ++i) model.Observe(4, absl::Milliseconds(100));
  EXPECT_NEAR(EstimateMs(model, 4), 100, 1e-9);
  // The newest step weighs kWeight: after n slow steps the gap left is (1 - kWeight)^n.
  for (int i = 0; i < 10; ++i) model.Observe(4, absl::Milliseconds(300));
  EXPECT_NEAR(EstimateMs(model, 4), 300 - 200 * std::pow(1 - StepTimeModel::kWeight, 10), 1e-6);
  EXPECT_GT(EstimateMs(model, 4), 290);
}

TEST(StepTimeModelTest, StepsOfSimilarSizeShareAGroup) {
  StepTimeModel model;
  model.Observe(8, absl::Milliseconds(80));
  model.Observe(15, absl::Milliseconds(150));  // same group (8..15): means move
  const double mean_tokens = 8 + StepTimeModel::kWeight * (15 - 8);
  const double mean_ms = 80 + StepTimeModel::kWeight * (150 - 80);
  EXPECT_NEAR(EstimateMs(model, 1), mean_ms, 1e-9);
  EXPECT_NEAR(EstimateMs(model, 30), mean_ms * 30 / mean_tokens, 1e-6);
}

TEST(StepTimeModelTest, ANoisyDecreaseNeverExtrapolatesBelowTheLargestSize) {
  StepTimeModel model;
  model.Observe(2, absl::Milliseconds(120));
  model.Observe(16, absl::Milliseconds(100));
  EXPECT_NEAR(EstimateMs(model, 256), 100, 1e-9);
}

}  // namespace
}  // namespace tern::worker
