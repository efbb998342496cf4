// The executor against Model::Forward (the single-sequence forward pass over
// a contiguous KV cache and the kernels' dense attention), and against itself
// at tp 1 for tensor parallelism, batching and paged block placement.
#include "worker/model/executor.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cli/model/synth.h"
#include "kernels/dispatch.h"
#include "tests/testing/reference_forward.h"
#include "tests/testing/tiny_model.h"
#include "worker/model/model.h"

namespace tern::worker {
namespace {

using testing::KvCache;
using testing::ReferenceForward;

constexpr int32_t kBlockSize = 4;  // small, so short prompts span many blocks
constexpr double kRelTol = 1e-4;
// Tensor parallelism sums a row-parallel product's partial sums in another
// order. Where the kernels round activations to bf16, a last-bit f32
// difference can move one activation across a bf16 rounding boundary (2^-8
// relative in that element) and the next layers carry it: 2^-9 of the
// largest logit still catches a wrong shard, which is off by order one.
double TpRelTol() {
  return kernels::RoundsActivations(kernels::ActiveKernels().isa) ? 0x1p-9 : kRelTol;
}

// The tiny presets, written once per test binary.
const Model* LoadPreset(const std::string& preset) {
  static std::map<std::string, std::unique_ptr<Model>> models;
  auto it = models.find(preset);
  if (it != models.end()) return it->second.get();
  std::string dir;
  if (preset == "tiny") {
    dir = testing::TinyModelDir();
  } else if (!testing::TinyModelDir().empty()) {
    dir = (std::filesystem::temp_directory_path() /
           ("tern-test-" + preset + "-" + std::to_string(getpid())))
              .string();
    SynthOptions options;
    options.preset = preset;
    options.seed = 11;
    options.tokenizer_dir = testing::TokenizerDir();
    options.write_gguf = false;
    const absl::Status status = WriteSyntheticCheckpoint(options, dir);
    if (!status.ok()) {
      ADD_FAILURE() << status;
      return nullptr;
    }
  }
  if (dir.empty()) return nullptr;
  auto model = Model::Load(dir);
  if (!model.ok()) {
    ADD_FAILURE() << model.status();
    return nullptr;
  }
  if (preset != "tiny") std::filesystem::remove_all(dir);  // the mmap stays valid
  return (models[preset] = std::move(*model)).get();
}

#define REQUIRE_MODEL(var, preset)       \
  const Model* var = LoadPreset(preset); \
  if (var == nullptr) GTEST_SKIP() << "tokenizer files are not installed"

std::unique_ptr<Executor> MakeExecutor(const Model* model, int32_t tp,
                                       int32_t max_batch_tokens = 256) {
  ExecutorOptions options;
  options.tp = tp;
  options.block_size = kBlockSize;
  options.max_batch_tokens = max_batch_tokens;
  options.kv_cache_bytes = int64_t{8} << 20;
  auto executor = Executor::Create(model, options);
  EXPECT_TRUE(executor.ok()) << executor.status();
  return executor.ok() ? std::move(*executor) : nullptr;
}

std::vector<int32_t> RandomTokens(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> id(0, 128000);
  std::vector<int32_t> out(n);
  for (int32_t& t : out) t = id(rng);
  return out;
}

int32_t Argmax(absl::Span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// max |a - b| <= rel_tol * max |want|.
void ExpectClose(absl::Span<const float> got, absl::Span<const float> want, const std::string& what,
                 double rel_tol = kRelTol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  float max_abs = 0, max_diff = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_abs = std::max(max_abs, std::abs(want[i]));
    max_diff = std::max(max_diff, std::abs(got[i] - want[i]));
  }
  EXPECT_LE(max_diff, rel_tol * max_abs) << what << ": max |logit| " << max_abs;
}

// A sequence and its blocks in one executor's pool.
struct Sequence {
  std::vector<int32_t> tokens;  // all tokens fed so far
  std::vector<int32_t> blocks;
};

// Hands out block ids in a fixed order (identity, or a permutation).
class Blocks {
 public:
  Blocks(int32_t num_blocks, bool scrambled, uint32_t seed = 3) : order_(num_blocks) {
    std::iota(order_.begin(), order_.end(), 0);
    if (scrambled) std::shuffle(order_.begin(), order_.end(), std::mt19937(seed));
  }
  void Cover(Sequence& s, size_t positions) {
    while (s.blocks.size() * kBlockSize < positions) {
      ASSERT_LT(next_, order_.size()) << "test pool too small";
      s.blocks.push_back(order_[next_++]);
    }
  }

