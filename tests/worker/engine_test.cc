#include "worker/engine.h"

#include <gtest/gtest.h>

#include <future>
#include <vector>

#include "absl/synchronization/notification.h"
#include "tests/testing/tiny_model.h"

namespace tern::worker {
namespace {

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = testing::TinyModelDir();
    if (dir.empty()) GTEST_SKIP() << "tokenizer files missing: run scripts/install-deps.sh";
    auto model = Model::Load(dir);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
  }

  // Runs one sequence to the end and returns its events.
  static std::vector<StreamEvent> RunToEnd(Engine& engine, SequenceSpec spec) {
    auto events = std::make_shared<std::vector<StreamEvent>>();
    auto done = std::make_shared<absl::Notification>();
    auto handle = engine.Submit(std::move(spec), [events, done](StreamEvent e) {
      const bool finished = e.finished;
      events->push_back(std::move(e));
      if (finished) done->Notify();
    });
    EXPECT_TRUE(handle.ok()) << handle.status();
    if (!handle.ok()) return {};
    done->WaitForNotification();
    return *events;
  }

  static std::vector<int32_t> Tokens(const std::vector<StreamEvent>& events) {
    std::vector<int32_t> out;
    for (const auto& e : events) out.insert(out.end(), e.tokens.begin(), e.tokens.end());
    return out;
  }

  // Greedy continuation computed directly with the model, no engine.
  std::vector<int32_t> DirectGreedy(const std::vector<int32_t>& prompt, int n) {
    KvCache cache(model_->config(), static_cast<int>(prompt.size()) + n);
    std::vector<float> logits;
    std::vector<int32_t> out;
    EXPECT_TRUE(model_->Forward(prompt, cache, &logits).ok());
    for (int i = 0; i < n; ++i) {
      int32_t best = 0;
      for (int32_t t = 1; t < static_cast<int32_t>(logits.size()); ++t) {
        if (logits[t] > logits[best]) best = t;
      }
      out.push_back(best);
      EXPECT_TRUE(model_->Forward(absl::MakeConstSpan(&best, 1), cache, &logits).ok());
    }
    return out;
  }

  static SequenceSpec Greedy(std::vector<int32_t> prompt, int max_tokens) {
    SequenceSpec spec;
    spec.prompt = std::move(prompt);
    spec.max_tokens = max_tokens;
    spec.sampling.temperature = 0;
    spec.ignore_eos = true;
    return spec;
  }

  std::unique_ptr<Model> model_;
};

TEST_F(EngineTest, GreedyMatchesDirectForwardAndEndsWithLength) {
  Engine engine(model_.get(), EngineOptions{});
  const std::vector<int32_t> prompt = {128000, 791, 4062, 14198, 39935};
  auto events = RunToEnd(engine, Greedy(prompt, 12));
  ASSERT_FALSE(events.empty());
  EXPECT_TRUE(events.front().has_seed);
  EXPECT_TRUE(events.back().finished);
  EXPECT_EQ(events.back().finish_reason, FinishReason::kLength);
  EXPECT_EQ(events.back().completion_tokens, 12);
  EXPECT_EQ(events.back().prompt_tokens, 5);
  EXPECT_EQ(Tokens(events), DirectGreedy(prompt, 12));
}

TEST_F(EngineTest, ConcurrentSequencesGetTheSameTokensAsAlone) {
  Engine engine(model_.get(), EngineOptions{.max_num_seqs = 4});
  std::vector<std::vector<int32_t>> prompts = {
      {128000, 9906}, {128000, 791, 1917}, {128000, 40, 1093, 311}};
  std::vector<std::vector<int32_t>> alone;
  for (const auto& p : prompts) alone.push_back(Tokens(RunToEnd(engine, Greedy(p, 10))));
  std::vector<std::future<std::vector<int32_t>>> together;
  for (const auto& p : prompts) {
    together.push_back(
        std::async(std::launch::async, [&, p] { return Tokens(RunToEnd(engine, Greedy(p, 10))); }));
  }
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(together[i].get(), alone[i]);
}

