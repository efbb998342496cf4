#include "worker/engine/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <vector>

namespace tern::worker {
namespace {

std::unique_ptr<KvBlockManager> MakeKv(int32_t block_size, int32_t num_blocks) {
  KvBlockManagerOptions options;
  options.block_size = block_size;
  options.num_blocks = num_blocks;
  return std::move(KvBlockManager::Create(options)).value();
}

std::vector<int32_t> Tokens(int n, int32_t first) {
  std::vector<int32_t> tokens(n);
  std::iota(tokens.begin(), tokens.end(), first);
  return tokens;
}

const ScheduledChunk* ChunkOf(const StepPlan& plan, KvSequenceId id) {
  for (const ScheduledChunk& chunk : plan.chunks) {
    if (chunk.id == id) return &chunk;
  }
  return nullptr;
}

// Runs one step as the engine does, with a fake sampler: every chunk that
// wants logits gets token 7 appended.
StepPlan RunStep(Scheduler& scheduler) {
  StepPlan plan = scheduler.Schedule();
  EXPECT_TRUE(plan.failed.empty());
  scheduler.Commit(plan);
  for (const ScheduledChunk& chunk : plan.chunks) {
    if (chunk.want_logits) {
      EXPECT_TRUE(scheduler.AppendToken(chunk.id, 7).ok());
    }
  }
  return plan;
}

TEST(SchedulerTest, BudgetMixesDecodesWithChunkedPrefill) {
  auto kv = MakeKv(4, 100);
  Scheduler scheduler({.max_num_seqs = 8, .max_num_batched_tokens = 10}, kv.get());
  ASSERT_TRUE(scheduler.Add(1, Tokens(3, 0)).ok());
  StepPlan plan = RunStep(scheduler);
  ASSERT_EQ(plan.chunks.size(), 1u);
  EXPECT_EQ(plan.chunks[0].count, 3);
  EXPECT_TRUE(plan.chunks[0].want_logits);

  ASSERT_TRUE(scheduler.Add(2, Tokens(20, 100)).ok());
  // Each step: sequence 1's decode first, then 9 prompt tokens of sequence 2.
  for (int step = 0; step < 3; ++step) {
    plan = RunStep(scheduler);
    ASSERT_EQ(plan.chunks.size(), 2u) << step;
    EXPECT_EQ(plan.chunks[0].id, 1u);
    EXPECT_EQ(plan.chunks[0].count, 1);
    EXPECT_TRUE(plan.chunks[0].want_logits);
    EXPECT_EQ(plan.chunks[1].id, 2u);
    EXPECT_EQ(plan.chunks[1].start, 9 * step);
    EXPECT_EQ(plan.chunks[1].count, step < 2 ? 9 : 2);
    EXPECT_EQ(plan.chunks[1].want_logits, step == 2);
    EXPECT_LE(plan.num_tokens, 10);
  }
  plan = RunStep(scheduler);
  EXPECT_EQ(plan.num_tokens, 2);  // both decode now
  EXPECT_EQ(scheduler.QueuedPrefillTokens(), 0);
}

TEST(SchedulerTest, LongPromptIsChunkedWhileRunningSequencesDecodeEveryStep) {
  auto kv = MakeKv(16, 1024);
  Scheduler scheduler({.max_num_seqs = 8, .max_num_batched_tokens = 256}, kv.get());
  for (KvSequenceId id = 1; id <= 4; ++id) ASSERT_TRUE(scheduler.Add(id, Tokens(10, id * 50)).ok());
  RunStep(scheduler);
  ASSERT_TRUE(scheduler.Add(99, Tokens(4096, 1000)).ok());
  EXPECT_EQ(scheduler.QueuedPrefillTokens(), 4096);
  int steps = 0;
  int32_t prefilled = 0;
  while (true) {
    const StepPlan plan = RunStep(scheduler);
    ++steps;
    for (KvSequenceId id = 1; id <= 4; ++id) {
      const ScheduledChunk* decode = ChunkOf(plan, id);
      ASSERT_NE(decode, nullptr) << "step " << steps << " skipped the decode of " << id;
      EXPECT_EQ(decode->count, 1);
    }
    const ScheduledChunk* chunk = ChunkOf(plan, 99);
    ASSERT_NE(chunk, nullptr);
    EXPECT_EQ(chunk->start, prefilled);
    EXPECT_LE(plan.num_tokens, 256);
    prefilled += chunk->count;
    if (chunk->want_logits) break;
  }
  EXPECT_EQ(prefilled, 4096);
  EXPECT_EQ(steps, (4096 + 251) / 252);
  EXPECT_EQ(scheduler.Find(99)->tokens.size(), 4097u);
}

TEST(SchedulerTest, PreemptsTheMostRecentlyAdmittedWhenBlocksRunOutAndResumesIt) {
  auto kv = MakeKv(2, 6);
  Scheduler scheduler({.max_num_seqs = 4, .max_num_batched_tokens = 64}, kv.get());
  ASSERT_TRUE(scheduler.Add(1, Tokens(4, 0)).ok());
  ASSERT_TRUE(scheduler.Add(2, Tokens(4, 100)).ok());
  StepPlan plan = RunStep(scheduler);
  EXPECT_EQ(plan.chunks.size(), 2u);
  // Each decode eventually needs a third block; the pool has six.
  std::vector<KvSequenceId> preempted;
  for (int step = 0; step < 6 && preempted.empty(); ++step) {
    plan = RunStep(scheduler);
    preempted = plan.preempted;
  }
  ASSERT_EQ(preempted, std::vector<KvSequenceId>{2});
  EXPECT_EQ(scheduler.preemptions(), 1u);
  EXPECT_EQ(scheduler.num_running(), 1);
  EXPECT_EQ(scheduler.num_waiting(), 1);
  const ScheduledSequence* victim = scheduler.Find(2);
  EXPECT_FALSE(victim->running);
  EXPECT_EQ(victim->num_computed, 0);
  const std::vector<int32_t> victim_tokens = victim->tokens;
  ASSERT_NE(ChunkOf(plan, 1), nullptr);  // the survivor kept decoding

  // Once the survivor ends, the victim recomputes everything it had
  // (prompt and generated tokens), reusing its cached prefix.
  ASSERT_TRUE(scheduler.Remove(1).ok());
  plan = RunStep(scheduler);
  const ScheduledChunk* resumed = ChunkOf(plan, 2);
  ASSERT_NE(resumed, nullptr);
  EXPECT_GT(resumed->start, 0);
  EXPECT_EQ(resumed->start + resumed->count, static_cast<int32_t>(victim_tokens.size()));
  EXPECT_TRUE(resumed->want_logits);
  std::vector<int32_t> expected = victim_tokens;
  expected.push_back(7);
  EXPECT_EQ(scheduler.Find(2)->tokens, expected);
  EXPECT_EQ(scheduler.Find(2)->first_cached_tokens, 0);
}

TEST(SchedulerTest, TheOnlySequenceIsNeverPreempted) {
  auto kv = MakeKv(2, 3);
  Scheduler scheduler({.max_num_seqs = 4, .max_num_batched_tokens = 64}, kv.get());
  ASSERT_TRUE(scheduler.Add(1, Tokens(3, 0)).ok());
  // It grows to the whole pool (6 tokens) without preemption.
  for (int step = 0; step < 3; ++step) {
    const StepPlan plan = RunStep(scheduler);
    EXPECT_TRUE(plan.preempted.empty());
    ASSERT_EQ(plan.chunks.size(), 1u);
  }
  EXPECT_EQ(scheduler.Find(1)->tokens.size(), 6u);
  EXPECT_EQ(scheduler.preemptions(), 0u);
}

TEST(SchedulerTest, WaitingHeadThatDoesNotFitIsNotOvertaken) {
  auto kv = MakeKv(4, 20);
  Scheduler scheduler({.max_num_seqs = 16, .max_num_batched_tokens = 1000}, kv.get());
  ASSERT_TRUE(scheduler.Add(1, Tokens(40, 0)).ok());  // 10 blocks
  RunStep(scheduler);
  ASSERT_TRUE(scheduler.Add(2, Tokens(48, 500)).ok());  // 12 blocks: does not fit yet
  for (KvSequenceId id = 10; id < 40; ++id) ASSERT_TRUE(scheduler.Add(id, {1, 2}).ok());
  for (int step = 0; step < 5; ++step) {
    const StepPlan plan = RunStep(scheduler);
    ASSERT_EQ(plan.chunks.size(), 1u) << "a later arrival overtook the waiting head";
    EXPECT_EQ(plan.chunks[0].id, 1u);
  }
  EXPECT_EQ(scheduler.num_waiting(), 31);
  ASSERT_TRUE(scheduler.Remove(1).ok());
  // Admission resumes in arrival order; each sequence runs to the end of the
  // queue as blocks free up.
  std::vector<KvSequenceId> admitted_order;
  for (int step = 0; step < 200 && (scheduler.num_running() + scheduler.num_waiting()) > 0;
       ++step) {
    const StepPlan plan = RunStep(scheduler);
    for (const ScheduledChunk& chunk : plan.chunks) {
      if (chunk.start == 0 && std::find(admitted_order.begin(), admitted_order.end(), chunk.id) ==
                                  admitted_order.end()) {
        admitted_order.push_back(chunk.id);
      }
    }
    // Sequences end after two generated tokens.
    for (KvSequenceId id : std::vector<KvSequenceId>(admitted_order)) {
      const ScheduledSequence* seq = scheduler.Find(id);
      if (seq && seq->running && seq->tokens.size() >= (id == 2 ? 50u : 4u)) {
        ASSERT_TRUE(scheduler.Remove(id).ok());
      }
    }
  }
  ASSERT_EQ(admitted_order.size(), 31u);
  EXPECT_EQ(admitted_order.front(), 2u);
  EXPECT_TRUE(std::is_sorted(admitted_order.begin(), admitted_order.end()));
}

TEST(SchedulerTest, RemovingSequencesFreesTheirBlocks) {
  auto kv = MakeKv(4, 16);
  Scheduler scheduler({.max_num_seqs = 1, .max_num_batched_tokens = 8}, kv.get());
  ASSERT_TRUE(scheduler.Add(1, Tokens(30, 0)).ok());
  ASSERT_TRUE(scheduler.Add(2, Tokens(5, 0)).ok());
  RunStep(scheduler);  // admits 1 (8 blocks), computes 8 tokens; 2 waits (max_num_seqs)
  EXPECT_EQ(kv->num_free_blocks(), 16 - 8);
  EXPECT_EQ(scheduler.QueuedPrefillTokens(), 22 + 5);
  ASSERT_TRUE(scheduler.Remove(2).ok());
  ASSERT_TRUE(scheduler.Remove(1).ok());
  EXPECT_EQ(kv->num_free_blocks(), 16);  // the two committed blocks stay cached, unreferenced
  EXPECT_EQ(kv->num_cached_blocks(), 2);
  EXPECT_EQ(kv->num_sequences(), 0);
  EXPECT_EQ(scheduler.num_running() + scheduler.num_waiting(), 0);
  EXPECT_EQ(scheduler.Remove(1).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(scheduler.Schedule().empty());
}

TEST(SchedulerTest, MaxNumSeqsBoundsTheRunningBatch) {
  auto kv = MakeKv(4, 100);
  Scheduler scheduler({.max_num_seqs = 2, .max_num_batched_tokens = 100}, kv.get());
  for (KvSequenceId id = 1; id <= 5; ++id) ASSERT_TRUE(scheduler.Add(id, {1, 2}).ok());
  const StepPlan plan = RunStep(scheduler);
  EXPECT_EQ(plan.chunks.size(), 2u);
  EXPECT_EQ(scheduler.num_running(), 2);
  EXPECT_EQ(scheduler.num_waiting(), 3);
  EXPECT_EQ(scheduler.Add(1, {1}).code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace tern::worker

namespace tern::worker {
namespace {

TEST(SchedulerTest, APrefixArrivingTwiceAtOnceIsComputedOnce) {
  auto kv = MakeKv(4, 200);
  Scheduler scheduler({.max_num_seqs = 8, .max_num_batched_tokens = 16}, kv.get());
  // Two prompts share 40 tokens (10 blocks); a third shares nothing.
  std::vector<int32_t> a = Tokens(40, 1000);
  std::vector<int32_t> b = a;
  a.push_back(1);
  b.push_back(2);
  ASSERT_TRUE(scheduler.Add(1, a).ok());
  ASSERT_TRUE(scheduler.Add(2, b).ok());
  ASSERT_TRUE(scheduler.Add(3, Tokens(8, 5000)).ok());
  StepPlan plan = RunStep(scheduler);
  EXPECT_NE(ChunkOf(plan, 1), nullptr);
  EXPECT_EQ(ChunkOf(plan, 2), nullptr) << "waits for sequence 1's blocks";
  int steps = 1;
  while (scheduler.Find(2) == nullptr || !scheduler.Find(2)->running) {
    RunStep(scheduler);
    ASSERT_LT(++steps, 20);
  }
  // Admitted once the shared blocks were cached: it computes only its last block.
  EXPECT_EQ(scheduler.Find(2)->first_cached_tokens, 40);
  EXPECT_TRUE(scheduler.Find(3)->running) << "sequence 3 was not held up";
}

TEST(SchedulerTest, WithoutTheWaitBothComputeTheSharedPrefix) {
  auto kv = MakeKv(4, 200);
  Scheduler scheduler(
      {.max_num_seqs = 8, .max_num_batched_tokens = 100, .wait_for_inflight_prefix = false},
      kv.get());
  std::vector<int32_t> a = Tokens(40, 1000);
  ASSERT_TRUE(scheduler.Add(1, a).ok());
  ASSERT_TRUE(scheduler.Add(2, a).ok());
  StepPlan plan = RunStep(scheduler);
  ASSERT_NE(ChunkOf(plan, 2), nullptr);
  EXPECT_EQ(scheduler.Find(2)->first_cached_tokens, 0);
}

TEST(SchedulerTest, AShortPromptIsNotHeldUpByALongPrefill) {
  auto kv = MakeKv(4, 200);
  Scheduler scheduler({.max_num_seqs = 4, .max_num_batched_tokens = 64}, kv.get());
  ASSERT_TRUE(scheduler.Add(1, Tokens(400, 0)).ok());
  StepPlan first = RunStep(scheduler);  // nobody else waits: the whole budget
  ASSERT_EQ(first.chunks.size(), 1u);
  EXPECT_EQ(first.chunks[0].count, 64);
  ASSERT_TRUE(scheduler.Add(2, Tokens(20, 1000)).ok());
  StepPlan shared = RunStep(scheduler);
  // The long prompt gets half the budget while 2 waits; 2 is prefilled whole.
  ASSERT_EQ(shared.chunks.size(), 2u);
  EXPECT_EQ(shared.chunks[0].id, 1u);
  EXPECT_EQ(shared.chunks[0].count, 32);
  EXPECT_EQ(shared.chunks[1].id, 2u);
  EXPECT_EQ(shared.chunks[1].count, 20);
  EXPECT_TRUE(shared.chunks[1].want_logits);
  // Nobody waits any more: the long prompt takes what the decode leaves.
  StepPlan next = RunStep(scheduler);
  ASSERT_EQ(next.chunks.size(), 2u);
  EXPECT_EQ(next.chunks[0].id, 2u);  // the decode first
  EXPECT_EQ(next.chunks[1].count, 63);
}

}  // namespace
}  // namespace tern::worker
