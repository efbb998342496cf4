#include "worker/vllm/events/block_rekeyer.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/types/span.h"
#include "common/block_hash.h"

// The router hashes a prompt with HashPrefixBlocks; whatever ids vLLM gave
// its blocks, the re-keyed hashes must be those.
namespace tern::worker::vllm {
namespace {

constexpr int32_t kBlockSize = 4;

std::vector<int32_t> Prompt(int32_t first, int blocks) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < blocks * kBlockSize; ++i) tokens.push_back(first + i);
  return tokens;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Blocks [from, to) of `tokens` as vLLM reports them: ids are arbitrary
// (here `id_base` + block index), the parent is the id of block from - 1.
VllmEvent Stored(const std::vector<int32_t>& tokens, int from, int to, int64_t id_base) {
  VllmEvent event;
  event.kind = VllmEventKind::kBlockStored;
  event.tag = "BlockStored";
  event.block_size = kBlockSize;
  event.medium = "GPU";
  for (int b = from; b < to; ++b) event.block_hashes.push_back(VllmBlockIdFromInt(id_base + b));
  if (from > 0) event.parent_block_hash = VllmBlockIdFromInt(id_base + from - 1);
  event.token_ids.assign(tokens.begin() + from * kBlockSize, tokens.begin() + to * kBlockSize);
  return event;
}

VllmEvent Removed(std::vector<int64_t> ids) {
  VllmEvent event;
  event.kind = VllmEventKind::kBlockRemoved;
  event.medium = "GPU";
  for (int64_t id : ids) event.block_hashes.push_back(VllmBlockIdFromInt(id));
  return event;
}

KvEvent StoredRun(std::vector<uint64_t> hashes, std::optional<uint64_t> parent) {
  KvEvent event;
  event.kind = KvEventKind::kBlockStored;
  event.block_hashes = std::move(hashes);
  event.parent_block_hash = parent;
  return event;
}

KvEvent RemovedRun(std::vector<uint64_t> hashes) {
  KvEvent event;
  event.kind = KvEventKind::kBlockRemoved;
  event.block_hashes = std::move(hashes);
  return event;
}

std::vector<KvEvent> Apply(BlockRekeyer& rekeyer, const VllmEvent& event) {
  std::vector<KvEvent> out;
  rekeyer.Apply(event, &out);
  return out;
}

std::vector<uint64_t> Hashes(const std::vector<int32_t>& tokens) {
  return HashPrefixBlocks(tokens, kBlockSize);
}

TEST(BlockRekeyerTest, StoredBlocksGetTheRoutersPromptHashes) {
  BlockRekeyer rekeyer(kBlockSize);
  const std::vector<int32_t> prompt = Prompt(100, 3);
  const std::vector<uint64_t> h = Hashes(prompt);
  ASSERT_EQ(h.size(), 3u);

  EXPECT_EQ(Apply(rekeyer, Stored(prompt, 0, 2, 1000)),
            (std::vector<KvEvent>{StoredRun({h[0], h[1]}, std::nullopt)}));
  EXPECT_EQ(Apply(rekeyer, Stored(prompt, 2, 3, 1000)),
            (std::vector<KvEvent>{StoredRun({h[2]}, h[1])}));
  EXPECT_EQ(rekeyer.blocks(), 3u);
  EXPECT_EQ(rekeyer.stats().stored_blocks, 3u);
}

TEST(BlockRekeyerTest, ABranchOffASharedPrefixChainsFromItsParent) {
  BlockRekeyer rekeyer(kBlockSize);
  const std::vector<int32_t> shared = Prompt(1, 2);
  const std::vector<int32_t> first = Concat(shared, Prompt(50, 1));
  const std::vector<int32_t> second = Concat(shared, Prompt(90, 2));
  Apply(rekeyer, Stored(first, 0, 3, 0));
  // vLLM hit the shared blocks (ids 0 and 1) and stores only the new ones.
  VllmEvent branch = Stored(second, 2, 4, 200);
  branch.parent_block_hash = VllmBlockIdFromInt(1);
  const std::vector<uint64_t> h = Hashes(second);
  EXPECT_EQ(Apply(rekeyer, branch), (std::vector<KvEvent>{StoredRun({h[2], h[3]}, h[1])}));
  EXPECT_EQ(rekeyer.blocks(), 5u);
}

TEST(BlockRekeyerTest, BytesIdsWorkLikeIntIds) {
  BlockRekeyer rekeyer(kBlockSize);
  const std::vector<int32_t> prompt = Prompt(7, 2);
  VllmEvent first = Stored(prompt, 0, 1, 0);
  first.block_hashes = {VllmBlockIdFromBytes(std::string(32, 'a'))};
  VllmEvent second = Stored(prompt, 1, 2, 0);
  second.block_hashes = {VllmBlockIdFromBytes(std::string(32, 'b'))};
  second.parent_block_hash = VllmBlockIdFromBytes(std::string(32, 'a'));
  const std::vector<uint64_t> h = Hashes(prompt);
  Apply(rekeyer, first);
  EXPECT_EQ(Apply(rekeyer, second), (std::vector<KvEvent>{StoredRun({h[1]}, h[0])}));
}

TEST(BlockRekeyerTest, StoringAKnownIdAgainChangesNothing) {
  BlockRekeyer rekeyer(kBlockSize);
  const std::vector<int32_t> prompt = Prompt(3, 2);
  Apply(rekeyer, Stored(prompt, 0, 2, 0));
  EXPECT_TRUE(Apply(rekeyer, Stored(prompt, 0, 2, 0)).empty());
  EXPECT_EQ(rekeyer.blocks(), 2u);
  EXPECT_EQ(rekeyer.stats().stored_blocks, 2u);
  // One removal takes it: the repeat did not count twice.
  EXPECT_EQ(Apply(rekeyer, Removed({0})), (std::vector<KvEvent>{RemovedRun({Hashes(prompt)[0]})}));
}

TEST(BlockRekeyerTest, BlocksAlreadyPresentSplitRunsWithTheRightParents) {
  BlockRekeyer rekeyer(kBlockSize);
  const std::vector<int32_t> prompt = Prompt(10, 5);
  const std::vector<uint64_t> h = Hashes(prompt);
  Apply(rekeyer, Stored(prompt, 0, 4, 0));
  EXPECT_EQ(Apply(rekeyer, Removed({1})), (std::vector<KvEvent>{RemovedRun({h[1]})}));
  // Blocks 0, 2, 3 are still held: only 1 and the new 4 are stored, as runs
  // each naming the block before it.
  EXPECT_EQ(Apply(rekeyer, Stored(prompt, 0, 5, 0)),
            (std::vector<KvEvent>{StoredRun({h[1]}, h[0]), StoredRun({h[4]}, h[3])}));
  EXPECT_EQ(rekeyer.blocks(), 5u);
}

TEST(BlockRekeyerTest, RemovalsMapIdsAndForgetThem) {
  BlockRekeyer rekeyer(kBlockSize);
  const std::vector<int32_t> prompt = Prompt(20, 3);
  const std::vector<uint64_t> h = Hashes(prompt);
  Apply(rekeyer, Stored(prompt, 0, 3, 0));
  EXPECT_EQ(Apply(rekeyer, Removed({2, 1, 99})), (std::vector<KvEvent>{RemovedRun({h[2], h[1]})}));
  EXPECT_EQ(rekeyer.stats().removed_blocks, 2u);
  EXPECT_EQ(rekeyer.stats().unknown_removed_blocks, 1u);
  EXPECT_TRUE(Apply(rekeyer, Removed({2})).empty());
  EXPECT_EQ(rekeyer.stats().unknown_removed_blocks, 2u);
  // A forgotten id no longer resolves as a parent.
  EXPECT_TRUE(Apply(rekeyer, Stored(prompt, 2, 3, 0)).empty());
  EXPECT_EQ(rekeyer.stats().unknown_parent_blocks, 1u);
  EXPECT_EQ(rekeyer.blocks(), 1u);
}

TEST(BlockRekeyerTest, ATernHashNamedTwiceLeavesWithItsLastName) {
  BlockRekeyer rekeyer(kBlockSize);
  const std::vector<int32_t> prompt = Prompt(30, 1);
  const uint64_t h = Hashes(prompt)[0];
  // The same tokens under two vLLM ids (another hash algorithm)...
  EXPECT_EQ(Apply(rekeyer, Stored(prompt, 0, 1, 0)),
            (std::vector<KvEvent>{StoredRun({h}, std::nullopt)}));
  EXPECT_TRUE(Apply(rekeyer, Stored(prompt, 0, 1, 500)).empty());
  // ... and the same id in a second KV-cache group of a hybrid model.
  VllmEvent other_group = Stored(prompt, 0, 1, 0);
  other_group.group_idx = 1;
  EXPECT_TRUE(Apply(rekeyer, other_group).empty());
  EXPECT_EQ(rekeyer.blocks(), 1u);

  EXPECT_TRUE(Apply(rekeyer, Removed({0})).empty());
  EXPECT_TRUE(Apply(rekeyer, Removed({500})).empty());
  VllmEvent removed_other_group = Removed({0});
  removed_other_group.group_idx = 1;
  EXPECT_EQ(Apply(rekeyer, removed_other_group), (std::vector<KvEvent>{RemovedRun({h})}));
  EXPECT_EQ(rekeyer.blocks(), 0u);
}

TEST(BlockRekeyerTest, UnknownParentSkipsTheEventAndItsDescendants) {
  BlockRekeyer rekeyer(kBlockSize);
  const std::vector<int32_t> prompt = Prompt(40, 4);
  // Blocks 0 and 1 were stored before we listened.
  EXPECT_TRUE(Apply(rekeyer, Stored(prompt, 2, 3, 0)).empty());
  EXPECT_TRUE(Apply(rekeyer, Stored(prompt, 3, 4, 0)).empty());
  EXPECT_EQ(rekeyer.stats().unknown_parent_blocks, 2u);
  EXPECT_EQ(rekeyer.blocks(), 0u);
}

TEST(BlockRekeyerTest, BlocksItCannotNameAreSkippedAndCounted) {
  BlockRekeyer rekeyer(kBlockSize);
  const std::vector<int32_t> prompt = Prompt(60, 2);

  VllmEvent extra_keys = Stored(prompt, 0, 2, 0);
  extra_keys.has_extra_keys = true;
  VllmEvent lora = Stored(prompt, 0, 2, 10);
  lora.lora_name = "adapter";
  VllmEvent old_lora = Stored(prompt, 0, 2, 20);
  old_lora.lora_id = 3;
  VllmEvent other_block_size = Stored(prompt, 0, 2, 30);
  other_block_size.block_size = 2 * kBlockSize;
  other_block_size.block_hashes.pop_back();
  VllmEvent short_tokens = Stored(prompt, 0, 2, 40);
  short_tokens.token_ids.pop_back();
  VllmEvent cpu = Stored(prompt, 0, 2, 50);
  cpu.medium = "CPU";
  for (const VllmEvent& event : {extra_keys, lora, old_lora, other_block_size, short_tokens, cpu}) {
    EXPECT_TRUE(Apply(rekeyer, event).empty());
  }
  EXPECT_EQ(rekeyer.blocks(), 0u);
  EXPECT_EQ(rekeyer.stats().extra_keys_blocks, 6u);
  EXPECT_EQ(rekeyer.stats().wrong_block_size_blocks, 3u);
  EXPECT_EQ(rekeyer.stats().other_medium_blocks, 2u);

  // A child of a skipped block cannot be named either.
  EXPECT_TRUE(Apply(rekeyer, Stored(Prompt(60, 3), 2, 3, 0)).empty());
  EXPECT_EQ(rekeyer.stats().unknown_parent_blocks, 1u);
}

TEST(BlockRekeyerTest, AnOffloadedCopyLeavingDoesNotRemoveTheGpuBlock) {
  BlockRekeyer rekeyer(kBlockSize);
  const std::vector<int32_t> prompt = Prompt(70, 1);
  Apply(rekeyer, Stored(prompt, 0, 1, 0));
  VllmEvent cpu_removed = Removed({0});
  cpu_removed.medium = "CPU";
  EXPECT_TRUE(Apply(rekeyer, cpu_removed).empty());
  EXPECT_EQ(rekeyer.blocks(), 1u);
  EXPECT_EQ(rekeyer.stats().other_medium_blocks, 1u);
}

TEST(BlockRekeyerTest, AllBlocksClearedForgetsEverything) {
  BlockRekeyer rekeyer(kBlockSize);
  const std::vector<int32_t> prompt = Prompt(80, 2);
  Apply(rekeyer, Stored(prompt, 0, 1, 0));
  VllmEvent cleared;
  cleared.kind = VllmEventKind::kAllBlocksCleared;
  const std::vector<KvEvent> out = Apply(rekeyer, cleared);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].kind, KvEventKind::kAllBlocksCleared);
  EXPECT_TRUE(out[0].block_hashes.empty());
  EXPECT_EQ(rekeyer.blocks(), 0u);
  EXPECT_EQ(rekeyer.stats().clears, 1u);
  EXPECT_TRUE(Apply(rekeyer, Stored(prompt, 1, 2, 0)).empty());
  EXPECT_EQ(rekeyer.stats().unknown_parent_blocks, 1u);
  EXPECT_TRUE(rekeyer.Snapshot().empty());
}