TEST_F(EngineTest, SeededSamplingIsReproducibleAndResumable) {
  Engine engine(model_.get(), EngineOptions{});
  SequenceSpec spec;
  spec.prompt = {128000, 9906, 1917};
  spec.max_tokens = 16;
  spec.sampling.temperature = 1.0f;
  spec.sampling.seed = 99;
  spec.has_seed = true;
  spec.ignore_eos = true;
  const auto first = Tokens(RunToEnd(engine, spec));
  EXPECT_EQ(Tokens(RunToEnd(engine, spec)), first);
  // Resuming after 6 tokens continues with exactly the same tokens.
  SequenceSpec resumed = spec;
  resumed.resume.assign(first.begin(), first.begin() + 6);
  const auto rest = Tokens(RunToEnd(engine, resumed));
  EXPECT_EQ(rest, std::vector<int32_t>(first.begin() + 6, first.end()));
}

TEST_F(EngineTest, UnseededRequestReportsTheSeedItUsed) {
  Engine engine(model_.get(), EngineOptions{});
  SequenceSpec spec = Greedy({128000, 9906}, 8);
  spec.sampling.temperature = 1.0f;
  const auto events = RunToEnd(engine, spec);
  ASSERT_TRUE(events.front().has_seed);
  spec.sampling.seed = events.front().seed;
  spec.has_seed = true;
  EXPECT_EQ(Tokens(RunToEnd(engine, spec)), Tokens(events));
}

TEST_F(EngineTest, CancelStopsTheSequenceAtTheNextStep) {
  Engine engine(model_.get(), EngineOptions{});
  auto events = std::make_shared<std::vector<StreamEvent>>();
  absl::Notification done;
  std::shared_ptr<SequenceHandle> handle;
  absl::Notification got_handle;
  auto submitted = engine.Submit(Greedy({128000, 9906}, 5000), [&](StreamEvent e) {
    got_handle.WaitForNotification();
    if (e.tokens.size() && events->size() == 3) handle->Cancel();
    const bool finished = e.finished;
    events->push_back(std::move(e));
    if (finished) done.Notify();
  });
  ASSERT_TRUE(submitted.ok());
  handle = *submitted;
  got_handle.Notify();
  done.WaitForNotification();
  EXPECT_EQ(events->back().finish_reason, FinishReason::kCancelled);
  EXPECT_LE(events->back().completion_tokens, 6);
}

TEST_F(EngineTest, StopTokenEndsWithStopAndIsNotEmitted) {
  Engine engine(model_.get(), EngineOptions{});
  const std::vector<int32_t> prompt = {128000, 791, 4062};
  const auto free = DirectGreedy(prompt, 6);
  SequenceSpec spec = Greedy(prompt, 6);
  spec.stop_token_ids = {free[3]};
  const auto events = RunToEnd(engine, spec);
  const auto tokens = Tokens(events);
  const auto first_stop = std::find(free.begin(), free.end(), free[3]) - free.begin();
  EXPECT_EQ(tokens, std::vector<int32_t>(free.begin(), free.begin() + first_stop));
  EXPECT_EQ(events.back().finish_reason, FinishReason::kStop);
  EXPECT_EQ(events.back().stop_token_id, free[3]);
  // min_tokens masks the stop token until enough tokens were produced.
  spec.min_tokens = 6;
  const auto with_min = RunToEnd(engine, spec);
  EXPECT_EQ(with_min.back().completion_tokens, 6);
}

TEST_F(EngineTest, RejectsBadRequestsWithClearErrors) {
  Engine engine(model_.get(), EngineOptions{.max_model_len = 64});
  auto sink = [](StreamEvent) {};
  EXPECT_EQ(engine.Submit(Greedy({}, 4), sink).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.Submit(Greedy({128000, 999999}, 4), sink).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.Submit(Greedy({-1}, 4), sink).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine.Submit(Greedy({128000}, 0), sink).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto too_long = engine.Submit(Greedy(std::vector<int32_t>(60, 100), 10), sink);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.status().message().find("maximum context length is 64"), std::string::npos);
}

TEST_F(EngineTest, DrainingRefusesNewWork) {
  Engine engine(model_.get(), EngineOptions{});
  engine.Drain();
  EXPECT_EQ(engine.Submit(Greedy({128000}, 4), [](StreamEvent) {}).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace tern::worker

namespace tern::worker {
namespace {

TEST_F(EngineTest, LogitBiasForcesAToken) {
  Engine engine(model_.get(), EngineOptions{});
  SequenceSpec spec = Greedy({128000, 9906}, 4);
  spec.logit_bias = {{1234, 100.0f}};
  const auto tokens = Tokens(RunToEnd(engine, spec));
  EXPECT_EQ(tokens, std::vector<int32_t>(4, 1234));
  spec.logit_bias = {{128256, 1.0f}};
  EXPECT_EQ(engine.Submit(spec, [](StreamEvent) {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tern::worker
