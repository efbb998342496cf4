#include "worker/engine/state_publisher.h"

#include <gtest/gtest.h>

#include <vector>

namespace tern::worker {
namespace {

using Urgency = StatePublisher::Urgency;

KvEvent Stored(std::vector<uint64_t> hashes) {
  KvEvent event;
  event.kind = KvEventKind::kBlockStored;
  event.block_hashes = std::move(hashes);
  return event;
}

KvEvent Cleared() {
  KvEvent event;
  event.kind = KvEventKind::kAllBlocksCleared;
  return event;
}

// Publishes with the loop's view `load` as the published load, and a cache
// whose snapshot is `snapshot`.
void Publish(StatePublisher& publisher, std::vector<KvEvent> events, const EngineLoad& load,
             Urgency urgency, const std::vector<KvEvent>& snapshot = {Cleared()}) {
  publisher.Publish(
      std::move(events), load, urgency, [&load] { return load; }, [&snapshot] { return snapshot; });
}

TEST(StatePublisherTest, FirstUpdateIsASnapshotThenEventsFollowNumberedOn) {
  StatePublisher publisher(1024);
  auto subscription = publisher.Subscribe();
  EngineLoad load;
  load.running = 1;
  EngineStateUpdate update;
  EXPECT_FALSE(subscription->Next(absl::ZeroDuration(), &update));

  Publish(publisher, {Stored({1})}, load, Urgency::kCadence, {Cleared(), Stored({1})});
  ASSERT_TRUE(subscription->Next(absl::ZeroDuration(), &update));
  ASSERT_EQ(update.events.size(), 2u);
  EXPECT_EQ(update.events[0].kind, KvEventKind::kAllBlocksCleared);
  EXPECT_EQ(update.events[0].sequence_number, 1u);
  EXPECT_EQ(update.events[1].block_hashes, std::vector<uint64_t>{1});
  EXPECT_EQ(update.load.running, 1);

  Publish(publisher, {Stored({2})}, load, Urgency::kFlush);
  ASSERT_TRUE(subscription->Next(absl::ZeroDuration(), &update));
  ASSERT_EQ(update.events.size(), 1u);
  EXPECT_EQ(update.events[0].block_hashes, std::vector<uint64_t>{2});
  EXPECT_EQ(update.events[0].sequence_number, 3u);
}

TEST(StatePublisherTest, NothingChangedPushesOnlyWhenAStepStarts) {
  StatePublisher publisher(1024);
  auto subscription = publisher.Subscribe();
  EngineLoad load;
  EngineStateUpdate update;
  Publish(publisher, {}, load, Urgency::kCadence);
  ASSERT_TRUE(subscription->Next(absl::ZeroDuration(), &update));  // the snapshot

  Publish(publisher, {}, load, Urgency::kCadence);
  Publish(publisher, {}, load, Urgency::kFlush);
  EXPECT_FALSE(subscription->Next(absl::ZeroDuration(), &update));

  load.step_running = true;
  load.expected_step_ms = 3000;
  Publish(publisher, {}, load, Urgency::kNow);
  ASSERT_TRUE(subscription->Next(absl::ZeroDuration(), &update));
  EXPECT_TRUE(update.load.step_running);
  EXPECT_EQ(update.load.expected_step_ms, 3000);
  EXPECT_TRUE(update.events.empty());

  // The step's end is a change: flushed before the loop idles.
  load.step_running = false;
  load.steps = 1;
  Publish(publisher, {}, load, Urgency::kFlush);
  ASSERT_TRUE(subscription->Next(absl::ZeroDuration(), &update));
  EXPECT_FALSE(update.load.step_running);
  EXPECT_EQ(update.load.steps, 1u);
}

TEST(StatePublisherTest, AClearedCacheReachesSubscribersFirstInItsUpdate) {
  StatePublisher publisher(1024);
  auto subscription = publisher.Subscribe();
  EngineLoad load;
  EngineStateUpdate update;
  Publish(publisher, {}, load, Urgency::kCadence);
  ASSERT_TRUE(subscription->Next(absl::ZeroDuration(), &update));
  Publish(publisher, {Stored({7})}, load, Urgency::kNow);
  ASSERT_TRUE(subscription->Next(absl::ZeroDuration(), &update));
  EXPECT_EQ(update.events.size(), 1u);

  Publish(publisher, {Cleared(), Stored({8})}, load, Urgency::kNow);
  ASSERT_TRUE(subscription->Next(absl::ZeroDuration(), &update));
  ASSERT_EQ(update.events.size(), 2u);
  EXPECT_EQ(update.events[0].kind, KvEventKind::kAllBlocksCleared);
  EXPECT_EQ(update.events[1].block_hashes, std::vector<uint64_t>{8});
}

TEST(StatePublisherTest, SubscriberFallingBehindGetsAFreshSnapshot) {
  StatePublisher publisher(2);
  auto subscription = publisher.Subscribe();
  EngineLoad load;
  EngineStateUpdate update;
  Publish(publisher, {}, load, Urgency::kCadence);
  ASSERT_TRUE(subscription->Next(absl::ZeroDuration(), &update));
  const uint64_t next = update.events.back().sequence_number + 1;

  // Three hashes pending pass the bound of two: replaced by the snapshot.
  Publish(publisher, {Stored({1, 2})}, load, Urgency::kNow);
  Publish(publisher, {Stored({3})}, load, Urgency::kNow, {Cleared(), Stored({1, 2, 3})});
  ASSERT_TRUE(subscription->Next(absl::ZeroDuration(), &update));
  ASSERT_EQ(update.events.size(), 2u);
  EXPECT_EQ(update.events[0].kind, KvEventKind::kAllBlocksCleared);
  EXPECT_EQ(update.events[0].sequence_number, next);
  EXPECT_EQ(update.events[1].block_hashes, (std::vector<uint64_t>{1, 2, 3}));
}

TEST(StatePublisherTest, CloseAllEndsSubscriptionsAndLaterOnesStartClosed) {
  StatePublisher publisher(1024);
  auto subscription = publisher.Subscribe();
  publisher.CloseAll();
  EngineStateUpdate update;
  EXPECT_FALSE(subscription->Next(absl::Seconds(1), &update));
  EXPECT_TRUE(subscription->Closed());
  auto late = publisher.Subscribe();
  EXPECT_TRUE(late->Closed());
  // Publishing after the close reaches nobody and does not fail.
  Publish(publisher, {Stored({1})}, EngineLoad(), Urgency::kNow);
  EXPECT_FALSE(late->Next(absl::ZeroDuration(), &update));
}

}  // namespace
}  // namespace tern::worker
