#include "worker/kv_block_manager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/block_hash.h"

namespace tern::worker {
namespace {

std::unique_ptr<KvBlockManager> MakeManager(int32_t block_size, int32_t num_blocks,
                                            bool prefix_caching = true) {
  KvBlockManagerOptions options;
  options.block_size = block_size;
  options.num_blocks = num_blocks;
  options.enable_prefix_caching = prefix_caching;
  auto manager = KvBlockManager::Create(options);
  EXPECT_TRUE(manager.ok()) << manager.status();
  return std::move(manager).value();
}

// `n` token ids starting at `first`, counting up.
std::vector<int32_t> Tokens(int n, int32_t first) {
  std::vector<int32_t> tokens(n);
  std::iota(tokens.begin(), tokens.end(), first);
  return tokens;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::set<uint64_t> CachedSet(const KvBlockManager& manager) {
  const std::vector<uint64_t> hashes = manager.CachedBlockHashes();
  return std::set<uint64_t>(hashes.begin(), hashes.end());
}

std::vector<KvBlockId> Table(const KvBlockManager& manager, KvSequenceId id) {
  auto table = manager.BlockTable(id);
  EXPECT_TRUE(table.ok()) << table.status();
  if (!table.ok()) return {};
  return std::vector<KvBlockId>(table->begin(), table->end());
}

KvEvent Stored(std::vector<uint64_t> hashes, std::optional<uint64_t> parent) {
  KvEvent event;
  event.kind = KvEventKind::kBlockStored;
  event.block_hashes = std::move(hashes);
  event.parent_block_hash = parent;
  return event;
}

KvEvent Removed(std::vector<uint64_t> hashes) {
  KvEvent event;
  event.kind = KvEventKind::kBlockRemoved;
  event.block_hashes = std::move(hashes);
  return event;
}

// Drained events without their sequence numbers, for comparison.
std::vector<KvEvent> DrainUnnumbered(KvBlockManager& manager) {
  std::vector<KvEvent> events = manager.DrainEvents();
  for (KvEvent& event : events) event.sequence_number = 0;
  return events;
}

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

TEST(KvBlockManagerTest, EventOverflowResyncsWithClearedAndASnapshot) {
  KvBlockManagerOptions options;
  options.block_size = 2;
  options.num_blocks = 8;
  options.max_pending_event_hashes = 8;
  auto manager = std::move(KvBlockManager::Create(options)).value();
  // Two chains sharing a first block: 0 1 | 2 3 | 4 5 and 0 1 | 9 9.
  ASSERT_TRUE(manager->Allocate(1, Tokens(6, 0)).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 6).ok());
  ASSERT_TRUE(manager->Allocate(2, {0, 1, 9, 9, 7}).ok());
  ASSERT_TRUE(manager->CommitComputed(2, 5).ok());
  ASSERT_TRUE(manager->Free(1).ok());
  ASSERT_TRUE(manager->Free(2).ok());
  // Five more blocks evict and store past the bound of 8 pending hashes.
  ASSERT_TRUE(manager->Allocate(3, Tokens(10, 100)).ok());
  ASSERT_TRUE(manager->CommitComputed(3, 10).ok());
  std::vector<KvEvent> events = manager->DrainEvents();
  EXPECT_EQ(manager->stats().event_overflows, 1);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].kind, KvEventKind::kAllBlocksCleared);
  std::set<uint64_t> replica;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].sequence_number, i + 1);
    if (i == 0) continue;
    ASSERT_EQ(events[i].kind, KvEventKind::kBlockStored);
    replica.insert(events[i].block_hashes.begin(), events[i].block_hashes.end());
  }
  EXPECT_EQ(replica, CachedSet(*manager));
  // Sequence 3 evicted the least recently used block, the tail of chain 1;
  // the snapshot gives each remaining chain with correct parents.
  const std::vector<uint64_t> h1 = HashPrefixBlocks(Tokens(6, 0), 2);
  const uint64_t h2 = HashPrefixBlocks(std::vector<int32_t>{0, 1, 9, 9}, 2)[1];
  const std::vector<uint64_t> h3 = HashPrefixBlocks(Tokens(10, 100), 2);
  EXPECT_EQ(replica, (std::set<uint64_t>{h1[0], h1[1], h2, h3[0], h3[1], h3[2], h3[3], h3[4]}));
  ASSERT_EQ(events.size(), 4u);
  std::vector<KvEvent> snapshot(events.begin() + 1, events.end());
  for (KvEvent& event : snapshot) event.sequence_number = 0;
  auto has = [&](const KvEvent& want) {
    return std::count(snapshot.begin(), snapshot.end(), want) == 1;
  };
  EXPECT_TRUE(has(Stored(h3, std::nullopt)));
  // Chain 1's first block has two children: one continues its run, the
  // other starts a run parented on it.
  EXPECT_TRUE((has(Stored({h1[0], h1[1]}, std::nullopt)) && has(Stored({h2}, h1[0]))) ||
              (has(Stored({h1[0], h2}, std::nullopt)) && has(Stored({h1[1]}, h1[0]))));
  EXPECT_TRUE(manager->DrainEvents().empty());
}

