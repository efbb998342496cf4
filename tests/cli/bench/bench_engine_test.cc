#include "cli/bench/bench_engine.h"

#include "gtest/gtest.h"
#include "tests/testing/tiny_model.h"
#include "worker/model/model.h"

namespace tern::cli {
namespace {

TEST(SteadyStateDecodeTest, LockstepBatchCountsEveryDecodeStep) {
  // Two sequences, first token at t=1, then one token every 0.5 s.
  const std::vector<double> times = {1.0, 1.5, 2.0, 2.5, 3.0};
  auto steady = SteadyStateDecode({times, times});
  ASSERT_TRUE(steady.has_value());
  EXPECT_EQ(steady->tokens, 8);
  EXPECT_DOUBLE_EQ(steady->tokens_per_s, 8 / 2.0);
  EXPECT_DOUBLE_EQ(steady->step_s, 0.5);
}

TEST(SteadyStateDecodeTest, WindowExcludesStaggeredStartsAndEnds) {
  // The second sequence is prefilled one step later and ends one step later;
  // the window is [2, 4]: two tokens of each sequence inside.
  auto steady = SteadyStateDecode({{1, 2, 3, 4}, {2, 3, 4, 5}});
  ASSERT_TRUE(steady.has_value());
  EXPECT_EQ(steady->tokens, 4);
  EXPECT_DOUBLE_EQ(steady->tokens_per_s, 2.0);
  EXPECT_DOUBLE_EQ(steady->step_s, 1.0);
}

TEST(SteadyStateDecodeTest, NoWindowWithoutDecodedTokens) {
  EXPECT_FALSE(SteadyStateDecode({}).has_value());
  EXPECT_FALSE(SteadyStateDecode({{1.0}}).has_value());
  EXPECT_FALSE(SteadyStateDecode({{1, 2}, {3, 4}}).has_value());  // never overlapping
}

TEST(MeasureEngineTest, MeasuresEveryFigureOnTheTinyModel) {
  const std::string dir = testing::TinyModelDir();
  if (dir.empty()) GTEST_SKIP() << "tokenizer files not installed";
  auto model = worker::Model::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  worker::EngineOptions options;
  options.max_num_seqs = 4;
  options.max_num_batched_tokens = 64;
  options.executor.tp = 1;
  options.executor.kv_cache_bytes = 8 << 20;
  auto engine = worker::Engine::Create(model->get(), options);
  ASSERT_TRUE(engine.ok()) << engine.status();

  EngineBenchOptions bench;
  bench.prefill_lengths = {32, 80};
  bench.ttft_length = 80;
  bench.decode_batches = {1, 4};
  bench.decode_prompt = 8;
  bench.decode_steps = 6;
  bench.timeout = absl::Seconds(60);
  std::vector<std::string> lines;
  bench.progress = [&](const std::string& line) { lines.push_back(line); };
  auto figures = MeasureEngine(**engine, (*model)->config().vocab_size, bench);
  ASSERT_TRUE(figures.ok()) << figures.status();

  ASSERT_EQ(figures->prefill.size(), 2u);
  EXPECT_EQ(figures->prefill[0].tokens, 32);
  EXPECT_EQ(figures->prefill[1].tokens, 80);
  for (const auto& p : figures->prefill) {
    EXPECT_GT(p.ttft_s, 0.0);
    EXPECT_DOUBLE_EQ(p.tokens_per_s, p.tokens / p.ttft_s);
  }
  // The second submission of the 80-token prompt reuses its full blocks
  // except the one holding the last token, which must be recomputed.
  EXPECT_EQ(figures->ttft_tokens, 80);
  EXPECT_DOUBLE_EQ(figures->ttft_cold_s, figures->prefill[1].ttft_s);
  EXPECT_GE(figures->ttft_cached_prompt_tokens, 64);
  EXPECT_LT(figures->ttft_cached_prompt_tokens, 80);
  ASSERT_EQ(figures->decode.size(), 2u);
  for (const auto& d : figures->decode) {
    EXPECT_GT(d.tokens_per_s, 0.0);
    EXPECT_GT(d.step_s, 0.0);
  }
  EXPECT_EQ(figures->decode[1].batch, 4);
  EXPECT_FALSE(lines.empty());
}

}  // namespace
}  // namespace tern::cli
