#include "worker/engine/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <future>
#include <set>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/block_hash.h"
#include "tests/testing/reference_forward.h"
#include "tests/testing/tiny_model.h"

namespace tern::worker {
namespace {

using testing::KvCache;
using testing::ReferenceForward;

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
    EXPECT_TRUE(ReferenceForward(*model_, prompt, cache, &logits).ok());
    for (int i = 0; i < n; ++i) {
      int32_t best = 0;
      for (int32_t t = 1; t < static_cast<int32_t>(logits.size()); ++t) {
        if (logits[t] > logits[best]) best = t;
      }
      out.push_back(best);
      EXPECT_TRUE(ReferenceForward(*model_, absl::MakeConstSpan(&best, 1), cache, &logits).ok());
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

  // A small KV pool of `blocks` blocks of 16 tokens for the tiny model, tp 1.
  EngineOptions Options(int64_t blocks = 1024) const {
    const ModelConfig& c = model_->config();
    EngineOptions options;
    options.executor.tp = 1;
    options.executor.block_size = 16;
    options.executor.kv_cache_bytes = blocks * 2 * c.num_hidden_layers * 16 * c.kv_dim() * 4;
    return options;
  }

  std::unique_ptr<Engine> MakeEngine(const EngineOptions& options) {
    auto engine = Engine::Create(model_.get(), options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? std::move(engine).value() : nullptr;
  }

  // Waits (bounded) until the engine reports no live sequence.
  static bool WaitIdle(const Engine& engine) {
    for (int i = 0; i < 500; ++i) {
      const EngineLoad load = engine.Load();
      if (load.running == 0 && load.waiting == 0) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }

  std::unique_ptr<Model> model_;
};

TEST_F(EngineTest, GreedyMatchesDirectForwardAndEndsWithLength) {
  auto engine_ptr = MakeEngine(Options());
  ASSERT_NE(engine_ptr, nullptr);
  Engine& engine = *engine_ptr;
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
  EngineOptions options = Options();
  options.max_num_seqs = 4;
  auto engine_ptr = MakeEngine(options);
  ASSERT_NE(engine_ptr, nullptr);
  Engine& engine = *engine_ptr;
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
  auto engine_ptr = MakeEngine(Options());
  ASSERT_NE(engine_ptr, nullptr);
  Engine& engine = *engine_ptr;
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
  auto engine_ptr = MakeEngine(Options());
  ASSERT_NE(engine_ptr, nullptr);
  Engine& engine = *engine_ptr;
  SequenceSpec spec = Greedy({128000, 9906}, 8);
  spec.sampling.temperature = 1.0f;
  const auto events = RunToEnd(engine, spec);
  ASSERT_TRUE(events.front().has_seed);
  spec.sampling.seed = events.front().seed;
  spec.has_seed = true;
  EXPECT_EQ(Tokens(RunToEnd(engine, spec)), Tokens(events));
}

TEST_F(EngineTest, CancelStopsTheSequenceAtTheNextStep) {
  auto engine_ptr = MakeEngine(Options());
  ASSERT_NE(engine_ptr, nullptr);
  Engine& engine = *engine_ptr;
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
  auto engine_ptr = MakeEngine(Options());
  ASSERT_NE(engine_ptr, nullptr);
  Engine& engine = *engine_ptr;
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
  EngineOptions options = Options();
  options.max_model_len = 64;
  auto engine_ptr = MakeEngine(options);
  ASSERT_NE(engine_ptr, nullptr);
  Engine& engine = *engine_ptr;
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
  auto engine_ptr = MakeEngine(Options());
  ASSERT_NE(engine_ptr, nullptr);
  Engine& engine = *engine_ptr;
  engine.Drain();
  EXPECT_EQ(engine.Submit(Greedy({128000}, 4), [](StreamEvent) {}).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace tern::worker

namespace tern::worker {
namespace {

TEST_F(EngineTest, LogitBiasForcesAToken) {
  auto engine_ptr = MakeEngine(Options());
  ASSERT_NE(engine_ptr, nullptr);
  Engine& engine = *engine_ptr;
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

namespace tern::worker {
namespace {

// Submits every spec at once and returns each one's events once all ended.
std::vector<std::vector<StreamEvent>> RunAll(Engine& engine,
                                             const std::vector<SequenceSpec>& specs) {
  struct Shared {
    absl::Mutex mu;
    std::vector<std::vector<StreamEvent>> events;
    size_t done = 0;
  };
  auto shared = std::make_shared<Shared>();
  shared->events.resize(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    auto handle = engine.Submit(specs[i], [shared, i](StreamEvent e) {
      absl::MutexLock lock(&shared->mu);
      if (e.finished) ++shared->done;
      shared->events[i].push_back(std::move(e));
    });
    EXPECT_TRUE(handle.ok()) << handle.status();
    if (!handle.ok()) return {};
  }
  absl::MutexLock lock(&shared->mu);
  auto all_done = [&shared]() { return shared->done == shared->events.size(); };
  EXPECT_TRUE(shared->mu.AwaitWithTimeout(absl::Condition(&all_done), absl::Seconds(30)));
  return shared->events;
}

std::vector<int32_t> AllTokens(const std::vector<StreamEvent>& events) {
  std::vector<int32_t> out;
  for (const auto& e : events) out.insert(out.end(), e.tokens.begin(), e.tokens.end());
  return out;
}

// Eight distinct 20-token prompts, greedy or seeded, 24 tokens each.
std::vector<SequenceSpec> PressureSpecs(bool seeded) {
  std::vector<SequenceSpec> specs;
  for (int i = 0; i < 8; ++i) {
    SequenceSpec spec;
    spec.prompt = {128000};
    for (int t = 1; t < 20; ++t) spec.prompt.push_back(1000 + 97 * i + 13 * t);
    spec.max_tokens = 24;
    spec.ignore_eos = true;
    spec.sampling.temperature = seeded ? 1.0f : 0.0f;
    spec.sampling.seed = 1000 + i;
    spec.has_seed = true;
    specs.push_back(spec);
  }
  return specs;
}

TEST_F(EngineTest, TinyKvPoolPreemptsAndGivesTheSameTokensAsALargePool) {
  for (bool seeded : {false, true}) {
    EngineOptions large = Options(1024);
    large.max_num_seqs = 8;
    EngineOptions tiny = Options(10);  // 8 sequences need 24 blocks
    tiny.max_num_seqs = 8;
    auto big_engine = MakeEngine(large);
    auto small_engine = MakeEngine(tiny);
    ASSERT_TRUE(big_engine && small_engine);
    ASSERT_EQ(small_engine->num_kv_blocks(), 10);
    const auto specs = PressureSpecs(seeded);
    const auto expected = RunAll(*big_engine, specs);
    const auto got = RunAll(*small_engine, specs);
    ASSERT_EQ(got.size(), specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      EXPECT_EQ(AllTokens(got[i]), AllTokens(expected[i])) << "sequence " << i;
      EXPECT_EQ(AllTokens(got[i]).size(), 24u);
      EXPECT_EQ(got[i].back().finish_reason, FinishReason::kLength);
    }
    EXPECT_GT(small_engine->Load().preemptions, 0u) << "the pool was meant to run out";
    EXPECT_EQ(big_engine->Load().preemptions, 0u);
  }
}

TEST_F(EngineTest, SeededRequestGetsTheSameTokensAloneAndInABatchOf32) {
  EngineOptions options = Options();
  options.max_num_seqs = 32;
  auto engine = MakeEngine(options);
  ASSERT_NE(engine, nullptr);
  std::vector<SequenceSpec> specs;
  for (int i = 0; i < 32; ++i) {
    SequenceSpec spec;
    spec.prompt = {128000, 9906 + i, 1917, 315 + 7 * i};
    spec.max_tokens = 12;
    spec.ignore_eos = true;
    spec.sampling.temperature = 0.9f;
    spec.sampling.top_p = 0.95f;
    spec.sampling.seed = 77 + i;
    spec.has_seed = true;
    specs.push_back(spec);
  }
  const auto batch = RunAll(*engine, specs);
  ASSERT_EQ(batch.size(), specs.size());
  for (int i : {0, 5, 17, 31}) {
    EXPECT_EQ(AllTokens(RunAll(*engine, {specs[i]})[0]), AllTokens(batch[i])) << i;
  }
}

TEST_F(EngineTest, RunningStreamsKeepProducingWhileALongPromptPrefills) {
  EngineOptions options = Options();
  options.max_num_batched_tokens = 64;
  options.max_model_len = 4096;
  // Declared before the engine, so that they outlive its loop thread even
  // when an assertion below returns early.
  absl::Mutex mu;
  std::vector<int> order;  // which sequence each token event belonged to
  int finished = 0;
  auto engine = MakeEngine(options);
  ASSERT_NE(engine, nullptr);
  auto sink_for = [&](int tag) {
    return [&, tag](StreamEvent e) {
      absl::MutexLock lock(&mu);
      if (!e.tokens.empty()) order.push_back(tag);
      if (e.finished) ++finished;
    };
  };
  for (int tag : {0, 1}) {
    ASSERT_TRUE(engine->Submit(Greedy({128000, 9906, 1917 + tag}, 200), sink_for(tag)).ok());
  }
  {
    absl::MutexLock lock(&mu);
    auto started = [&] { return order.size() >= 4; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&started), absl::Seconds(10)));
  }
  std::vector<int32_t> long_prompt(4000);
  for (size_t i = 0; i < long_prompt.size(); ++i) long_prompt[i] = 1000 + (i * 7) % 5000;
  size_t submitted_at;
  {
    absl::MutexLock lock(&mu);
    submitted_at = order.size();
  }
  ASSERT_TRUE(engine->Submit(Greedy(long_prompt, 1), sink_for(2)).ok());
  absl::MutexLock lock(&mu);
  auto all_done = [&] { return finished == 3; };
  // About 70 steps of 64 tokens: seconds in a release build, nearly 30 s
  // under TSan on 2 cores.
  ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all_done), absl::Seconds(120)));
  const size_t long_at = std::find(order.begin(), order.end(), 2) - order.begin();
  ASSERT_LT(long_at, order.size());
  // The prompt needs at least 4000 / 62 steps; each running stream gets a
  // token in every one of them.
  for (int tag : {0, 1}) {
    const auto during = std::count(order.begin() + submitted_at, order.begin() + long_at, tag);
    EXPECT_GE(during, 60) << "stream " << tag << " stalled behind the prefill";
  }
}

TEST_F(EngineTest, CancellationFreesTheSequencesBlocks) {
  auto engine = MakeEngine(Options(64));
  ASSERT_NE(engine, nullptr);
  std::vector<int32_t> prompt(100, 0);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = 500 + static_cast<int32_t>(i);
  auto events = std::make_shared<std::vector<StreamEvent>>();
  absl::Notification done, got_handle;
  std::shared_ptr<SequenceHandle> handle;
  auto submitted = engine->Submit(Greedy(prompt, 900), [&](StreamEvent e) {
    got_handle.WaitForNotification();
    if (events->size() == 2) handle->Cancel();
    const bool finished = e.finished;
    events->push_back(std::move(e));
    if (finished) done.Notify();
  });
  ASSERT_TRUE(submitted.ok());
  handle = *submitted;
  got_handle.Notify();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(events->back().finish_reason, FinishReason::kCancelled);
  ASSERT_TRUE(WaitIdle(*engine));
  // No live sequence: every block is free again (the prompt's committed full
  // blocks stay cached, unreferenced, and count as free).
  EngineLoad load;
  for (int i = 0; i < 100; ++i) {
    load = engine->Load();
    if (load.free_kv_blocks == load.total_kv_blocks) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(load.total_kv_blocks, 64);
  EXPECT_EQ(load.free_kv_blocks, load.total_kv_blocks);
  EXPECT_GE(load.cached_kv_blocks, 6);  // 100 prompt tokens: 6 full blocks
  EXPECT_EQ(load.queued_prefill_tokens, 0);
}

TEST_F(EngineTest, SecondIdenticalPromptReusesTheCachedPrefix) {
  const std::vector<int32_t> prompt = {128000, 791,   4062,  14198, 39935, 35308, 927,   279,
                                       16053,  5679,  13,    578,   4062,  14198, 39935, 35308,
                                       927,    279,   16053, 5679,  1578,  13,    578,   4062,
                                       14198,  39935, 35308, 927,   279,   16053, 5679,  2288,
                                       13,     578,   4062,  14198, 39935, 35308, 927,   279};
  ASSERT_EQ(prompt.size(), 40u);
  for (bool caching : {true, false}) {
    EngineOptions options = Options();
    options.enable_prefix_caching = caching;
    auto engine = MakeEngine(options);
    ASSERT_NE(engine, nullptr);
    const auto first = RunToEnd(*engine, Greedy(prompt, 10));
    const auto second = RunToEnd(*engine, Greedy(prompt, 10));
    ASSERT_FALSE(first.empty() || second.empty());
    EXPECT_EQ(first.back().cached_prompt_tokens, 0);
    // Two full blocks of 16; the last prompt token is always computed.
    EXPECT_EQ(second.back().cached_prompt_tokens, caching ? 32 : 0);
    EXPECT_EQ(Tokens(second), Tokens(first));
    EXPECT_EQ(Tokens(first), DirectGreedy(prompt, 10));
    EXPECT_EQ(engine->Load().prefix_hit_tokens, caching ? 32u : 0u);
  }
}

TEST_F(EngineTest, LogprobsAreSortedAndMatchAnIndependentLogSoftmax) {
  auto engine = MakeEngine(Options());
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> prompt = {128000, 791, 4062, 14198};
  for (bool greedy : {true, false}) {
    SequenceSpec spec = Greedy(prompt, 8);
    spec.logprobs = true;
    spec.top_logprobs = 5;
    if (!greedy) {
      spec.sampling.temperature = 1.3f;
      spec.sampling.seed = 5;
      spec.has_seed = true;
    }
    const auto events = RunToEnd(*engine, spec);
    const auto tokens = Tokens(events);
    ASSERT_EQ(tokens.size(), 8u);
    // Reference: the model's own single-sequence forward, log-softmax in
    // long double.
    KvCache cache(model_->config(), 64);
    std::vector<float> logits;
    ASSERT_TRUE(ReferenceForward(*model_, prompt, cache, &logits).ok());
    size_t i = 0;
    for (const StreamEvent& e : events) {
      ASSERT_EQ(e.logprobs.size(), e.tokens.size());
      for (size_t k = 0; k < e.tokens.size(); ++k, ++i) {
        const TokenLogprobs& lp = e.logprobs[k];
        long double total = 0;
        for (float l : logits) total += std::exp(static_cast<long double>(l));
        const double log_total = static_cast<double>(std::log(total));
        EXPECT_EQ(lp.token_id, e.tokens[k]);
        EXPECT_NEAR(lp.logprob, logits[e.tokens[k]] - log_total, 2e-3) << "token " << i;
        ASSERT_EQ(lp.top.size(), 5u);
        for (size_t j = 1; j < lp.top.size(); ++j) {
          EXPECT_GE(lp.top[j - 1].second, lp.top[j].second);
        }
        if (greedy) {
          EXPECT_EQ(lp.top[0].first, e.tokens[k]);
          EXPECT_FLOAT_EQ(lp.top[0].second, lp.logprob);
        }
        const int32_t next = e.tokens[k];
        ASSERT_TRUE(ReferenceForward(*model_, absl::MakeConstSpan(&next, 1), cache, &logits).ok());
      }
    }
  }
  SequenceSpec bad = Greedy(prompt, 2);
  bad.top_logprobs = 21;
  EXPECT_EQ(engine->Submit(bad, [](StreamEvent) {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Applies a subscription's events to a replica of the cached hashes,
// checking the numbering has no gap.
struct Replica {
  std::set<uint64_t> hashes;
  uint64_t last_number = 0;
  int removed_events = 0;
  void Apply(const std::vector<KvEvent>& events) {
    for (const KvEvent& e : events) {
      EXPECT_EQ(e.sequence_number, last_number + 1);
      last_number = e.sequence_number;
      switch (e.kind) {
        case KvEventKind::kAllBlocksCleared:
          hashes.clear();
          break;
        case KvEventKind::kBlockStored:
          if (e.parent_block_hash) {
            EXPECT_TRUE(hashes.contains(*e.parent_block_hash));
          }
          hashes.insert(e.block_hashes.begin(), e.block_hashes.end());
          break;
        case KvEventKind::kBlockRemoved:
          ++removed_events;
          for (uint64_t h : e.block_hashes) EXPECT_EQ(hashes.erase(h), 1u);
          break;
      }
    }
  }
  // Applies updates until none comes for a while.
  void DrainFrom(StateSubscription& subscription, EngineLoad* load = nullptr) {
    EngineStateUpdate update;
    while (subscription.Next(absl::Milliseconds(400), &update)) {
      Apply(update.events);
      if (load) *load = update.load;
    }
  }
};

TEST_F(EngineTest, WatchStateEventsRebuildTheCachedBlockSet) {
  EngineOptions options = Options(24);
  options.max_num_seqs = 4;
  auto engine = MakeEngine(options);
  ASSERT_NE(engine, nullptr);
  auto watcher = engine->WatchState();
  std::vector<SequenceSpec> specs;
  std::vector<int32_t> shared_prefix(32);
  for (size_t i = 0; i < shared_prefix.size(); ++i) shared_prefix[i] = 2000 + i;
  for (int round = 0; round < 3; ++round) {
    specs.clear();
    for (int i = 0; i < 4; ++i) {
      SequenceSpec spec = Greedy(shared_prefix, 20);
      for (int t = 0; t < 20; ++t) spec.prompt.push_back(3000 + 100 * round + 10 * i + t);
      specs.push_back(spec);
    }
    ASSERT_EQ(RunAll(*engine, specs).size(), specs.size());
  }
  ASSERT_TRUE(WaitIdle(*engine));
  Replica incremental;
  EngineLoad load;
  incremental.DrainFrom(*watcher, &load);
  EXPECT_GT(incremental.removed_events, 0) << "the small pool was meant to evict";
  // A new subscription starts from a snapshot of the same cache.
  auto late = engine->WatchState();
  Replica snapshot;
  snapshot.DrainFrom(*late);
  EXPECT_FALSE(snapshot.hashes.empty());
  EXPECT_EQ(incremental.hashes, snapshot.hashes);
  EXPECT_EQ(static_cast<int64_t>(snapshot.hashes.size()), load.cached_kv_blocks);
  // The last round's shared prefix is cached, under the hashes the router
  // computes with common/block_hash.h.
  for (uint64_t h : HashPrefixBlocks(specs.back().prompt, 16)) {
    EXPECT_TRUE(snapshot.hashes.contains(h));
  }
  late->Cancel();
  EngineStateUpdate update;
  EXPECT_FALSE(late->Next(absl::Seconds(1), &update));
  EXPECT_TRUE(late->Closed());
  engine.reset();
  EXPECT_FALSE(watcher->Next(absl::Seconds(1), &update));
  EXPECT_TRUE(watcher->Closed());
}

}  // namespace
}  // namespace tern::worker