TEST(KvBlockManagerTest, SnapshotEventsDescribeTheCacheWithoutTouchingPendingEvents) {
  auto manager = MakeManager(2, 8);
  ASSERT_TRUE(manager->Allocate(1, Tokens(6, 0)).ok());
  ASSERT_TRUE(manager->CommitComputed(1, 6).ok());
  ASSERT_TRUE(manager->Allocate(2, {0, 1, 9, 9, 7}).ok());
  ASSERT_TRUE(manager->CommitComputed(2, 5).ok());
  const std::vector<KvEvent> snapshot = manager->SnapshotEvents();
  ASSERT_FALSE(snapshot.empty());
  EXPECT_EQ(snapshot[0].kind, KvEventKind::kAllBlocksCleared);
  std::set<uint64_t> replica;
  for (size_t i = 1; i < snapshot.size(); ++i) {
    ASSERT_EQ(snapshot[i].kind, KvEventKind::kBlockStored);
    EXPECT_EQ(snapshot[i].sequence_number, 0u);
    // Every run's parent is already known, so a replica can chain it.
    if (snapshot[i].parent_block_hash)
      EXPECT_TRUE(replica.contains(*snapshot[i].parent_block_hash));
    replica.insert(snapshot[i].block_hashes.begin(), snapshot[i].block_hashes.end());
  }
  EXPECT_EQ(replica, CachedSet(*manager));
  // The pending events are still there, numbered from 1.
  const std::vector<KvEvent> events = manager->DrainEvents();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].sequence_number, 1u);
  EXPECT_EQ(events[0].kind, KvEventKind::kBlockStored);
}

// A long random workload against a simulated executor. The simulation writes
// each computed token id into its (block, slot) of a model KV memory and
// checks that shared blocks always hold the sequence's own tokens, so a block
// handed out while still in use, or a wrong prefix hit, shows up as a content
// mismatch. Every drained event is applied to a replica set of hashes, which
// must equal the manager's cached set after each drain (what the router
// relies on); stored chains must match hashes computed here from the tokens.
struct ReplayParams {
  int32_t block_size;
  int32_t num_blocks;
  int64_t max_pending_event_hashes;  // 0: the default
  int max_ops_between_drains;        // 1: drain after every operation
  uint32_t seed;
};

class KvEventReplayTest : public ::testing::TestWithParam<ReplayParams> {};

struct SimSequence {
  std::vector<int32_t> tokens;
  int32_t computed = 0;
};

