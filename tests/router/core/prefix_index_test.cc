// The router's prefix index against a model of what each worker holds: the
// set of block hashes obtained by applying its events, and for approximate
// workers the blocks routed to them within the TTL.
#include "router/core/prefix_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "common/block_hash.h"

namespace tern::router {
namespace {

KvEvent Stored(uint64_t seq, std::vector<uint64_t> hashes) {
  return KvEvent{seq, KvEvent::Kind::kStored, std::move(hashes)};
}

KvEvent Removed(uint64_t seq, std::vector<uint64_t> hashes) {
  return KvEvent{seq, KvEvent::Kind::kRemoved, std::move(hashes)};
}

KvEvent Cleared(uint64_t seq) { return KvEvent{seq, KvEvent::Kind::kCleared, {}}; }

std::vector<uint64_t> Blocks(int first_token, int num_blocks) {
  std::vector<int32_t> tokens(static_cast<size_t>(num_blocks) * 16);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = first_token + static_cast<int32_t>(i);
  return HashPrefixBlocks(tokens, 16);
}

std::vector<int32_t> Match(const PrefixIndex& index, const std::vector<uint64_t>& prompt,
                           int workers, absl::Time now = absl::UnixEpoch()) {
  std::vector<int32_t> matched(workers, -1);
  index.MatchPrefix(prompt, now, &matched);
  return matched;
}

TEST(PrefixIndexTest, CountsLeadingBlocksPerWorker) {
  PrefixIndex index;
  const std::vector<uint64_t> prompt = Blocks(0, 6);
  index.BeginStream(0);
  index.BeginStream(1);
  index.BeginStream(2);
  ASSERT_EQ(index.ApplyEvents(0, {Stored(1, {prompt[0], prompt[1], prompt[2]})}),
            PrefixIndex::ApplyResult::kOk);
  ASSERT_EQ(index.ApplyEvents(
                1, {Stored(1, {prompt[0], prompt[1], prompt[2], prompt[3], prompt[4], prompt[5]})}),
            PrefixIndex::ApplyResult::kOk);
  // Worker 2 holds a later block without the first: nothing it can reuse.
  ASSERT_EQ(index.ApplyEvents(2, {Stored(1, {prompt[2], prompt[3]})}),
            PrefixIndex::ApplyResult::kOk);
  EXPECT_EQ(Match(index, prompt, 4), (std::vector<int32_t>{3, 6, 0, 0}));
  // A prompt that diverges after two blocks.
  std::vector<uint64_t> other = Blocks(0, 2);
  const std::vector<uint64_t> tail = Blocks(1000, 2);
  other.insert(other.end(), tail.begin(), tail.end());
  EXPECT_EQ(Match(index, other, 3), (std::vector<int32_t>{2, 2, 0}));
}

TEST(PrefixIndexTest, RemovalsAndClearsFollowTheEvents) {
  PrefixIndex index;
  const std::vector<uint64_t> prompt = Blocks(0, 4);
  index.BeginStream(0);
  ASSERT_EQ(index.ApplyEvents(0, {Stored(7, {prompt[0], prompt[1], prompt[2], prompt[3]}),
                                  Removed(8, {prompt[2]})}),
            PrefixIndex::ApplyResult::kOk);
  EXPECT_EQ(Match(index, prompt, 1), (std::vector<int32_t>{2}));
  EXPECT_EQ(index.num_exact_blocks(0), 3);
  ASSERT_EQ(index.ApplyEvents(0, {Cleared(9), Stored(10, {prompt[0]})}),
            PrefixIndex::ApplyResult::kOk);
  EXPECT_EQ(Match(index, prompt, 1), (std::vector<int32_t>{1}));
  EXPECT_EQ(index.stats().exact_pairs, 1);
  EXPECT_EQ(index.stats().distinct_blocks, 1);
}

TEST(PrefixIndexTest, AGapForgetsTheWorkerUntilANewStream) {
  PrefixIndex index;
  const std::vector<uint64_t> prompt = Blocks(0, 3);
  index.BeginStream(0);
  index.BeginStream(1);
  ASSERT_EQ(index.ApplyEvents(0, {Stored(1, {prompt[0]})}), PrefixIndex::ApplyResult::kOk);
  ASSERT_EQ(index.ApplyEvents(1, {Stored(1, {prompt[0], prompt[1]})}),
            PrefixIndex::ApplyResult::kOk);
  // Event 2 was lost.
  EXPECT_EQ(index.ApplyEvents(0, {Stored(3, {prompt[1]})}), PrefixIndex::ApplyResult::kResync);
  EXPECT_EQ(Match(index, prompt, 2), (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(index.stats().resyncs, 1u);
  // Later events of the broken stream are refused, not half-applied.
  EXPECT_EQ(index.ApplyEvents(0, {Stored(4, {prompt[0]})}), PrefixIndex::ApplyResult::kResync);
  EXPECT_EQ(Match(index, prompt, 2), (std::vector<int32_t>{0, 2}));
  // The new stream starts with a snapshot, numbered afresh.
  index.BeginStream(0);
  ASSERT_EQ(index.ApplyEvents(0, {Cleared(1), Stored(2, {prompt[0], prompt[1], prompt[2]})}),
            PrefixIndex::ApplyResult::kOk);
  EXPECT_EQ(Match(index, prompt, 2), (std::vector<int32_t>{3, 2}));
  // Events of a worker that never began a stream are refused.
  EXPECT_EQ(index.ApplyEvents(5, {Stored(1, {prompt[0]})}), PrefixIndex::ApplyResult::kResync);
}

TEST(PrefixIndexTest, ApproximateEntriesExpireAndAreBounded) {
  PrefixIndex index(PrefixIndexOptions{.approx_ttl = absl::Seconds(10), .max_approx_blocks = 6});
  const absl::Time t0 = absl::UnixEpoch() + absl::Hours(1);
  const std::vector<uint64_t> a = Blocks(0, 4);
  const std::vector<uint64_t> b = Blocks(5000, 4);
  index.RecordRouted(0, a, t0);
  EXPECT_EQ(Match(index, a, 2, t0 + absl::Seconds(5)), (std::vector<int32_t>{4, 0}));
  EXPECT_EQ(Match(index, a, 2, t0 + absl::Seconds(11)), (std::vector<int32_t>{0, 0}));
  // Routing b to worker 1 overflows the bound of 6: a's oldest blocks go
  // first, so worker 0's leading run is broken.
  index.RecordRouted(1, b, t0 + absl::Seconds(1));
  EXPECT_EQ(index.stats().approx_pairs, 6);
  EXPECT_EQ(Match(index, b, 2, t0 + absl::Seconds(2)), (std::vector<int32_t>{0, 4}));
  EXPECT_EQ(Match(index, a, 2, t0 + absl::Seconds(2)), (std::vector<int32_t>{0, 0}));
  // A worker that starts publishing events drops its approximate entries;
  // routing records then count only for the short speculative TTL.
  index.BeginStream(1);
  EXPECT_EQ(index.stats().approx_pairs, 2);  // what is left of worker 0's
  index.RecordRouted(1, b, t0 + absl::Seconds(3));
  EXPECT_EQ(Match(index, b, 2, t0 + absl::Seconds(4)), (std::vector<int32_t>{0, 4}));
  EXPECT_EQ(Match(index, b, 2, t0 + absl::Seconds(6)), (std::vector<int32_t>{0, 0}));
}

TEST(PrefixIndexTest, ExpiredRoutingRecordsAreForgottenUnderSteadyTraffic) {
  PrefixIndex index(PrefixIndexOptions{.approx_ttl = absl::Seconds(10)});
  const absl::Time t0 = absl::UnixEpoch() + absl::Hours(1);
  // A distinct 4-block prompt every second for ten minutes: only the last
  // ttl's worth of records stay (they could still match), not all 2,400.
  for (int i = 0; i < 600; ++i) {
    index.RecordRouted(i % 2, Blocks(10 * i, 4), t0 + absl::Seconds(i));
  }
  EXPECT_LE(index.stats().approx_pairs, 11 * 4);
  EXPECT_EQ(Match(index, Blocks(10 * 599, 4), 2, t0 + absl::Seconds(600)),
            (std::vector<int32_t>{0, 4}));
}

TEST(PrefixIndexTest, RandomEventsMatchASetModel) {
  std::mt19937_64 rng(11);
  PrefixIndex index;
  constexpr int kWorkers = 5;
  std::vector<std::set<uint64_t>> model(kWorkers);
  std::vector<uint64_t> seq(kWorkers, 0);
  std::vector<uint64_t> universe = Blocks(0, 40);
  for (int w = 0; w < kWorkers; ++w) index.BeginStream(w);
  for (int round = 0; round < 2000; ++round) {
    const int w = static_cast<int>(rng() % kWorkers);
    const uint64_t h = universe[rng() % universe.size()];
    const int kind = static_cast<int>(rng() % 10);
    KvEvent event;
    if (kind < 6) {
      event = Stored(++seq[w], {h});
      model[w].insert(h);
    } else if (kind < 9) {
      event = Removed(++seq[w], {h});
      model[w].erase(h);
    } else {
      event = Cleared(++seq[w]);
      model[w].clear();
    }
    ASSERT_EQ(index.ApplyEvents(w, {event}), PrefixIndex::ApplyResult::kOk);
  }
  for (int w = 0; w < kWorkers; ++w) {
    std::vector<uint64_t> held = index.ExactBlocks(w);
    EXPECT_EQ(std::set<uint64_t>(held.begin(), held.end()), model[w]);
  }
  std::vector<int32_t> matched = Match(index, universe, kWorkers);
  for (int w = 0; w < kWorkers; ++w) {
    int32_t expected = 0;
    while (expected < static_cast<int32_t>(universe.size()) && model[w].count(universe[expected])) {
      ++expected;
    }
    EXPECT_EQ(matched[w], expected) << "worker " << w;
    EXPECT_EQ(index.MatchPrefixFor(w, universe, absl::UnixEpoch()), expected) << "worker " << w;
  }
}

TEST(PrefixIndexTest, MatchForOneWorkerAgreesWithMatchForAll) {
  PrefixIndex index(
      PrefixIndexOptions{.approx_ttl = absl::Seconds(10), .speculative_ttl = absl::Seconds(2)});
  const absl::Time t0 = absl::UnixEpoch() + absl::Hours(1);
  const std::vector<uint64_t> a = Blocks(0, 6);
  index.BeginStream(0);
  ASSERT_EQ(index.ApplyEvents(0, {Stored(1, {a[0], a[1], a[2]})}), PrefixIndex::ApplyResult::kOk);
  index.RecordRouted(0, a, t0);             // speculative: a[3..5] for 2 s
  index.RecordRouted(1, {a[0], a[1]}, t0);  // approximate worker: 10 s
  for (const absl::Duration later : {absl::Seconds(1), absl::Seconds(3), absl::Seconds(11)}) {
    const std::vector<int32_t> all = Match(index, a, 3, t0 + later);
    for (WorkerId w = 0; w < 3; ++w) {
      EXPECT_EQ(index.MatchPrefixFor(w, a, t0 + later), all[w])
          << "worker " << w << " at +" << absl::FormatDuration(later);
    }
  }
  EXPECT_EQ(index.MatchPrefixFor(0, a, t0 + absl::Seconds(1)), 6);
  EXPECT_EQ(index.MatchPrefixFor(0, a, t0 + absl::Seconds(3)), 3);
  EXPECT_EQ(index.MatchPrefixFor(1, a, t0 + absl::Seconds(3)), 2);
  EXPECT_EQ(index.MatchPrefixFor(1, a, t0 + absl::Seconds(11)), 0);
}

}  // namespace
}  // namespace tern::router
