// The engine's step durations as it publishes them: an estimate from the
// warm-up steps before the first real step, an update at the start of every
// long step, and estimates that follow the steps' real durations. A test hook
// makes every executor step slow (EngineOptions::before_step_for_testing).
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "tests/testing/tiny_model.h"
#include "worker/engine/engine.h"

namespace tern::worker {
namespace {

// Every update of one subscription, taken as soon as it is pushed so that
// updates do not coalesce.
class LoadRecorder {
 public:
  explicit LoadRecorder(std::shared_ptr<StateSubscription> subscription)
      : subscription_(std::move(subscription)), thread_([this] { Run(); }) {}
  ~LoadRecorder() {
    subscription_->Cancel();
    thread_.join();
  }

  std::vector<EngineLoad> loads() const {
    absl::MutexLock lock(&mu_);
    return loads_;
  }

 private:
  void Run() {
    EngineStateUpdate update;
    while (!subscription_->Closed()) {
      if (!subscription_->Next(absl::Milliseconds(100), &update)) continue;
      absl::MutexLock lock(&mu_);
      loads_.push_back(update.load);
    }
  }

  const std::shared_ptr<StateSubscription> subscription_;
  mutable absl::Mutex mu_;
  std::vector<EngineLoad> loads_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

class EngineStepTimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = testing::TinyModelDir();
    if (dir.empty()) GTEST_SKIP() << "tokenizer files missing: run scripts/install-deps.sh";
    auto model = Model::Load(dir);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
  }

  EngineOptions Options() const {
    const ModelConfig& c = model_->config();
    EngineOptions options;
    options.executor.tp = 1;
    options.executor.block_size = 16;
    options.executor.kv_cache_bytes = int64_t{64} * 2 * c.num_hidden_layers * 16 * c.kv_dim() * 4;
    return options;
  }

  // Runs a greedy sequence of `max_tokens` tokens (one step each) to its end.
  static void Run(Engine& engine, int32_t first_token, int32_t max_tokens) {
    SequenceSpec spec;
    for (int32_t i = 0; i < 8; ++i) spec.prompt.push_back(first_token + i);
    spec.max_tokens = max_tokens;
    spec.sampling.temperature = 0;
    spec.ignore_eos = true;
    auto done = std::make_shared<absl::Notification>();
    auto handle = engine.Submit(std::move(spec), [done](StreamEvent e) {
      if (e.finished) done->Notify();
    });
    ASSERT_TRUE(handle.ok()) << handle.status();
    done->WaitForNotification();
  }

  // The loads published at the start of a step (step_running set).
  static std::vector<EngineLoad> StepStarts(const std::vector<EngineLoad>& loads) {
    std::vector<EngineLoad> starts;
    for (const EngineLoad& load : loads) {
      if (load.step_running) starts.push_back(load);
    }
    return starts;
  }

  std::unique_ptr<Model> model_;
};

TEST_F(EngineStepTimeTest, PublishedExpectedDurationFollowsTheRealStepDuration) {
  std::atomic<int64_t> step_ms{220};
  EngineOptions options = Options();
  options.before_step_for_testing = [&step_ms](int64_t /*tokens*/) {
    absl::SleepFor(absl::Milliseconds(step_ms.load()));
  };
  auto created = Engine::Create(model_.get(), options);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<Engine> engine = *std::move(created);

  // Before any request: the warm-up steps already give an estimate.
  EXPECT_GE(engine->Load().expected_step_ms, 220);
  auto recorder = std::make_unique<LoadRecorder>(engine->WatchState());

  // Two steps of ~220 ms: each is announced when it starts, the first one
  // (no real step taken yet) included, with the duration steps take here.
  Run(*engine, 1000, 2);
  std::vector<EngineLoad> starts = StepStarts(recorder->loads());
  ASSERT_FALSE(starts.empty());
  EXPECT_EQ(starts.front().steps, 0u);
  EXPECT_EQ(starts.front().running, 1);
  for (const EngineLoad& load : starts) {
    EXPECT_GE(load.expected_step_ms, 220);
    EXPECT_LE(load.expected_step_ms, 220 * 1.6);
  }
  const size_t first_run = starts.size();

  // The machine gets twice as slow: the announced durations catch up
  // within a few steps.
  step_ms = 440;
  Run(*engine, 2000, 6);
  starts = StepStarts(recorder->loads());
  ASSERT_GT(starts.size(), first_run);
  const EngineLoad& last = starts.back();
  EXPECT_GE(last.steps, 6u);
  EXPECT_GE(last.expected_step_ms, 440 * 0.8);
  EXPECT_LE(last.expected_step_ms, 440 * 1.6);

  // Once idle, the last update says no step is running.
  recorder.reset();
  auto late = engine->WatchState();
  EngineStateUpdate update;
  ASSERT_TRUE(late->Next(absl::Seconds(5), &update));
  EXPECT_FALSE(update.load.step_running);
  EXPECT_GT(update.load.expected_step_ms, 0);
}

TEST_F(EngineStepTimeTest, ShortStepsAreNotAnnouncedButCarryAnEstimate) {
  std::atomic<int64_t> steps_seen{0};
  EngineOptions options = Options();
  options.before_step_for_testing = [&steps_seen](int64_t) { steps_seen.fetch_add(1); };
  auto created = Engine::Create(model_.get(), options);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<Engine> engine = *std::move(created);
  EXPECT_EQ(steps_seen.load(), 2) << "two warm-up steps before serving";
  EXPECT_GT(engine->Load().expected_step_ms, 0);
  EXPECT_EQ(engine->Load().steps, 0u) << "warm-up steps are not engine steps";
}

}  // namespace
}  // namespace tern::worker
