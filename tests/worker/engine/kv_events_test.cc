#include "worker/engine/kv_events.h"

#include <gtest/gtest.h>

#include <vector>

namespace tern::worker {
namespace {

TEST(KvEventLogTest, DrainNumbersEventsFromOneWithoutGaps) {
  KvEventLog log(100);
  log.AddStored({1, 2, 3}, std::nullopt);
  log.AddRemoved({7});
  std::vector<KvEvent> first = log.Drain();
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].sequence_number, 1u);
  EXPECT_EQ(first[0].kind, KvEventKind::kBlockStored);
  EXPECT_EQ(first[0].block_hashes, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_FALSE(first[0].parent_block_hash.has_value());
  EXPECT_EQ(first[1].sequence_number, 2u);
  EXPECT_EQ(first[1].kind, KvEventKind::kBlockRemoved);
  EXPECT_EQ(first[1].block_hashes, (std::vector<uint64_t>{7}));

  EXPECT_TRUE(log.Drain().empty());
  log.AddStored({4}, 3);
  std::vector<KvEvent> second = log.Drain();
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].sequence_number, 3u);
  EXPECT_EQ(second[0].parent_block_hash, std::optional<uint64_t>(3));
  EXPECT_EQ(log.next_sequence_number(), 4u);
}

TEST(KvEventLogTest, EmptyHashListsRecordNothing) {
  KvEventLog log(10);
  log.AddStored({}, 5);
  log.AddRemoved({});
  EXPECT_EQ(log.pending_events(), 0u);
  EXPECT_TRUE(log.Drain().empty());
  EXPECT_EQ(log.next_sequence_number(), 1u);
}

TEST(KvEventLogTest, CountsPendingHashesAndResetsThemOnDrain) {
  KvEventLog log(10);
  log.AddStored({1, 2, 3}, std::nullopt);
  log.AddRemoved({1, 2});
  EXPECT_EQ(log.pending_hashes(), 5u);
  EXPECT_EQ(log.pending_events(), 2u);
  log.Drain();
  EXPECT_EQ(log.pending_hashes(), 0u);
  EXPECT_EQ(log.pending_events(), 0u);
}

TEST(KvEventLogTest, FillingExactlyToTheBoundDoesNotOverflow) {
  KvEventLog log(4);
  log.AddStored({1, 2}, std::nullopt);
  log.AddRemoved({1, 2});
  EXPECT_FALSE(log.overflowed());
  EXPECT_EQ(log.pending_hashes(), 4u);
  EXPECT_EQ(log.Drain().size(), 2u);
}

TEST(KvEventLogTest, OverflowDropsEverythingPendingAndIgnoresLaterEvents) {
  KvEventLog log(4);
  log.AddStored({1, 2, 3}, std::nullopt);
  log.AddStored({4, 5}, 3);  // passes the bound
  EXPECT_TRUE(log.overflowed());
  EXPECT_EQ(log.overflow_count(), 1u);
  EXPECT_EQ(log.pending_events(), 0u);
  EXPECT_EQ(log.pending_hashes(), 0u);
  log.AddRemoved({1});  // ignored: the owner must resynchronise anyway
  EXPECT_EQ(log.pending_events(), 0u);
  EXPECT_TRUE(log.Drain().empty());
  EXPECT_TRUE(log.overflowed());              // draining does not resynchronise
  EXPECT_EQ(log.next_sequence_number(), 1u);  // dropped events took no numbers
}

TEST(KvEventLogTest, AllClearedSupersedesPendingAndEndsOverflow) {
  KvEventLog log(3);
  log.AddStored({1, 2, 3, 4}, std::nullopt);
  ASSERT_TRUE(log.overflowed());
  log.AddAllCleared();
  EXPECT_FALSE(log.overflowed());
  log.AddStored({9, 10, 11}, std::nullopt);  // the bound counts hashes only
  EXPECT_FALSE(log.overflowed());
  std::vector<KvEvent> events = log.Drain();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, KvEventKind::kAllBlocksCleared);
  EXPECT_TRUE(events[0].block_hashes.empty());
  EXPECT_EQ(events[0].sequence_number, 1u);
  EXPECT_EQ(events[1].kind, KvEventKind::kBlockStored);
  EXPECT_EQ(events[1].sequence_number, 2u);
  EXPECT_EQ(log.overflow_count(), 1u);
}

TEST(KvEventLogTest, AllClearedDropsEarlierPendingEvents) {
  KvEventLog log(10);
  log.AddStored({1, 2}, std::nullopt);
  log.AddRemoved({2});
  log.AddAllCleared();
  log.AddAllCleared();
  std::vector<KvEvent> events = log.Drain();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, KvEventKind::kAllBlocksCleared);
}

TEST(KvEventLogTest, OverflowsAgainAfterResync) {
  KvEventLog log(2);
  log.AddRemoved({1, 2, 3});
  log.AddAllCleared();
  log.AddRemoved({1, 2, 3});
  EXPECT_TRUE(log.overflowed());
  EXPECT_EQ(log.overflow_count(), 2u);
}

}  // namespace
}  // namespace tern::worker
