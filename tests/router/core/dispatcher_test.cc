// Late binding without gRPC: the real dispatcher over a real FleetState fed
// by plain events, on a ManualClock.
#include "router/core/dispatcher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/block_hash.h"
#include "tests/router/core/test_fleet.h"

namespace tern::router {
namespace {

using testing::Idle;
using testing::TestFleet;

// Records how each queued request ended.
class RecordingWaiter : public DispatchWaiter {
 public:
  void OnDispatched(FleetMember* worker, int32_t predicted_cached_tokens) override {
    dispatched_to = worker;
    predicted = predicted_cached_tokens;
  }
  void OnRejected(const absl::Status& status) override { rejected = status; }

  FleetMember* dispatched_to = nullptr;
  int32_t predicted = -1;
  absl::Status rejected;
};

std::vector<int32_t> Prompt(int32_t first, int num_blocks) {
  std::vector<int32_t> tokens(static_cast<size_t>(num_blocks) * 16);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = first + static_cast<int32_t>(i);
  return tokens;
}

class DispatcherTest : public ::testing::Test {
 protected:
  DispatchRequest Request(uint64_t ticket, const std::vector<int32_t>& prompt,
                          DispatchWaiter* waiter) {
    DispatchRequest r;
    r.ticket = ticket;
    r.model = "m";
    r.prompt = prompt;
    r.waiter = waiter;
    return r;
  }

  DispatcherOptions Options(int32_t slack = 0) {
    DispatcherOptions options;
    options.slack = slack;
    return options;
  }

  // Admits a new request of `prompt` whose waiter the fixture keeps.
  absl::StatusOr<Admission> AdmitNew(Dispatcher& dispatcher, const std::vector<int32_t>& prompt) {
    waiters_.push_back(std::make_unique<RecordingWaiter>());
    return dispatcher.Admit(Request(next_ticket_++, prompt, waiters_.back().get()));
  }

