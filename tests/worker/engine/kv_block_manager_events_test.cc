// KvBlockManager KV events: overflow and resynchronisation, snapshots, and a
// long random workload whose drained events must rebuild the cached set.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/block_hash.h"
#include "tests/worker/engine/kv_block_manager_test_util.h"
#include "worker/engine/kv_block_manager.h"

namespace tern::worker {
namespace {

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
    if (snapshot[i].parent_block_hash) {
      EXPECT_TRUE(replica.contains(*snapshot[i].parent_block_hash));
    }
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
