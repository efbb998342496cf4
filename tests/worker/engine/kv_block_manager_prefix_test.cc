// KvBlockManager prefix caching: which cached blocks a new sequence reuses,
// when full blocks enter the cache, duplicates, Reset, and caching turned off.
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "common/block_hash.h"
#include "tests/worker/engine/kv_block_manager_test_util.h"
#include "worker/engine/kv_block_manager.h"

namespace tern::worker {
namespace {

TEST(KvBlockManagerTest, ReusesLongestCachedPrefixAcrossSequences) {
  auto manager = MakeManager(16, 20);
  const std::vector<int32_t> a = Tokens(48, 100);
  const std::vector<uint64_t> hashes = HashPrefixBlocks(a, 16);
  auto first = manager->Allocate(1, a);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(manager->CommitComputed(1, 48).ok());
  EXPECT_EQ(DrainUnnumbered(*manager), std::vector<KvEvent>{Stored(hashes, std::nullopt)});

  // Shares A's first two blocks, then differs.
  const std::vector<int32_t> b = Concat(Tokens(32, 100), Tokens(20, 900));
  auto second = manager->Allocate(2, b);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->num_cached_tokens, 32);
  ASSERT_EQ(second->block_table.size(), 4u);
  EXPECT_EQ(second->block_table[0], first->block_table[0]);
  EXPECT_EQ(second->block_table[1], first->block_table[1]);
  EXPECT_NE(second->block_table[2], first->block_table[2]);
  EXPECT_EQ(*manager->NumComputedTokens(2), 32);
  EXPECT_EQ(manager->num_free_blocks(), 20 - 3 - 2);
  EXPECT_EQ(manager->stats().prefix_query_tokens, 48 + 52);
  EXPECT_EQ(manager->stats().prefix_hit_tokens, 32);
  EXPECT_DOUBLE_EQ(manager->stats().prefix_hit_rate(), 32.0 / 100.0);
}

TEST(KvBlockManagerTest, ChainedHashesDoNotMatchALaterBlockAlone) {
  auto manager = MakeManager(4, 10);
  ASSERT_TRUE(manager->Allocate(1, Tokens(9, 0)).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 9).ok());
  // Same second block, different first block: nothing is shared.
  auto other = manager->Allocate(2, Concat(Tokens(4, 50), Tokens(5, 4)));
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->num_cached_tokens, 0);
}

TEST(KvBlockManagerTest, AlwaysLeavesOnePromptTokenToCompute) {
  auto manager = MakeManager(16, 10);
  const std::vector<int32_t> prompt = Tokens(32, 7);
  ASSERT_TRUE(manager->Allocate(1, prompt).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 32).ok());
  EXPECT_EQ(manager->num_cached_blocks(), 2);
  auto again = manager->Allocate(2, prompt);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->num_cached_tokens, 16);  // the last block is computed again
  auto longer = manager->Allocate(3, Tokens(33, 7));
  ASSERT_TRUE(longer.ok());
  EXPECT_EQ(longer->num_cached_tokens, 32);
}

TEST(KvBlockManagerTest, CommitsOnlyComputedBlocksAndCoalescesEachCommit) {
  auto manager = MakeManager(4, 8);
  const std::vector<int32_t> prompt = Tokens(20, 0);
  const std::vector<uint64_t> h = HashPrefixBlocks(prompt, 4);
  ASSERT_TRUE(manager->Allocate(1, prompt).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 6).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 13).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 13).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 20).ok());
  EXPECT_EQ(DrainUnnumbered(*manager),
            (std::vector<KvEvent>{Stored({h[0]}, std::nullopt), Stored({h[1], h[2]}, h[0]),
                                  Stored({h[3], h[4]}, h[2])}));
  EXPECT_EQ(manager->CommitComputed(1, 19).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager->CommitComputed(1, 21).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager->CommitComputed(2, 1).code(), absl::StatusCode::kNotFound);
}