TEST_P(KvEventReplayTest, ReplicaOfDrainedEventsEqualsCachedHashes) {
  const ReplayParams params = GetParam();
  const int32_t bs = params.block_size;
  KvBlockManagerOptions options;
  options.block_size = bs;
  options.num_blocks = params.num_blocks;
  options.max_pending_event_hashes = params.max_pending_event_hashes;
  auto created = KvBlockManager::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  KvBlockManager& manager = **created;

  std::mt19937 rng(params.seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  // Shared system prompts, so sequences hit, share and duplicate prefixes.
  std::vector<std::vector<int32_t>> prefixes;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> prefix(uniform(0, 4 * bs));
    for (int32_t& t : prefix) t = uniform(0, 50);
    prefixes.push_back(prefix);
  }
  const int max_len = std::min(8 * bs, params.num_blocks * bs / 2);

  std::vector<std::vector<int32_t>> memory(params.num_blocks, std::vector<int32_t>(bs, -1));
  std::map<KvSequenceId, SimSequence> live;
  std::map<uint64_t, uint64_t> parent_of;  // every full-block hash computed here
  std::set<uint64_t> replica;
  uint64_t next_number = 1;
  KvSequenceId next_id = 1;
  int exhausted = 0, ops_since_drain = 0, drains = 0, drain_after = 1;

  auto check_contents = [&](KvSequenceId id, const SimSequence& seq, int32_t upto) {
    const std::vector<KvBlockId> table = Table(manager, id);
    ASSERT_EQ(table.size(), static_cast<size_t>((seq.tokens.size() + bs - 1) / bs));
    for (int32_t p = 0; p < upto; ++p) {
      ASSERT_EQ(memory[table[p / bs]][p % bs], seq.tokens[p])
          << "sequence " << id << " position " << p;
    }
  };
  auto learn_hashes = [&](const std::vector<int32_t>& tokens, int32_t n) {
    const std::vector<uint64_t> hashes =
        HashPrefixBlocks(absl::MakeConstSpan(tokens).subspan(0, n), bs);
    for (size_t i = 0; i < hashes.size(); ++i) {
      parent_of[hashes[i]] = i == 0 ? kNoParentBlockHash : hashes[i - 1];
    }
  };
  auto expect_unchanged = [&](int32_t free_before, const std::set<uint64_t>& cached_before) {
    EXPECT_EQ(manager.num_free_blocks(), free_before);
    EXPECT_EQ(CachedSet(manager), cached_before);
  };
  auto drain_and_check = [&] {
    ++drains;
    for (const KvEvent& event : manager.DrainEvents()) {
      ASSERT_EQ(event.sequence_number, next_number++);
      switch (event.kind) {
        case KvEventKind::kAllBlocksCleared:
          replica.clear();
          break;
        case KvEventKind::kBlockRemoved:
          ASSERT_FALSE(event.block_hashes.empty());
          for (uint64_t h : event.block_hashes) ASSERT_EQ(replica.erase(h), 1u);
          break;
        case KvEventKind::kBlockStored: {
          ASSERT_FALSE(event.block_hashes.empty());
          uint64_t parent = event.parent_block_hash.value_or(kNoParentBlockHash);
          for (uint64_t h : event.block_hashes) {
            ASSERT_TRUE(parent_of.count(h)) << "stored hash of no computed prefix";
            ASSERT_EQ(parent_of[h], parent) << "stored chain out of order";
            ASSERT_TRUE(replica.insert(h).second) << "hash stored twice";
            parent = h;
          }
          break;
        }
      }
    }
    ASSERT_EQ(replica, CachedSet(manager));
  };

  for (int op = 0; op < 10000; ++op) {
    const int dice = uniform(0, 99);
    if (dice < 25 && live.size() < 12) {
      // A new sequence: a shared prefix, cut anywhere, plus a short suffix.
      const std::vector<int32_t>& prefix = prefixes[uniform(0, 5)];
      SimSequence seq;
      seq.tokens.assign(prefix.begin(), prefix.begin() + uniform(0, prefix.size()));
      const int suffix = uniform(seq.tokens.empty() ? 1 : 0, 2 * bs);
      for (int i = 0; i < suffix; ++i) seq.tokens.push_back(uniform(0, 3));
      if (static_cast<int>(seq.tokens.size()) > max_len) seq.tokens.resize(max_len);
      // Expected hit: the longest cached run of full blocks, leaving one token.
      const std::set<uint64_t> cached = CachedSet(manager);
      const std::vector<uint64_t> hashes = HashPrefixBlocks(seq.tokens, bs);
      int32_t want_hit = 0;
      while (want_hit < static_cast<int32_t>((seq.tokens.size() - 1) / bs) &&
             cached.count(hashes[want_hit])) {
        ++want_hit;
      }
      const int32_t free_before = manager.num_free_blocks();
      const KvSequenceId id = next_id++;
      auto allocation = manager.Allocate(id, seq.tokens);
      if (!allocation.ok()) {
        ASSERT_EQ(allocation.status().code(), absl::StatusCode::kResourceExhausted);
        ++exhausted;
        expect_unchanged(free_before, cached);
      } else {
        ASSERT_EQ(allocation->num_cached_tokens, want_hit * bs);
        seq.computed = allocation->num_cached_tokens;
        check_contents(id, seq, seq.computed);
        live.emplace(id, std::move(seq));
      }
    } else if (!live.empty() && dice < 94) {
      auto it = live.begin();
      std::advance(it, uniform(0, live.size() - 1));
      SimSequence& seq = it->second;
      const int32_t len = static_cast<int32_t>(seq.tokens.size());
      if (seq.computed < len) {
        // The executor computes a chunk: write its KV, then commit.
        const int32_t upto = uniform(seq.computed + 1, len);
        const std::vector<KvBlockId> table = Table(manager, it->first);
        for (int32_t p = seq.computed; p < upto; ++p) memory[table[p / bs]][p % bs] = seq.tokens[p];
        learn_hashes(seq.tokens, upto);
        ASSERT_TRUE(manager.CommitComputed(it->first, upto).ok());
        seq.computed = upto;
      } else if (len < max_len) {
        // Decode: the next token is a function of the last ones, so equal
        // sequences generate equal blocks.
        const int32_t next = (seq.tokens[len - 1] * 7 + (len > 1 ? seq.tokens[len - 2] : 0)) % 5;
        const int32_t free_before = manager.num_free_blocks();
        const std::set<uint64_t> cached = CachedSet(manager);
        const absl::Status status = manager.AppendTokens(it->first, {next});
        if (!status.ok()) {
          ASSERT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
          ++exhausted;
          expect_unchanged(free_before, cached);
          ASSERT_EQ(*manager.NumTokens(it->first), len);
          // As the scheduler would: preempt the sequence to make room.
          check_contents(it->first, seq, seq.computed);
          ASSERT_TRUE(manager.Free(it->first).ok());
          live.erase(it);
        } else {
          seq.tokens.push_back(next);
        }
      } else {
        check_contents(it->first, seq, seq.computed);
        ASSERT_TRUE(manager.Free(it->first).ok());
        live.erase(it);
      }
    } else if (!live.empty()) {
      auto it = live.begin();
      std::advance(it, uniform(0, live.size() - 1));
      check_contents(it->first, it->second, it->second.computed);
      ASSERT_TRUE(manager.Free(it->first).ok());
      live.erase(it);
    }
    if (uniform(0, 999) == 0) manager.Reset();

    // Blocks are either free or held; a shared block counts once.
    std::set<KvBlockId> held;
    for (const auto& [id, seq] : live) {
      for (KvBlockId b : Table(manager, id)) held.insert(b);
    }
    ASSERT_EQ(manager.num_free_blocks() + static_cast<int32_t>(held.size()), params.num_blocks);
    if (++ops_since_drain >= drain_after) {
      ops_since_drain = 0;
      drain_after = uniform(1, params.max_ops_between_drains);
      drain_and_check();
      if (HasFatalFailure()) return;
    }
  }
  drain_and_check();
  for (const auto& [id, seq] : live) check_contents(id, seq, seq.computed);

  // The workload exercised what it is meant to.
  const KvBlockManagerStats& stats = manager.stats();
  EXPECT_GT(stats.allocations, 400);
  EXPECT_GT(stats.prefix_hit_tokens, 0);
  EXPECT_GT(stats.evictions, 100);
  EXPECT_GT(stats.duplicate_blocks, 0);
  EXPECT_GT(exhausted, 0);
  if (params.max_pending_event_hashes != 0) {
    EXPECT_GT(stats.event_overflows, 0);
  } else {
    EXPECT_EQ(stats.event_overflows, 0);
  }
  RecordProperty("allocations", static_cast<int>(stats.allocations));
  RecordProperty("evictions", static_cast<int>(stats.evictions));
  RecordProperty("duplicate_blocks", static_cast<int>(stats.duplicate_blocks));
  RecordProperty("event_overflows", static_cast<int>(stats.event_overflows));
  RecordProperty("drains", drains);
  RecordProperty("hit_rate_percent", static_cast<int>(100 * stats.prefix_hit_rate()));
}

INSTANTIATE_TEST_SUITE_P(
    Workloads, KvEventReplayTest,
    ::testing::Values(ReplayParams{4, 48, 0, 1, 1}, ReplayParams{16, 40, 0, 1, 2},
                      ReplayParams{1, 64, 0, 1, 3}, ReplayParams{4, 48, 0, 8, 4},
                      ReplayParams{4, 48, 48, 400, 5}, ReplayParams{2, 64, 64, 300, 6}),
    [](const ::testing::TestParamInfo<ReplayParams>& info) {
      const ReplayParams& p = info.param;
      return absl::StrCat("Block", p.block_size, "Pool", p.num_blocks, "Bound",
                          p.max_pending_event_hashes, "DrainEvery", p.max_ops_between_drains);
    });

}  // namespace
}  // namespace tern::worker