  TestFleet fleet_;
  std::vector<std::unique_ptr<RecordingWaiter>> waiters_;
  uint64_t next_ticket_ = 1;
};

TEST_F(DispatcherTest, BindsOnlyWhenAWorkerHasRoomThenReleasesToTheQueue) {
  std::vector<FleetMember*> w = fleet_.AddHealthy(2, "m", /*max_num_seqs=*/1);
  Dispatcher dispatcher(&fleet_.state, Options(), &fleet_.clock);
  const std::vector<int32_t> prompt = Prompt(0, 2);
  RecordingWaiter a, b, c;
  auto first = dispatcher.Admit(Request(1, prompt, &a));
  auto second = dispatcher.Admit(Request(2, prompt, &b));
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_NE(first->worker, nullptr);
  ASSERT_NE(second->worker, nullptr);
  EXPECT_NE(first->worker, second->worker) << "one slot each";
  auto third = dispatcher.Admit(Request(3, prompt, &c));
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->worker, nullptr) << "no room: it waits, bound to no worker";
  EXPECT_EQ(dispatcher.queued(), 1u);
  EXPECT_EQ(c.dispatched_to, nullptr);
  // Load reports do not free router slots; only the end of a call does.
  fleet_.state.OnStateMessage(*w[0], Idle(7), {}, fleet_.clock.Now());
  dispatcher.Pump();
  EXPECT_EQ(c.dispatched_to, nullptr);
  dispatcher.Release(first->worker);
  EXPECT_EQ(c.dispatched_to, first->worker) << "the freed worker takes the waiting request";
  EXPECT_EQ(dispatcher.queued(), 0u);
  EXPECT_EQ(dispatcher.stats().queued, 1u);
  EXPECT_EQ(dispatcher.stats().dispatched, 3u);
}

TEST_F(DispatcherTest, QueuedRequestsGoFirstAndPreferTheirCachedWorker) {
  std::vector<FleetMember*> w = fleet_.AddHealthy(2, "m", 1);
  // w1 holds the blocks of prompt B by its events.
  const std::vector<int32_t> prompt_a = Prompt(0, 4);
  const std::vector<int32_t> prompt_b = Prompt(1000, 4);
  const KvEvent stored{1, KvEvent::Kind::kStored, HashPrefixBlocks(prompt_b, 16)};
  fleet_.state.OnStateMessage(*w[1], Idle(), {&stored, 1}, fleet_.clock.Now());
  Dispatcher dispatcher(&fleet_.state, Options(), &fleet_.clock);
  RecordingWaiter r0, r1, qa, qb;
  auto busy0 = dispatcher.Admit(Request(1, prompt_a, &r0));
  auto busy1 = dispatcher.Admit(Request(2, prompt_a, &r1));
  ASSERT_NE(busy0->worker, nullptr);
  ASSERT_NE(busy1->worker, nullptr);
  // Routing records of prompt A count as cached for a moment only (the
  // prefix index's speculative_ttl); after it only events do.
  fleet_.clock.Advance(absl::Seconds(3));
  ASSERT_EQ(dispatcher.Admit(Request(3, prompt_a, &qa))->worker, nullptr);
  ASSERT_EQ(dispatcher.Admit(Request(4, prompt_b, &qb))->worker, nullptr);
  // w1 frees a slot: of the two waiting, the one whose prefix it holds costs it least.
  dispatcher.Release(w[1]);
  EXPECT_EQ(qb.dispatched_to, w[1]);
  EXPECT_EQ(qb.predicted, 64);
  EXPECT_EQ(qa.dispatched_to, nullptr);
  dispatcher.Release(w[0]);
  EXPECT_EQ(qa.dispatched_to, w[0]);
}

TEST_F(DispatcherTest, FairnessBoundTakesARequestPassedOverTooOften) {
  std::vector<FleetMember*> w = fleet_.AddHealthy(1, "m", 1);
  const std::vector<int32_t> cold = Prompt(0, 8);
  const std::vector<int32_t> warm = Prompt(5000, 8);
  const KvEvent stored{1, KvEvent::Kind::kStored, HashPrefixBlocks(warm, 16)};
  fleet_.state.OnStateMessage(*w[0], Idle(), {&stored, 1}, fleet_.clock.Now());
  DispatcherOptions options = Options();
  options.queue.max_skips = 2;
  options.queue.max_skip_age = absl::Hours(1);
  Dispatcher dispatcher(&fleet_.state, options, &fleet_.clock);
  RecordingWaiter running;
  ASSERT_NE(dispatcher.Admit(Request(1, cold, &running))->worker, nullptr);
  fleet_.clock.Advance(absl::Seconds(3));  // past the routing record's speculative_ttl
  // The cold request queues first; warm ones keep arriving behind it.
  RecordingWaiter cold_waiter;
  ASSERT_EQ(dispatcher.Admit(Request(2, cold, &cold_waiter))->worker, nullptr);
  std::vector<std::unique_ptr<RecordingWaiter>> warm_waiters;
  uint64_t ticket = 10;
  int taken_before_cold = 0;
  for (int round = 0; round < 5 && cold_waiter.dispatched_to == nullptr; ++round) {
    warm_waiters.push_back(std::make_unique<RecordingWaiter>());
    ASSERT_EQ(dispatcher.Admit(Request(ticket++, warm, warm_waiters.back().get()))->worker,
              nullptr);
    dispatcher.Release(w[0]);  // one slot frees: it goes to the cheapest... within the bound
    if (cold_waiter.dispatched_to == nullptr) ++taken_before_cold;
  }
  EXPECT_EQ(cold_waiter.dispatched_to, w[0]);
  EXPECT_EQ(taken_before_cold, 2) << "passed over exactly max_skips times";
}

TEST_F(DispatcherTest, ResumedRequestAvoidsTheFailedWorkerAndIgnoresTheLengthLimit) {
  std::vector<FleetMember*> w = fleet_.AddHealthy(2, "m", 1);
  DispatcherOptions options = Options();
  options.queue.max_length = 1;
  Dispatcher dispatcher(&fleet_.state, options, &fleet_.clock);
  const std::vector<int32_t> prompt = Prompt(0, 2);
  RecordingWaiter a, b, c, resumed_waiter;
  auto on0 = dispatcher.Admit(Request(1, prompt, &a));
  auto on1 = dispatcher.Admit(Request(2, prompt, &b));
  ASSERT_TRUE(on0->worker != nullptr && on1->worker != nullptr);
  ASSERT_EQ(dispatcher.Admit(Request(3, prompt, &c))->worker, nullptr);
  // The call on on0's worker fails mid-stream; its relay admits it again,
  // excluding that worker, ahead of everything and beyond the queue limit.
  FleetMember* failed = on0->worker;
  dispatcher.Release(failed);
  EXPECT_EQ(c.dispatched_to, failed) << "the freed slot went to the waiting request";
  DispatchRequest resume = Request(1, prompt, &resumed_waiter);
  resume.exclude = {failed};
  resume.resumed = true;
  resume.priority = std::numeric_limits<int32_t>::max();
  auto again = dispatcher.Admit(resume);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->worker, nullptr);
  // The failed worker frees up first: the resumed request must not go there.
  dispatcher.Release(failed);
  EXPECT_EQ(resumed_waiter.dispatched_to, nullptr);
  FleetMember* other = on1->worker;
  dispatcher.Release(other);
  EXPECT_EQ(resumed_waiter.dispatched_to, other);
}