TEST(KvBlockManagerTest, DuplicateHashKeepsOneCachedCopy) {
  auto manager = MakeManager(4, 12);
  const std::vector<int32_t> a = Tokens(9, 0);
  const std::vector<int32_t> b = Concat(Tokens(8, 0), Tokens(5, 30));
  const std::vector<uint64_t> hb = HashPrefixBlocks(b, 4);
  // Both sequences compute the shared blocks at the same time.
  auto first = manager->Allocate(1, a);
  auto second = manager->Allocate(2, b);
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_EQ(second->num_cached_tokens, 0);
  ASSERT_TRUE(manager->CommitComputed(1, 9).ok());
  ASSERT_TRUE(manager->CommitComputed(2, 13).ok());
  EXPECT_EQ(DrainUnnumbered(*manager),
            (std::vector<KvEvent>{Stored({hb[0], hb[1]}, std::nullopt), Stored({hb[2]}, hb[1])}));
  EXPECT_EQ(manager->num_cached_blocks(), 3);
  EXPECT_EQ(manager->stats().duplicate_blocks, 2);
  ASSERT_TRUE(manager->Free(2).ok());
  // Sequence 2's copies of the shared blocks were plain blocks: free, uncached.
  EXPECT_EQ(manager->num_free_blocks(), 12 - 3);
  EXPECT_EQ(manager->num_cached_blocks(), 3);
  ASSERT_TRUE(manager->Free(1).ok());
  auto third = manager->Allocate(3, b);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->num_cached_tokens, 12);
  EXPECT_EQ(third->block_table[0], first->block_table[0]);
  EXPECT_EQ(third->block_table[1], first->block_table[1]);
  EXPECT_EQ(third->block_table[2], second->block_table[2]);
  // Filling the pool evicts each cached hash once; nothing else was cached.
  manager->DrainEvents();
  ASSERT_TRUE(manager->Free(3).ok());
  ASSERT_TRUE(manager->Allocate(4, Tokens(48, 1000)).ok());
  std::vector<KvEvent> events = manager->DrainEvents();
  ASSERT_EQ(events.size(), 1u);
  std::set<uint64_t> removed(events[0].block_hashes.begin(), events[0].block_hashes.end());
  EXPECT_EQ(removed, (std::set<uint64_t>{hb[0], hb[1], hb[2]}));
  EXPECT_EQ(events[0].block_hashes.size(), 3u);
}

TEST(KvBlockManagerTest, ResetForgetsTheCacheAndRecordsAllCleared) {
  auto manager = MakeManager(4, 6);
  ASSERT_TRUE(manager->Allocate(1, Tokens(8, 0)).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 8).ok());
  ASSERT_TRUE(manager->Free(1).ok());
  ASSERT_TRUE(manager->Allocate(2, Tokens(9, 50)).ok());
  ASSERT_TRUE(manager->CommitComputed(2, 9).ok());  // cached and held
  manager->Reset();
  std::vector<KvEvent> events = manager->DrainEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, KvEventKind::kAllBlocksCleared);
  EXPECT_EQ(manager->num_cached_blocks(), 0);
  EXPECT_EQ(manager->num_free_blocks(), 3);
  EXPECT_EQ(manager->Allocate(3, Concat(Tokens(8, 0), {1})).value().num_cached_tokens, 0);
  // Sequence 2 keeps its blocks; freeing it returns them all as plain blocks.
  ASSERT_TRUE(manager->Free(2).ok());
  ASSERT_TRUE(manager->Free(3).ok());
  EXPECT_EQ(manager->num_free_blocks(), 6);
  EXPECT_EQ(manager->num_cached_blocks(), 0);
  EXPECT_TRUE(manager->DrainEvents().empty());
}

TEST(KvBlockManagerTest, WithoutPrefixCachingNothingIsSharedOrReported) {
  auto manager = MakeManager(4, 8, /*prefix_caching=*/false);
  ASSERT_TRUE(manager->Allocate(1, Tokens(9, 0)).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 9).ok());
  ASSERT_TRUE(manager->Free(1).ok());
  auto again = manager->Allocate(2, Tokens(9, 0));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->num_cached_tokens, 0);
  EXPECT_EQ(manager->num_cached_blocks(), 0);
  EXPECT_TRUE(manager->DrainEvents().empty());
}

}  // namespace
}  // namespace tern::worker
