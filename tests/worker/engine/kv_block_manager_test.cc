// KvBlockManager: allocation, reference counts, LRU eviction of cached
// blocks and the sequence calls' contract. Prefix reuse and KV events have
// files of their own.
#include "worker/engine/kv_block_manager.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "common/block_hash.h"
#include "tests/worker/engine/kv_block_manager_test_util.h"

namespace tern::worker {
namespace {

TEST(KvBlockManagerTest, CreateRejectsOptionsOutOfRange) {
  KvBlockManagerOptions options;
  options.num_blocks = 0;
  EXPECT_EQ(KvBlockManager::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.num_blocks = 8;
  options.block_size = 0;
  EXPECT_EQ(KvBlockManager::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.block_size = 1 << 16;
  options.num_blocks = 1 << 16;  // 2^32 tokens
  EXPECT_EQ(KvBlockManager::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.block_size = 16;
  options.num_blocks = 8;
  options.max_pending_event_hashes = 7;  // a snapshot of 8 blocks would not fit
  EXPECT_EQ(KvBlockManager::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.max_pending_event_hashes = 8;
  EXPECT_TRUE(KvBlockManager::Create(options).ok());
}

TEST(KvBlockManagerTest, AllocatesOneBlockPerBlockSizeTokens) {
  auto manager = MakeManager(16, 10);
  auto allocation = manager->Allocate(1, Tokens(37, 0));
  ASSERT_TRUE(allocation.ok()) << allocation.status();
  EXPECT_EQ(allocation->num_cached_tokens, 0);
  EXPECT_EQ(allocation->block_table, (std::vector<KvBlockId>{0, 1, 2}));
  EXPECT_EQ(manager->num_free_blocks(), 7);
  EXPECT_EQ(*manager->NumTokens(1), 37);
  EXPECT_EQ(*manager->NumComputedTokens(1), 0);
  EXPECT_EQ(manager->num_sequences(), 1);
  EXPECT_EQ(manager->num_cached_blocks(), 0);  // nothing computed yet
}

TEST(KvBlockManagerTest, SharedBlockIsNotEvictedWhileAnySequenceHoldsIt) {
  auto manager = MakeManager(4, 4);
  ASSERT_TRUE(manager->Allocate(1, Tokens(5, 0)).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 5).ok());
  auto shared = manager->Allocate(2, Tokens(6, 0));
  ASSERT_TRUE(shared.ok());
  ASSERT_EQ(shared->num_cached_tokens, 4);
  ASSERT_TRUE(manager->Free(1).ok());
  // Block 0 is still held by sequence 2; only the never-used block and
  // sequence 1's partial block are free.
  EXPECT_EQ(manager->num_free_blocks(), 2);
  EXPECT_EQ(manager->Allocate(3, Tokens(12, 100)).status().code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(manager->Allocate(3, Tokens(8, 100)).ok());
  EXPECT_EQ(manager->num_cached_blocks(), 1);
  ASSERT_TRUE(manager->Free(2).ok());
  // Now unreferenced: it is the one block left to evict.
  EXPECT_EQ(manager->num_free_blocks(), 2);
  manager->DrainEvents();
  ASSERT_TRUE(manager->Allocate(4, Tokens(8, 200)).ok());
  EXPECT_EQ(DrainUnnumbered(*manager),
            std::vector<KvEvent>{Removed({HashPrefixBlocks(Tokens(4, 0), 4)[0]})});
  EXPECT_EQ(manager->num_cached_blocks(), 0);
  EXPECT_EQ(manager->stats().evictions, 1);
}

TEST(KvBlockManagerTest, EvictsLeastRecentlyUsedCachedBlockFirst) {
  auto manager = MakeManager(4, 3);
  const std::vector<int32_t> a = Tokens(4, 0), b = Tokens(4, 10), c = Tokens(4, 20);
  const uint64_t ha = HashPrefixBlocks(a, 4)[0], hb = HashPrefixBlocks(b, 4)[0],
                 hc = HashPrefixBlocks(c, 4)[0];
  const std::vector<int32_t>* prompts[] = {&a, &b, &c};
  for (KvSequenceId id = 1; id <= 3; ++id) {
    ASSERT_TRUE(manager->Allocate(id, *prompts[id - 1]).ok());
    ASSERT_TRUE(manager->CommitComputed(id, 4).ok());
  }
  for (KvSequenceId id = 1; id <= 3; ++id) ASSERT_TRUE(manager->Free(id).ok());
  EXPECT_EQ(manager->num_cached_blocks(), 3);
  EXPECT_EQ(manager->num_free_blocks(), 3);
  manager->DrainEvents();

  // A is used again (so B becomes the least recently used) and its second
  // block evicts B.
  auto reuse = manager->Allocate(4, Concat(a, {99}));
  ASSERT_TRUE(reuse.ok());
  EXPECT_EQ(reuse->num_cached_tokens, 4);
  EXPECT_EQ(DrainUnnumbered(*manager), std::vector<KvEvent>{Removed({hb})});
  ASSERT_TRUE(manager->Free(4).ok());
  EXPECT_EQ(CachedSet(*manager), (std::set<uint64_t>{ha, hc}));

  // The partial block sequence 4 gave back goes first, then C, then A.
  ASSERT_TRUE(manager->Allocate(5, Tokens(1, 500)).ok());
  EXPECT_TRUE(DrainUnnumbered(*manager).empty());
  ASSERT_TRUE(manager->Allocate(6, Tokens(1, 600)).ok());
  EXPECT_EQ(DrainUnnumbered(*manager), std::vector<KvEvent>{Removed({hc})});
  ASSERT_TRUE(manager->Allocate(7, Tokens(1, 700)).ok());
  EXPECT_EQ(DrainUnnumbered(*manager), std::vector<KvEvent>{Removed({ha})});
  EXPECT_EQ(manager->num_free_blocks(), 0);
  EXPECT_EQ(manager->stats().evictions, 3);
}

TEST(KvBlockManagerTest, EvictsTheTailOfAFreedPrefixBeforeItsHead) {
  auto manager = MakeManager(4, 4);
  const std::vector<int32_t> prompt = Tokens(12, 0);
  const std::vector<uint64_t> hashes = HashPrefixBlocks(prompt, 4);
  ASSERT_TRUE(manager->Allocate(1, prompt).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 12).ok());
  ASSERT_TRUE(manager->Free(1).ok());
  manager->DrainEvents();
  // One never-used block, then the three cached ones: last block first.
  ASSERT_TRUE(manager->Allocate(2, Tokens(12, 100)).ok());
  EXPECT_EQ(DrainUnnumbered(*manager), std::vector<KvEvent>{Removed({hashes[2], hashes[1]})});
  ASSERT_TRUE(manager->Free(2).ok());
  auto rest = manager->Allocate(3, Concat(Tokens(4, 0), {1}));
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(rest->num_cached_tokens, 4);  // the head of the prefix survived
}

TEST(KvBlockManagerTest, ResourceExhaustedLeavesStateUnchanged) {
  auto manager = MakeManager(4, 5);
  const std::vector<int32_t> a = Tokens(8, 0);
  ASSERT_TRUE(manager->Allocate(1, a).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 8).ok());
  ASSERT_TRUE(manager->Free(1).ok());
  ASSERT_TRUE(manager->Allocate(2, Tokens(3, 50)).ok());  // each holds a never-used block
  ASSERT_TRUE(manager->Allocate(9, Tokens(4, 90)).ok());
  manager->DrainEvents();
  // Free: one never-used block and A's two cached blocks. A prompt sharing
  // A's two blocks needs two more, but taking the shared ones leaves one.
  const int32_t free_before = manager->num_free_blocks();
  const std::set<uint64_t> cached_before = CachedSet(*manager);
  const std::vector<KvBlockId> table_before = Table(*manager, 2);
  ASSERT_EQ(free_before, 3);
  EXPECT_EQ(manager->Allocate(3, Concat(a, Tokens(6, 70))).status().code(),
            absl::StatusCode::kResourceExhausted);
  // Growing sequence 2 to 17 tokens needs four more blocks.
  EXPECT_EQ(manager->AppendTokens(2, Tokens(14, 0)).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(manager->num_free_blocks(), free_before);
  EXPECT_EQ(CachedSet(*manager), cached_before);
  EXPECT_EQ(Table(*manager, 2), table_before);
  EXPECT_EQ(*manager->NumTokens(2), 3);
  EXPECT_EQ(manager->num_sequences(), 2);
  EXPECT_EQ(manager->BlockTable(3).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(manager->DrainEvents().empty());
  EXPECT_EQ(manager->stats().allocations, 3);
  // And the state still works: the same prompt fits once sequence 2 is gone.
  ASSERT_TRUE(manager->Free(2).ok());
  auto fits = manager->Allocate(3, Concat(a, Tokens(6, 70)));
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_EQ(fits->num_cached_tokens, 8);
}

TEST(KvBlockManagerTest, DecodeAppendsFillAndCommitBlocks) {
  auto manager = MakeManager(4, 8);
  std::vector<int32_t> tokens = Tokens(6, 0);
  ASSERT_TRUE(manager->Allocate(1, tokens).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 6).ok());
  const uint64_t h0 = HashPrefixBlocks(tokens, 4)[0];
  EXPECT_EQ(DrainUnnumbered(*manager), std::vector<KvEvent>{Stored({h0}, std::nullopt)});
  // Tokens 6 and 7 fill the second block; token 8 needs a third.
  for (int32_t token : {40, 41}) {
    ASSERT_TRUE(manager->AppendTokens(1, {token}).ok());
    tokens.push_back(token);
    EXPECT_EQ(Table(*manager, 1).size(), 2u);
    ASSERT_TRUE(manager->CommitComputed(1, static_cast<int32_t>(tokens.size()) - 1).ok());
  }
  EXPECT_TRUE(manager->DrainEvents().empty());  // token 7 is not computed yet
  ASSERT_TRUE(manager->AppendTokens(1, {42}).ok());
  tokens.push_back(42);
  EXPECT_EQ(Table(*manager, 1).size(), 3u);
  ASSERT_TRUE(manager->CommitComputed(1, 8).ok());
  const uint64_t h1 = HashPrefixBlocks(tokens, 4)[1];
  EXPECT_EQ(DrainUnnumbered(*manager), std::vector<KvEvent>{Stored({h1}, h0)});
  EXPECT_EQ(manager->num_cached_blocks(), 2);
  // The generated block is shared like a prompt block.
  auto next =
      manager->Allocate(2, Concat(std::vector<int32_t>(tokens.begin(), tokens.begin() + 8), {77}));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->num_cached_tokens, 8);
  EXPECT_EQ(next->block_table[1], Table(*manager, 1)[1]);
}

TEST(KvBlockManagerTest, FreeReturnsPartialBlocksToTheFreePool) {
  auto manager = MakeManager(4, 4);
  auto allocation = manager->Allocate(1, Tokens(6, 0));
  ASSERT_TRUE(allocation.ok());
  ASSERT_TRUE(manager->CommitComputed(1, 6).ok());
  ASSERT_TRUE(manager->Free(1).ok());
  EXPECT_EQ(manager->num_free_blocks(), 4);
  EXPECT_EQ(manager->num_cached_blocks(), 1);
  manager->DrainEvents();
  // Three uncached blocks (two never used, one partial) go before the cached one.
  auto next = manager->Allocate(2, Tokens(12, 100));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(
      std::count(next->block_table.begin(), next->block_table.end(), allocation->block_table[1]),
      1);
  EXPECT_TRUE(manager->DrainEvents().empty());
  EXPECT_EQ(manager->num_cached_blocks(), 1);
  EXPECT_EQ(manager->Free(1).code(), absl::StatusCode::kNotFound);
}

TEST(KvBlockManagerTest, RejectsBadSequenceCalls) {
  auto manager = MakeManager(4, 4);
  EXPECT_EQ(manager->Allocate(1, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager->Allocate(1, Tokens(17, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);  // larger than the pool
  ASSERT_TRUE(manager->Allocate(1, Tokens(16, 0)).ok());
  EXPECT_EQ(manager->Allocate(1, Tokens(1, 0)).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(manager->AppendTokens(1, {5}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager->AppendTokens(2, {5}).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(manager->AppendTokens(1, {}).ok());
  EXPECT_EQ(manager->NumTokens(2).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager->NumComputedTokens(2).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tern::worker