 private:
  std::vector<int32_t> order_;
  size_t next_ = 0;
};

// Feeds `tokens` to `s` in chunks of `chunk`; returns the logits after the last.
std::vector<float> Feed(Executor& e, Blocks& blocks, Sequence& s, absl::Span<const int32_t> tokens,
                        size_t chunk) {
  std::vector<float> logits(e.config().vocab_size);
  for (size_t done = 0; done < tokens.size(); done += chunk) {
    const size_t n = std::min(chunk, tokens.size() - done);
    const int32_t start = static_cast<int32_t>(s.tokens.size());
    s.tokens.insert(s.tokens.end(), tokens.begin() + done, tokens.begin() + done + n);
    blocks.Cover(s, s.tokens.size());
    StepSequence step{tokens.subspan(done, n), start, s.blocks, done + n == tokens.size()};
    const absl::Status status = e.Step({&step, 1}, absl::MakeSpan(logits));
    EXPECT_TRUE(status.ok()) << status;
  }
  return logits;
}

std::vector<float> ReferenceLogits(const Model& model, absl::Span<const int32_t> tokens) {
  KvCache cache(model.config(), static_cast<int>(tokens.size()));
  std::vector<float> logits;
  EXPECT_TRUE(ReferenceForward(model, tokens, cache, &logits).ok());
  return logits;
}

TEST(ExecutorTest, Tp1MatchesModelForwardInOneChunkSeveralChunksAndDecode) {
  REQUIRE_MODEL(model, "tiny");
  auto e = MakeExecutor(model, 1);
  ASSERT_NE(e, nullptr);
  Blocks blocks(e->num_blocks(), false);
  for (int len : {1, 7, 33, 70}) {
    const std::vector<int32_t> prompt = RandomTokens(len, len);
    const std::vector<float> want = ReferenceLogits(*model, prompt);
    Sequence whole, chunked;
    ExpectClose(Feed(*e, blocks, whole, prompt, prompt.size()), want,
                absl::StrCat("one chunk, length ", len));
    ExpectClose(Feed(*e, blocks, chunked, prompt, 5), want, absl::StrCat("chunks, length ", len));
  }
  // Token-by-token decode of the greedy continuation, checked at every step.
  const std::vector<int32_t> prompt = RandomTokens(9, 99);
  Sequence s;
  KvCache cache(model->config(), 64);
  std::vector<float> want;
  ASSERT_TRUE(ReferenceForward(*model, prompt, cache, &want).ok());
  std::vector<float> got = Feed(*e, blocks, s, prompt, 1);
  for (int step = 0; step < 12; ++step) {
    ExpectClose(got, want, absl::StrCat("decode step ", step));
    const int32_t next = Argmax(want);
    ASSERT_EQ(Argmax(got), next) << "decode step " << step;
    ASSERT_TRUE(ReferenceForward(*model, {&next, 1}, cache, &want).ok());
    got = Feed(*e, blocks, s, {&next, 1}, 1);
  }
}

// Prefill then greedy decode; returns the logits after the prompt and the tokens.
std::pair<std::vector<float>, std::vector<int32_t>> Greedy(Executor& e,
                                                           absl::Span<const int32_t> prompt,
                                                           int steps) {
  Blocks blocks(e.num_blocks(), false);
  Sequence s;
  std::vector<float> first = Feed(e, blocks, s, prompt, 16);
  std::vector<float> logits = first;
  std::vector<int32_t> out;
  for (int i = 0; i < steps; ++i) {
    out.push_back(Argmax(logits));
    logits = Feed(e, blocks, s, {&out.back(), 1}, 1);
  }
  return {first, out};
}

class ExecutorTpTest : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(ExecutorTpTest, SameLogitsAndGreedyTokensAsTp1) {
  const auto& [preset, tp] = GetParam();
  REQUIRE_MODEL(model, preset);
  auto one = MakeExecutor(model, 1);
  auto many = MakeExecutor(model, tp);
  ASSERT_NE(one, nullptr);
  ASSERT_NE(many, nullptr);
  EXPECT_EQ(many->tp(), tp);
  EXPECT_GT(many->owned_weight_bytes(), 0);
  for (int len : {1, 20, 45}) {
    const std::vector<int32_t> prompt = RandomTokens(len, 1000 + len);
    const auto [want_logits, want_tokens] = Greedy(*one, prompt, 10);
    const auto [got_logits, got_tokens] = Greedy(*many, prompt, 10);
    ExpectClose(got_logits, want_logits, absl::StrCat(preset, " tp ", tp, " length ", len),
                TpRelTol());
    EXPECT_EQ(got_tokens, want_tokens) << preset << " tp " << tp << " length " << len;
  }
}

INSTANTIATE_TEST_SUITE_P(Presets, ExecutorTpTest,
                         ::testing::Values(std::make_tuple("tiny", 2), std::make_tuple("tiny", 4),
                                           std::make_tuple("tiny-untied", 2),
                                           std::make_tuple("tiny-untied", 4)));

// Up to 32 sequences, some decoding and some prefilling, in one Step give
// the logits each gives alone.
void CheckBatching(int32_t tp) {
  REQUIRE_MODEL(model, "tiny");
  auto batched = MakeExecutor(model, tp, 512);
  auto alone = MakeExecutor(model, tp, 512);
  ASSERT_NE(batched, nullptr);
  ASSERT_NE(alone, nullptr);
  const size_t vocab = model->config().vocab_size;
  for (int num : {1, 2, 5, 32}) {
    Blocks batch_blocks(batched->num_blocks(), true, num);
    std::vector<Sequence> seqs(num);
    std::vector<std::vector<int32_t>> history(num), next(num);
    // Odd sequences have a history (they decode or continue a prefill now).
    for (int i = 0; i < num; ++i) {
      if (i % 2 == 1) {
        history[i] = RandomTokens(3 + i, 500 + i);
        Feed(*batched, batch_blocks, seqs[i], history[i], 8);
      }
      next[i] = RandomTokens(i % 3 == 0 ? 1 + i % 7 : 1, 700 + i);
    }
    std::vector<StepSequence> steps(num);
    for (int i = 0; i < num; ++i) {
      const int32_t start = static_cast<int32_t>(seqs[i].tokens.size());
      seqs[i].tokens.insert(seqs[i].tokens.end(), next[i].begin(), next[i].end());
      batch_blocks.Cover(seqs[i], seqs[i].tokens.size());
      steps[i] = {next[i], start, seqs[i].blocks, /*want_logits=*/i != 2};
    }
    std::vector<float> logits(num * vocab, NAN);
    ASSERT_TRUE(batched->Step(steps, absl::MakeSpan(logits)).ok());
    int row = 0;
    for (int i = 0; i < num; ++i) {
      if (i == 2) continue;
      Blocks blocks(alone->num_blocks(), false);
      Sequence s;
      std::vector<int32_t> all = history[i];
      all.insert(all.end(), next[i].begin(), next[i].end());
      const std::vector<float> want = Feed(*alone, blocks, s, all, all.size());
      ExpectClose(absl::MakeConstSpan(logits.data() + row * vocab, vocab), want,
                  absl::StrCat("tp ", tp, ", ", num, " sequences, sequence ", i));
      ++row;
    }
  }
}

TEST(ExecutorTest, BatchOfMixedPrefillAndDecodeMatchesEachAlone) { CheckBatching(1); }
TEST(ExecutorTest, BatchOfMixedPrefillAndDecodeMatchesEachAloneTp2) { CheckBatching(2); }

TEST(ExecutorTest, ScrambledBlockTableGivesTheSameLogitsAsIdentity) {
  REQUIRE_MODEL(model, "tiny");
  auto e = MakeExecutor(model, 1);
  ASSERT_NE(e, nullptr);
  const std::vector<int32_t> prompt = RandomTokens(37, 5);
  Blocks identity(e->num_blocks(), false);
  Blocks scrambled(e->num_blocks(), true);
  Sequence a, b;
  const std::vector<float> want = Feed(*e, identity, a, prompt, 10);
  const std::vector<float> got = Feed(*e, scrambled, b, prompt, 10);
  std::vector<int32_t> sorted = b.blocks;
  std::sort(sorted.begin(), sorted.end());
  ASSERT_NE(sorted, b.blocks) << "the scrambled table should not be in order";
  ExpectClose(got, want, "scrambled table");
  ExpectClose(Feed(*e, scrambled, b, {&prompt[3], 1}, 1), Feed(*e, identity, a, {&prompt[3], 1}, 1),
              "decode after a scrambled prefill");
}

TEST(ExecutorTest, InvalidStepsAreRejectedAndWriteNothing) {
  REQUIRE_MODEL(model, "tiny");
  auto e = MakeExecutor(model, 1, 16);
  ASSERT_NE(e, nullptr);
  const size_t vocab = model->config().vocab_size;
  const std::vector<int32_t> tokens = RandomTokens(6, 8);
  const std::vector<int32_t> table = {0, 1};
  std::vector<float> logits(2 * vocab, -7.0f);
  const std::vector<int32_t> bad_token = {1, static_cast<int32_t>(vocab)};
  const std::vector<int32_t> negative = {-1};
  const std::vector<int32_t> outside = {0, e->num_blocks()};
  const std::vector<int32_t> many(17, 1);
  const std::vector<int32_t> big_table = {0, 1, 2, 3, 4};
  struct Case {
    const char* what;
    StepSequence seq;
    size_t logits_size;
  };
  const Case cases[] = {
      {"empty", {{}, 0, table, true}, vocab},
      {"token id past the vocabulary", {bad_token, 0, table, true}, vocab},
      {"negative token id", {negative, 0, table, true}, vocab},
      {"table too short", {tokens, 3, table, true}, vocab},
      {"block outside the pool", {tokens, 0, outside, true}, vocab},
      {"negative start", {tokens, -1, table, true}, vocab},
      {"too many tokens", {many, 0, big_table, true}, vocab},
      {"logits too small", {tokens, 0, table, true}, vocab - 1},
  };
  // A sequence in blocks 0 and 1; each rejected batch also holds a valid
  // sequence naming the same blocks with other tokens.
  Blocks blocks(e->num_blocks(), false);
  Sequence s;
  Feed(*e, blocks, s, tokens, tokens.size());
  ASSERT_EQ(s.blocks, table);
  const std::vector<int32_t> other = RandomTokens(6, 9);
  for (const Case& c : cases) {
    const StepSequence batch[] = {{other, 0, table, true}, c.seq};
    const absl::Status status =
        e->Step(batch, absl::MakeSpan(logits.data(), c.logits_size + vocab));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.what << ": " << status;
    EXPECT_TRUE(std::all_of(logits.begin(), logits.end(), [](float v) { return v == -7.0f; }))
        << c.what;
  }
  // No KV was written: the sequence's next token still sees its own keys.
  std::vector<int32_t> all = tokens;
  all.push_back(42);
  ExpectClose(Feed(*e, blocks, s, {&all.back(), 1}, 1), ReferenceLogits(*model, all),
              "after the rejected steps");
}

TEST(ExecutorTest, CreateRejectsBadShapesAndEmptyPools) {
  REQUIRE_MODEL(model, "tiny");
  ExecutorOptions options;
  options.kv_cache_bytes = int64_t{1} << 20;
  options.tp = 3;
  EXPECT_EQ(Executor::Create(model, options).status().code(), absl::StatusCode::kInvalidArgument);
  options.tp = 8;  // 4 attention heads
  EXPECT_EQ(Executor::Create(model, options).status().code(), absl::StatusCode::kInvalidArgument);
  options.tp = 1;
  options.kv_cache_bytes = 100;
  EXPECT_EQ(Executor::Create(model, options).status().code(), absl::StatusCode::kInvalidArgument);
  // Pool sizing: 2 (k, v) x layers x block x stored kv heads x head_dim x 4
  // bytes; tp 4 stores each of the 2 kv heads twice.
  const ModelConfig& c = model->config();
  for (int32_t tp : {1, 2, 4}) {
    options.tp = tp;
    options.block_size = 16;
    options.kv_cache_bytes = int64_t{3} << 20;
    auto e = Executor::Create(model, options);
    ASSERT_TRUE(e.ok()) << e.status();
    const int64_t stored_heads = std::max(tp, c.num_key_value_heads);
    const int64_t per_block = 2LL * c.num_hidden_layers * 16 * stored_heads * c.head_dim * 4;
    EXPECT_EQ((*e)->bytes_per_block(), per_block);
    EXPECT_EQ((*e)->num_blocks(), options.kv_cache_bytes / per_block);
    EXPECT_EQ((*e)->kv_pool_bytes(), (*e)->num_blocks() * per_block);
    EXPECT_EQ((*e)->owned_weight_bytes() == 0, tp == 1);
  }
}

// Manual timing, not a check: TERN_EXECUTOR_TIMING_MODEL=DIR and
// --gtest_also_run_disabled_tests print prefill and decode speed at tp 1, 2.
TEST(ExecutorTest, DISABLED_Timing) {
  const char* dir = std::getenv("TERN_EXECUTOR_TIMING_MODEL");
  if (dir == nullptr) GTEST_SKIP() << "set TERN_EXECUTOR_TIMING_MODEL";
  auto model = Model::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  using Clock = std::chrono::steady_clock;
  for (int32_t tp : {1, 2}) {
    ExecutorOptions options;
    options.tp = tp;
    options.kv_cache_bytes = int64_t{256} << 20;
    auto e = Executor::Create(model->get(), options);
    ASSERT_TRUE(e.ok()) << e.status();
    Blocks blocks((*e)->num_blocks(), false);
    Sequence s;
    const std::vector<int32_t> prompt = RandomTokens(512, 1);
    auto t0 = Clock::now();
    std::vector<float> logits = Feed(**e, blocks, s, prompt, 512);
    const double prefill = std::chrono::duration<double>(Clock::now() - t0).count();
    constexpr int kSteps = 8;
    t0 = Clock::now();
    for (int i = 0; i < kSteps; ++i) {
      const int32_t next = Argmax(logits);
      logits = Feed(**e, blocks, s, {&next, 1}, 1);
    }
    const double decode = std::chrono::duration<double>(Clock::now() - t0).count() / kSteps;
    std::printf("tp %d: prefill 512 tokens %.0f tok/s, decode %.1f ms/token at 512 context\n", tp,
                512 / prefill, decode * 1e3);
  }
}

}  // namespace
}  // namespace tern::worker