TEST(BlockRekeyerTest, UnknownEventsAreCountedAndIgnored) {
  BlockRekeyer rekeyer(kBlockSize);
  VllmEvent unknown;
  unknown.kind = VllmEventKind::kUnknown;
  unknown.tag = "BlockMoved";
  EXPECT_TRUE(Apply(rekeyer, unknown).empty());
  EXPECT_EQ(rekeyer.stats().unknown_events, 1u);
}

// Applies tern events to a set of hashes, as the router's index does, and
// checks the parent of every run that names one is already there when the
// run is a snapshot's.
void ApplyToSet(const std::vector<KvEvent>& events, absl::flat_hash_set<uint64_t>* set) {
  for (const KvEvent& event : events) {
    switch (event.kind) {
      case KvEventKind::kBlockStored:
        set->insert(event.block_hashes.begin(), event.block_hashes.end());
        break;
      case KvEventKind::kBlockRemoved:
        for (uint64_t hash : event.block_hashes) set->erase(hash);
        break;
      case KvEventKind::kAllBlocksCleared:
        set->clear();
        break;
    }
  }
}

TEST(BlockRekeyerTest, SnapshotReplaysToTheSameSetParentsFirst) {
  BlockRekeyer rekeyer(kBlockSize);
  // A tree of prompts sharing prefixes, and the true parent of every hash.
  const std::vector<int32_t> root = Prompt(1, 3);
  const std::vector<std::vector<int32_t>> prompts = {
      Concat(root, Prompt(100, 3)), Concat(root, Prompt(200, 2)),
      Concat(Concat(root, Prompt(100, 1)), Prompt(300, 2)), Prompt(900, 2)};
  absl::flat_hash_map<uint64_t, std::optional<uint64_t>> true_parent;
  for (const auto& prompt : prompts) {
    const std::vector<uint64_t> h = Hashes(prompt);
    for (size_t i = 0; i < h.size(); ++i) {
      true_parent[h[i]] = i == 0 ? std::nullopt : std::optional<uint64_t>(h[i - 1]);
    }
  }
  std::vector<KvEvent> applied;
  auto apply = [&](const VllmEvent& event) { rekeyer.Apply(event, &applied); };
  // vLLM's ids follow its own chain; give each distinct block one id by its tern hash.
  auto stored = [&](const std::vector<int32_t>& prompt, int from, int to) {
    const std::vector<uint64_t> h = Hashes(prompt);
    VllmEvent event = Stored(prompt, from, to, 0);
    event.block_hashes.clear();
    for (int b = from; b < to; ++b) {
      event.block_hashes.push_back(VllmBlockIdFromInt(static_cast<int64_t>(h[b])));
    }
    if (from > 0) event.parent_block_hash = VllmBlockIdFromInt(static_cast<int64_t>(h[from - 1]));
    return event;
  };
  apply(stored(prompts[0], 0, 6));
  apply(stored(prompts[1], 3, 5));
  apply(stored(prompts[2], 4, 6));
  apply(stored(prompts[3], 0, 2));
  // Evict a middle block: its child stays, with a parent no longer held.
  const std::vector<uint64_t> first = Hashes(prompts[0]);
  VllmEvent evict;
  evict.kind = VllmEventKind::kBlockRemoved;
  evict.medium = "GPU";
  evict.block_hashes = {VllmBlockIdFromInt(static_cast<int64_t>(first[4]))};
  apply(evict);

  absl::flat_hash_set<uint64_t> expected;
  ApplyToSet(applied, &expected);
  ASSERT_EQ(expected.size(), rekeyer.blocks());

  const std::vector<KvEvent> snapshot = rekeyer.Snapshot();
  absl::flat_hash_set<uint64_t> replayed;
  for (const KvEvent& run : snapshot) {
    ASSERT_EQ(run.kind, KvEventKind::kBlockStored);
    ASSERT_FALSE(run.block_hashes.empty());
    EXPECT_EQ(run.parent_block_hash, true_parent.at(run.block_hashes[0]));
    if (run.parent_block_hash.has_value() && expected.contains(*run.parent_block_hash)) {
      EXPECT_TRUE(replayed.contains(*run.parent_block_hash)) << "a run came before its parent";
    }
    for (size_t i = 1; i < run.block_hashes.size(); ++i) {
      EXPECT_EQ(true_parent.at(run.block_hashes[i]), run.block_hashes[i - 1]);
    }
    for (uint64_t hash : run.block_hashes) {
      EXPECT_TRUE(replayed.insert(hash).second) << "a hash twice";
    }
  }
  EXPECT_EQ(replayed, expected);
}

}  // namespace
}  // namespace tern::worker::vllm