TEST_F(DispatcherTest, RequestsThatCannotBeServedAreRejected) {
  std::vector<FleetMember*> w = fleet_.AddHealthy(1, "m", 1);
  DispatcherOptions options = Options();
  options.queue.max_wait = absl::Seconds(2);
  Dispatcher dispatcher(&fleet_.state, options, &fleet_.clock);
  const std::vector<int32_t> prompt = Prompt(0, 1);
  RecordingWaiter a, waiting, late;
  EXPECT_EQ(dispatcher.Admit(Request(1, prompt, &a)).status().code(), absl::StatusCode::kOk);
  DispatchRequest unknown = Request(9, prompt, &late);
  unknown.model = "nope";
  EXPECT_EQ(dispatcher.Admit(unknown).status().code(), absl::StatusCode::kNotFound);
  ASSERT_EQ(dispatcher.Admit(Request(2, prompt, &waiting))->worker, nullptr);
  fleet_.clock.Advance(absl::Seconds(3));
  dispatcher.Pump();
  EXPECT_EQ(waiting.rejected.code(), absl::StatusCode::kResourceExhausted);
  // The only worker is lost: admission says UNAVAILABLE.
  HealthReport down;
  down.failure = "health check failed";
  fleet_.state.OnHealthReport(*w[0], down, fleet_.clock.Now());
  EXPECT_EQ(dispatcher.Admit(Request(3, prompt, &late)).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(DispatcherTest, ADrainingWorkerGetsNothingNew) {
  std::vector<FleetMember*> w = fleet_.AddHealthy(2, "m", 4);
  HealthReport draining;
  draining.draining = true;
  draining.failure = "not serving (draining)";
  fleet_.state.OnHealthReport(*w[0], draining, fleet_.clock.Now());
  Dispatcher dispatcher(&fleet_.state, Options(), &fleet_.clock);
  const std::vector<int32_t> prompt = Prompt(0, 1);
  std::vector<RecordingWaiter> waiters(4);
  for (uint64_t i = 0; i < 4; ++i) {
    auto admission = dispatcher.Admit(Request(i + 1, prompt, &waiters[i]));
    ASSERT_TRUE(admission.ok());
    EXPECT_EQ(admission->worker, w[1]);
  }
}

// Records what the dispatcher tells its observer.
class RecordingObserver : public DispatchObserver {
 public:
  void OnBound(absl::Duration queue_time) override { bound.push_back(queue_time); }
  void OnAdmitted(absl::Duration decision_time) override { decisions.push_back(decision_time); }

  std::vector<absl::Duration> bound;
  std::vector<absl::Duration> decisions;
};

TEST_F(DispatcherTest, ObserverHearsQueueTimesOnTheInjectedClockAndEveryAdmission) {
  std::vector<FleetMember*> w = fleet_.AddHealthy(1, "m", /*max_num_seqs=*/1);
  RecordingObserver observer;
  DispatcherOptions options = Options();
  options.observer = &observer;
  Dispatcher dispatcher(&fleet_.state, options, &fleet_.clock);
  const std::vector<int32_t> prompt = Prompt(0, 2);
  RecordingWaiter a, b;
  auto first = dispatcher.Admit(Request(1, prompt, &a));
  auto second = dispatcher.Admit(Request(2, prompt, &b));
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_EQ(second->worker, nullptr) << "the only slot is taken";
  fleet_.clock.Advance(absl::Milliseconds(1500));
  dispatcher.Release(w[0]);
  ASSERT_EQ(b.dispatched_to, w[0]);
  ASSERT_EQ(observer.bound.size(), 2u);
  EXPECT_EQ(observer.bound[0], absl::ZeroDuration()) << "bound at admission";
  EXPECT_EQ(observer.bound[1], absl::Milliseconds(1500)) << "waited on the injected clock";
  ASSERT_EQ(observer.decisions.size(), 2u) << "both admissions, bound or queued";
  for (absl::Duration d : observer.decisions) EXPECT_GE(d, absl::ZeroDuration());
  EXPECT_EQ(dispatcher.QueuedByPriority().size(), 0u);
}

TEST_F(DispatcherTest, QueueDepthByPriorityAndNoWorkerRejections) {
  fleet_.AddHealthy(1, "m", /*max_num_seqs=*/1);
  Dispatcher dispatcher(&fleet_.state, Options(), &fleet_.clock);
  const std::vector<int32_t> prompt = Prompt(0, 1);
  RecordingWaiter a, b, c, d;
  ASSERT_TRUE(dispatcher.Admit(Request(1, prompt, &a)).ok());
  DispatchRequest high = Request(2, prompt, &b);
  high.priority = 5;
  ASSERT_TRUE(dispatcher.Admit(high).ok());
  ASSERT_TRUE(dispatcher.Admit(Request(3, prompt, &c)).ok());
  const std::vector<std::pair<int32_t, int64_t>> expected = {{0, 1}, {5, 1}};
  EXPECT_EQ(dispatcher.QueuedByPriority(), expected);
  DispatchRequest other = Request(4, prompt, &d);
  other.model = "no-such-model";
  EXPECT_FALSE(dispatcher.Admit(other).ok());
  EXPECT_EQ(dispatcher.stats().no_worker, 1u);
}

// Appends its ticket to a shared list when dispatched: the order requests left the queue.
class OrderWaiter : public DispatchWaiter {
 public:
  OrderWaiter(uint64_t ticket, std::vector<uint64_t>* order) : ticket_(ticket), order_(order) {}
  void OnDispatched(FleetMember*, int32_t) override { order_->push_back(ticket_); }
  void OnRejected(const absl::Status& status) override { ADD_FAILURE() << status; }

 private:
  uint64_t ticket_;
  std::vector<uint64_t>* order_;
};

TEST_F(DispatcherTest, AHighPriorityRequestOvertakesQueuedLowPriorityOnes) {
  std::vector<FleetMember*> w = fleet_.AddHealthy(1, "m", /*max_num_seqs=*/1);
  Dispatcher dispatcher(&fleet_.state, Options(), &fleet_.clock);
  const std::vector<int32_t> prompt = Prompt(0, 1);
  std::vector<uint64_t> order;
  std::vector<std::unique_ptr<OrderWaiter>> waiters;
  auto admit = [&](uint64_t ticket, int32_t priority) {
    waiters.push_back(std::make_unique<OrderWaiter>(ticket, &order));
    DispatchRequest r = Request(ticket, prompt, waiters.back().get());
    r.priority = priority;
    auto admission = dispatcher.Admit(std::move(r));
    ASSERT_TRUE(admission.ok()) << admission.status();
    if (admission->worker != nullptr) order.push_back(ticket);
    fleet_.clock.Advance(absl::Milliseconds(10));
  };
  for (uint64_t ticket = 1; ticket <= 4; ++ticket) admit(ticket, -1);
  admit(5, 1);
  for (int i = 0; i < 4; ++i) dispatcher.Release(w[0]);
  EXPECT_EQ(order, (std::vector<uint64_t>{1, 5, 2, 3, 4}));
  EXPECT_EQ(dispatcher.stats().promoted, 0u);
}

TEST_F(DispatcherTest, ALowPriorityRequestIsPromotedAfterTheBoundAndServedBeforeLaterArrivals) {
  std::vector<FleetMember*> w = fleet_.AddHealthy(1, "m", /*max_num_seqs=*/1);
  DispatcherOptions options = Options();
  options.queue.max_priority_wait = absl::Seconds(1);
  Dispatcher dispatcher(&fleet_.state, options, &fleet_.clock);
  const std::vector<int32_t> prompt = Prompt(0, 1);
  std::vector<uint64_t> order;
  std::vector<std::unique_ptr<OrderWaiter>> waiters;
  auto admit = [&](uint64_t ticket, int32_t priority) {
    waiters.push_back(std::make_unique<OrderWaiter>(ticket, &order));
    DispatchRequest r = Request(ticket, prompt, waiters.back().get());
    r.priority = priority;
    auto admission = dispatcher.Admit(std::move(r));
    ASSERT_TRUE(admission.ok()) << admission.status();
    if (admission->worker != nullptr) order.push_back(ticket);
  };
  admit(1, 0);  // takes the only slot
  admit(2, -5);
  const absl::Time queued_at = fleet_.clock.Now();
  // Every 250 ms two high-priority requests arrive and one call ends.
  uint64_t ticket = 100;
  for (uint64_t step = 1; step <= 8; ++step) {
    fleet_.clock.Advance(absl::Milliseconds(250));
    fleet_.state.OnStateMessage(*w[0], Idle(step), {}, fleet_.clock.Now());
    admit(ticket++, 5);
    admit(ticket++, 5);
    dispatcher.Release(w[0]);
    if (order.back() == 2u) break;
  }
  ASSERT_EQ(order.back(), 2u) << "never served";
  // Four takes: at 0.25, 0.5, 0.75 and 1 s the high-priority ones win; at
  // 1.25 s it has waited past the bound and goes before the six still waiting.
  EXPECT_EQ(order.size(), 6u);
  EXPECT_EQ(fleet_.clock.Now() - queued_at, absl::Milliseconds(1250));
  EXPECT_EQ(dispatcher.queued(), 6u);
  EXPECT_EQ(dispatcher.stats().promoted, 1u);
  // Promotion moves it in the queue; the depth gauge keeps its own priority.
  const std::vector<std::pair<int32_t, int64_t>> expected = {{5, 6}};
  EXPECT_EQ(dispatcher.QueuedByPriority(), expected);
}

// Workers of one model with different KV block sizes (tern's engine: 16,
// vLLM Neuron: 128): each prompt is hashed at each worker's block size and
// the worker holding more of it, in tokens, wins.
TEST_F(DispatcherTest, ARequestPredictedToWaitPastTheLimitIsTurnedAwayAtOnce) {
  std::vector<FleetMember*> w = fleet_.AddHealthy(1, "m", /*max_num_seqs=*/1);
  DispatcherOptions options = Options();
  options.queue.max_wait = absl::Milliseconds(250);
  Dispatcher dispatcher(&fleet_.state, options, &fleet_.clock);
  const std::vector<int32_t> prompt = Prompt(0, 1);
  std::vector<std::unique_ptr<RecordingWaiter>> waiters;
  uint64_t ticket = 1;
  auto admit = [&](int32_t priority = 0, bool resumed = false) {
    waiters.push_back(std::make_unique<RecordingWaiter>());
    DispatchRequest r = Request(ticket++, prompt, waiters.back().get());
    r.priority = priority;
    r.resumed = resumed;
    return dispatcher.Admit(std::move(r));
  };
  // Four calls of 100 ms each on the one slot: a slot frees every 100 ms.
  // Calls that never ran are no evidence.
  for (int i = 0; i < 4; ++i) {
    ASSERT_NE(admit()->worker, nullptr);
    dispatcher.Release(w[0], absl::Milliseconds(100));
    ASSERT_NE(admit()->worker, nullptr);
    dispatcher.Release(w[0]);
  }
  ASSERT_NE(admit()->worker, nullptr);
  // First in line: 100 ms; behind one: 200 ms; both within 250 ms.
  EXPECT_TRUE(admit().ok());
  EXPECT_TRUE(admit().ok());
  EXPECT_EQ(dispatcher.queued(), 2u);
  // Behind two: 300 ms. Turned away at once, not after waiting.
  auto beyond = admit();
  EXPECT_EQ(beyond.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(beyond.status().message().find("about 300 ms"), std::string::npos) << beyond.status();
  EXPECT_EQ(dispatcher.stats().rejected_predicted, 1u);
  // A higher priority goes before both: 100 ms, then 200 ms behind the first
  // of its kind; a third would wait 300 ms.
  EXPECT_TRUE(admit(/*priority=*/5).ok());
  EXPECT_TRUE(admit(/*priority=*/5).ok());
  EXPECT_EQ(admit(/*priority=*/5).status().code(), absl::StatusCode::kResourceExhausted);
  // A resumed request is already streaming to its client: never turned away.
  EXPECT_TRUE(admit(0, /*resumed=*/true).ok());
  EXPECT_EQ(dispatcher.queued(), 5u);
  EXPECT_EQ(dispatcher.stats().rejected_predicted, 2u);
}

TEST_F(DispatcherTest, ThePredictionSpreadsCallTimesOverEverySlotOfTheModel) {
  std::vector<FleetMember*> w = fleet_.AddHealthy(2, "m", /*max_num_seqs=*/2);
  DispatcherOptions options = Options();
  options.queue.max_wait = absl::Milliseconds(250);
  Dispatcher dispatcher(&fleet_.state, options, &fleet_.clock);
  const std::vector<int32_t> prompt = Prompt(0, 1);
  auto admit = [&]() { return AdmitNew(dispatcher, prompt); };
  // Three samples are not enough: a long queue forms unpredicted.
  for (int i = 0; i < 3; ++i) {
    auto bound = admit();
    ASSERT_NE(bound->worker, nullptr);
    dispatcher.Release(bound->worker, absl::Milliseconds(400));
  }
  for (int i = 0; i < 4; ++i) ASSERT_NE(admit()->worker, nullptr);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(admit().ok());
  EXPECT_EQ(dispatcher.queued(), 3u);
  EXPECT_EQ(dispatcher.stats().rejected_predicted, 0u);
  // A fourth call of 400 ms: on 4 slots, one frees every 100 ms. Its slot
  // takes the first queued request; behind the other two a new one would
  // wait (2 + 1) x 100 ms = 300 ms, past 250 ms.
  dispatcher.Release(w[0], absl::Milliseconds(400));
  EXPECT_EQ(dispatcher.queued(), 2u);
  auto beyond = admit();
  EXPECT_EQ(beyond.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(beyond.status().message().find("about 300 ms"), std::string::npos) << beyond.status();
  dispatcher.Release(w[1], absl::Milliseconds(400));
  EXPECT_TRUE(admit().ok()) << "behind one: 200 ms";
  EXPECT_EQ(dispatcher.queued(), 2u);
  EXPECT_EQ(dispatcher.stats().rejected_predicted, 1u);
}

TEST_F(DispatcherTest, MixedBlockSizesCompareCachedTokensNotBlocks) {
  FleetMember* small = fleet_.AddHealthy(1, "m", /*max_num_seqs=*/8, /*kv_block_size=*/16)[0];
  FleetMember* large = fleet_.AddHealthy(1, "m", /*max_num_seqs=*/8, /*kv_block_size=*/128)[0];
  Dispatcher dispatcher(&fleet_.state, Options(), &fleet_.clock);
  const std::vector<int32_t> whole_on_large = Prompt(0, 32);     // 512 tokens
  const std::vector<int32_t> whole_on_small = Prompt(5000, 32);  // 512 tokens
  const std::vector<int32_t> split = Prompt(9000, 32);           // 512 tokens
  // `large` holds all of one prompt and the first 128 tokens of `split`;
  // `small` holds all of another and the first 64 tokens of `split`.
  std::vector<uint64_t> large_blocks = HashPrefixBlocks(whole_on_large, 128);
  const std::vector<uint64_t> split_large = HashPrefixBlocks(split, 128);
  large_blocks.push_back(split_large[0]);
  std::vector<uint64_t> small_blocks = HashPrefixBlocks(whole_on_small, 16);
  const std::vector<uint64_t> split_small = HashPrefixBlocks(split, 16);
  small_blocks.insert(small_blocks.end(), split_small.begin(), split_small.begin() + 4);
  const KvEvent on_large{1, KvEvent::Kind::kStored, large_blocks};
  const KvEvent on_small{1, KvEvent::Kind::kStored, small_blocks};
  fleet_.state.OnStateMessage(*large, Idle(), {&on_large, 1}, fleet_.clock.Now());
  fleet_.state.OnStateMessage(*small, Idle(), {&on_small, 1}, fleet_.clock.Now());

  RecordingWaiter a, b, c;
  auto to_large = dispatcher.Admit(Request(1, whole_on_large, &a));
  ASSERT_TRUE(to_large.ok());
  EXPECT_EQ(to_large->worker, large);
  EXPECT_EQ(to_large->predicted_cached_tokens, 512);
  dispatcher.Release(large);
  auto to_small = dispatcher.Admit(Request(2, whole_on_small, &b));
  ASSERT_TRUE(to_small.ok());
  EXPECT_EQ(to_small->worker, small);
  EXPECT_EQ(to_small->predicted_cached_tokens, 512);
  dispatcher.Release(small);
  // 128 cached tokens (1 block of 128) beat 64 (4 blocks of 16).
  auto to_split = dispatcher.Admit(Request(3, split, &c));
  ASSERT_TRUE(to_split.ok());
  EXPECT_EQ(to_split->worker, large);
  EXPECT_EQ(to_split->predicted_cached_tokens, 128);
}

// Overload pacing: nothing is paced while the load fits at full room; once a
// request is turned away at full room, each worker is held where its TTFT
// stays within the factor of its TTFT alone, raised again after windows
// within it, and the whole overload ends when arrivals fall below what the
// workers complete at full room.
TEST_F(DispatcherTest, OverloadPacingHoldsWorkersToTheirTtftUntilArrivalsFall) {
  std::vector<FleetMember*> w = fleet_.AddHealthy(2, "m", /*max_num_seqs=*/2);
  DispatcherOptions options = Options();
  options.queue.max_wait = absl::Milliseconds(10);
  options.overload_ttft_factor = 1.5;
  Dispatcher dispatcher(&fleet_.state, options, &fleet_.clock);
  const std::vector<int32_t> prompt = Prompt(0, 1);
  auto admit = [&]() { return AdmitNew(dispatcher, prompt); };
  auto observe = [&](FleetMember* worker, int n, absl::Duration ttft, bool alone) {
    for (int i = 0; i < n; ++i) dispatcher.ObserveFirstToken(worker, ttft, alone);
  };
  // Alone each worker answers in 10 ms; calls hold a slot 1 s (4 slots:
  // the workers complete 4 calls a second at full room).
  observe(w[0], 4, absl::Milliseconds(10), true);
  observe(w[1], 4, absl::Milliseconds(10), true);
  for (int i = 0; i < 4; ++i) {
    auto bound = admit();
    ASSERT_NE(bound->worker, nullptr);
    dispatcher.Release(bound->worker, absl::Seconds(1));
  }
  // Full room in use, TTFTs at 4x alone: a load that fits is never paced.
  for (int i = 0; i < 4; ++i) ASSERT_NE(admit()->worker, nullptr);
  observe(w[0], 8, absl::Milliseconds(40), false);
  observe(w[1], 8, absl::Milliseconds(40), false);
  EXPECT_TRUE(dispatcher.Paced().empty());
  EXPECT_EQ(dispatcher.stats().overloads, 0u);

  // Turned away at full room: the overload starts, and the last TTFTs (40 ms
  // against a 15 ms bound) set each worker's limit at once: 2 x 15/40 -> 1.
  EXPECT_EQ(admit().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(dispatcher.stats().overloads, 1u);
  EXPECT_EQ(dispatcher.stats().paced_down, 2u);
  const std::vector<std::pair<std::string, int32_t>> both = {{w[0]->address(), 1},
                                                             {w[1]->address(), 1}};
  std::vector<std::pair<std::string, int32_t>> expected = both;
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(dispatcher.Paced(), expected);
  // A freed slot under the limit is no room: turned away (1 s / 2 slots).
  dispatcher.Release(w[0], absl::Seconds(1));
  auto paced = admit();
  EXPECT_EQ(paced.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(paced.status().message().find("about 500 ms"), std::string::npos) << paced.status();

  // TTFTs of calls started before the limit moved are no evidence; three
  // windows of 8 within the bound raise it by one.
  observe(w[0], 24, absl::Milliseconds(10), false);
  EXPECT_EQ(dispatcher.Paced().size(), 2u);
  fleet_.clock.Advance(absl::Milliseconds(100));
  observe(w[0], 16, absl::Milliseconds(10), false);
  EXPECT_EQ(dispatcher.Paced().size(), 2u);
  observe(w[0], 8, absl::Milliseconds(10), false);
  EXPECT_EQ(dispatcher.Paced(),
            (std::vector<std::pair<std::string, int32_t>>{{w[1]->address(), 1}}));
  // A window over the bound lowers it in proportion, one at least.
  fleet_.clock.Advance(absl::Milliseconds(100));
  observe(w[0], 8, absl::Milliseconds(20), false);
  EXPECT_EQ(dispatcher.stats().paced_down, 3u);
  ASSERT_EQ(dispatcher.Paced().size(), 2u);

  // Arrivals stop: their rate decays below 4 a second and the overload ends
  // at the next pump; the workers take calls at full room again.
  fleet_.clock.Advance(absl::Seconds(5));
  dispatcher.Pump();
  EXPECT_TRUE(dispatcher.Paced().empty());
  EXPECT_EQ(admit()->worker, w[0]);
  EXPECT_EQ(dispatcher.stats().overloads, 1u);
}

}  // namespace
}  // namespace tern::router
