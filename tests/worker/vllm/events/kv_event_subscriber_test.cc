#include "worker/vllm/events/kv_event_subscriber.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <msgpack.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

// A stand-in for vLLM's ZmqEventPublisher as the protocol reference describes
// it: PUB frames [topic, seq 8 bytes big-endian, payload]; a ROUTER that
// answers [empty, start seq] with [empty, seq, payload] per buffered batch
// from there, then [empty, -1 as 8 bytes, ""]. Every wait is bounded.
namespace tern::worker::vllm {
namespace {

constexpr char kTopic[] = "kv@pod-0@llama";
constexpr absl::Duration kPatience = absl::Seconds(10);

std::string Seq(int64_t seq) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i)
    bytes[i] = static_cast<char>(static_cast<uint64_t>(seq) >> (56 - 8 * i));
  return bytes;
}

// A map-encoded batch whose ts names it, holding one AllBlocksCleared.
std::string Payload(double ts) {
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> p(buffer);
  p.pack_map(2);
  p.pack(std::string("ts"));
  p.pack(ts);
  p.pack(std::string("events"));
  p.pack_array(1);
  p.pack_map(1);
  p.pack(std::string("type"));
  p.pack(std::string("AllBlocksCleared"));
  return {buffer.data(), buffer.size()};
}

struct FakeServerOptions {
  bool replay = true;
  // vLLM echoes the empty delimiter before each reply; some servers may not.
  bool delimiter = true;
  // False: requests are read but never answered.
  bool answer = true;
};

class FakeVllmServer {
 public:
  explicit FakeVllmServer(FakeServerOptions options = {}) : options_(options) {
    pub_ = zmq::socket_t(context_, zmq::socket_type::xpub);
    pub_.set(zmq::sockopt::linger, 0);
    pub_.set(zmq::sockopt::xpub_verbose, 1);
    pub_.bind("tcp://127.0.0.1:*");
    pub_endpoint_ = pub_.get(zmq::sockopt::last_endpoint);
    if (options_.replay) {
      router_ = zmq::socket_t(context_, zmq::socket_type::router);
      router_.set(zmq::sockopt::linger, 0);
      router_.bind("tcp://127.0.0.1:*");
      replay_endpoint_ = router_.get(zmq::sockopt::last_endpoint);
      thread_ = std::thread([this] { ServeReplays(); });
    }
  }

  ~FakeVllmServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  const std::string& pub_endpoint() const { return pub_endpoint_; }
  const std::string& replay_endpoint() const { return replay_endpoint_; }

  // Waits for a subscription to reach the PUB socket: frames sent before it
  // would be dropped (ZMQ's slow joiner).
  bool WaitForSubscriber() {
    const absl::Time deadline = absl::Now() + kPatience;
    while (absl::Now() < deadline) {
      zmq_pollitem_t item = {pub_.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 100) <= 0) continue;
      zmq::message_t message;
      if (pub_.recv(message, zmq::recv_flags::dontwait) && message.size() > 0 &&
          message.data<char>()[0] == 1) {
        return true;
      }
    }
    return false;
  }

  // Buffers batch `seq` for replay and, if `send`, publishes it.
  void Publish(int64_t seq, const std::string& payload, bool send = true) {
    {
      absl::MutexLock lock(&mu_);
      buffer_.emplace_back(seq, payload);
    }
    if (!send) return;
    std::vector<zmq::message_t> frames;
    frames.emplace_back(std::string(kTopic));
    frames.emplace_back(Seq(seq));
    frames.emplace_back(payload);
    ASSERT_TRUE(zmq::send_multipart(pub_, frames).has_value());
  }

  // Sends raw frames on PUB, bypassing the buffer.
  void PublishFrames(const std::vector<std::string>& parts) {
    std::vector<zmq::message_t> frames;
    for (const std::string& part : parts) frames.emplace_back(part);
    ASSERT_TRUE(zmq::send_multipart(pub_, frames).has_value());
  }

  // Drops buffered batches below `seq`, as vLLM's bounded buffer does.
  void ForgetBefore(int64_t seq) {
    absl::MutexLock lock(&mu_);
    while (!buffer_.empty() && buffer_.front().first < seq) buffer_.pop_front();
  }

  // A new vLLM process: its buffer starts empty (the sequence, from 0, is
  // the caller's).
  void Restart() {
    absl::MutexLock lock(&mu_);
    buffer_.clear();
  }

  int replay_requests() const { return replay_requests_; }

 private:
  void ServeReplays() {
    while (!stop_) {
      zmq_pollitem_t item = {router_.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 20) <= 0) continue;
      std::vector<zmq::message_t> request;
      if (!zmq::recv_multipart(router_, std::back_inserter(request), zmq::recv_flags::dontwait)) {
        continue;
      }
      ++replay_requests_;
      if (request.size() != 3 || request[2].size() != 8 || !options_.answer) continue;
      int64_t start = 0;
      for (int i = 0; i < 8; ++i) start = (start << 8) | request[2].data<unsigned char>()[i];
      std::vector<std::pair<int64_t, std::string>> batches;
      {
        absl::MutexLock lock(&mu_);
        for (const auto& batch : buffer_) {
          if (batch.first >= start) batches.push_back(batch);
        }
      }
      batches.emplace_back(-1, "");
      for (const auto& [seq, payload] : batches) {
        std::vector<zmq::message_t> reply;
        reply.emplace_back(request[0].data(), request[0].size());
        if (options_.delimiter) reply.emplace_back();
        reply.emplace_back(Seq(seq));
        reply.emplace_back(payload);
        zmq::send_multipart(router_, reply);
      }
    }
  }

  const FakeServerOptions options_;
  zmq::context_t context_;
  zmq::socket_t pub_;     // test thread only
  zmq::socket_t router_;  // replay thread only, once started
  std::string pub_endpoint_;
  std::string replay_endpoint_;
  absl::Mutex mu_;
  std::deque<std::pair<int64_t, std::string>> buffer_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stop_{false};
  std::atomic<int> replay_requests_{0};
  std::thread thread_;
};

// The idle probe is off unless a test turns it on (`probe_interval`), so
// the replay counts of the other tests do not depend on timing.
std::unique_ptr<KvEventSubscriber> Subscribe(const FakeVllmServer& server, bool with_replay = true,
                                             absl::Duration replay_timeout = absl::Seconds(5),
                                             absl::Duration probe_interval = absl::ZeroDuration()) {
  KvEventSubscriberOptions options;
  options.probe_interval = probe_interval;
  options.probe_timeout = absl::Seconds(2);
  options.endpoint = server.pub_endpoint();
  if (with_replay) options.replay_endpoint = server.replay_endpoint();
  options.topic = kTopic;
  options.replay_timeout = replay_timeout;
  absl::StatusOr<std::unique_ptr<KvEventSubscriber>> subscriber =
      KvEventSubscriber::Create(options);
  EXPECT_TRUE(subscriber.ok()) << subscriber.status();
  return subscriber.ok() ? *std::move(subscriber) : nullptr;
}

// "batch 3@3.5", "lost 5", "restarted 0": readable on failure.
std::string Describe(const KvEventDelivery& d) {
  switch (d.kind) {
    case KvEventDelivery::Kind::kBatch:
      return absl::StrCat("batch ", d.seq, "@", d.batch.ts);
    case KvEventDelivery::Kind::kLost:
      return absl::StrCat("lost ", d.seq);
    case KvEventDelivery::Kind::kRestarted:
      return absl::StrCat("restarted ", d.seq);
  }
  return "?";
}

// Polls until `n` deliveries came or patience ran out.
std::vector<std::string> Collect(KvEventSubscriber& subscriber, size_t n) {
  std::vector<std::string> seen;
  const absl::Time deadline = absl::Now() + kPatience;
  while (seen.size() < n && absl::Now() < deadline) {
    for (const KvEventDelivery& d : subscriber.Poll(absl::Milliseconds(100))) {
      seen.push_back(Describe(d));
      if (d.kind == KvEventDelivery::Kind::kBatch) {
        EXPECT_EQ(d.batch.events.size(), 1u);
      }
    }
  }
  return seen;
}

using Strings = std::vector<std::string>;

TEST(KvEventSubscriberTest, DeliversPublishedBatchesInOrder) {
  FakeVllmServer server;
  auto subscriber = Subscribe(server);
  ASSERT_NE(subscriber, nullptr);
  EXPECT_EQ(subscriber->last_seq(), -1);
  ASSERT_TRUE(server.WaitForSubscriber());
  for (int seq = 0; seq < 3; ++seq) server.Publish(seq, Payload(seq + 0.5));
  EXPECT_EQ(Collect(*subscriber, 3), (Strings{"batch 0@0.5", "batch 1@1.5", "batch 2@2.5"}));
  EXPECT_EQ(subscriber->last_seq(), 2);
  EXPECT_EQ(subscriber->stats().batches, 3u);
  EXPECT_EQ(subscriber->stats().gaps, 0u);
  EXPECT_EQ(server.replay_requests(), 0);
}

TEST(KvEventSubscriberTest, AGapIsFilledByReplay) {
  FakeVllmServer server;
  auto subscriber = Subscribe(server);
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(server.WaitForSubscriber());
  server.Publish(0, Payload(0));
  server.Publish(1, Payload(1));
  server.Publish(2, Payload(2), /*send=*/false);
  server.Publish(3, Payload(3), /*send=*/false);
  server.Publish(4, Payload(4));
  server.Publish(5, Payload(5));
  EXPECT_EQ(Collect(*subscriber, 6), (Strings{"batch 0@0", "batch 1@1", "batch 2@2", "batch 3@3",
                                              "batch 4@4", "batch 5@5"}));
  const KvEventSubscriberStats& stats = subscriber->stats();
  EXPECT_EQ(stats.gaps, 1u);
  EXPECT_EQ(stats.replays, 1u);
  EXPECT_EQ(stats.replayed_batches, 2u);
  EXPECT_EQ(stats.lost, 0u);
  EXPECT_EQ(server.replay_requests(), 1);
}

TEST(KvEventSubscriberTest, RepliesWithoutTheDelimiterAreTakenToo) {
  FakeVllmServer server({.replay = true, .delimiter = false, .answer = true});
  auto subscriber = Subscribe(server);
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(server.WaitForSubscriber());
  server.Publish(0, Payload(0));
  server.Publish(1, Payload(1), /*send=*/false);
  server.Publish(2, Payload(2));
  EXPECT_EQ(Collect(*subscriber, 3), (Strings{"batch 0@0", "batch 1@1", "batch 2@2"}));
  EXPECT_EQ(subscriber->stats().replayed_batches, 1u);
}

TEST(KvEventSubscriberTest, ALateSubscriberReplaysFromZero) {
  FakeVllmServer server;
  // Published before anyone listened: only the replay buffer has them.
  for (int seq = 0; seq < 3; ++seq) server.Publish(seq, Payload(seq));
  auto subscriber = Subscribe(server);
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(server.WaitForSubscriber());
  server.Publish(3, Payload(3));
  EXPECT_EQ(Collect(*subscriber, 4), (Strings{"batch 0@0", "batch 1@1", "batch 2@2", "batch 3@3"}));
  EXPECT_EQ(subscriber->stats().replayed_batches, 3u);
  EXPECT_EQ(subscriber->stats().lost, 0u);
}

TEST(KvEventSubscriberTest, AGapTheBufferNoLongerHoldsIsLost) {
  FakeVllmServer server;
  auto subscriber = Subscribe(server);
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(server.WaitForSubscriber());
  server.Publish(0, Payload(0));
  server.Publish(1, Payload(1), /*send=*/false);
  server.Publish(2, Payload(2), /*send=*/false);
  server.ForgetBefore(2);
  server.Publish(3, Payload(3));
  server.Publish(4, Payload(4));
  EXPECT_EQ(Collect(*subscriber, 4), (Strings{"batch 0@0", "lost 3", "batch 3@3", "batch 4@4"}));
  EXPECT_EQ(subscriber->stats().lost, 1u);
  EXPECT_EQ(subscriber->stats().replayed_batches, 0u);
  EXPECT_EQ(subscriber->last_seq(), 4);
}

TEST(KvEventSubscriberTest, WithoutAReplayEndpointAGapIsLostAtOnce) {
  FakeVllmServer server({.replay = false});
  auto subscriber = Subscribe(server, /*with_replay=*/false);
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(server.WaitForSubscriber());
  server.Publish(0, Payload(0));
  server.Publish(1, Payload(1), /*send=*/false);
  server.Publish(2, Payload(2));
  EXPECT_EQ(Collect(*subscriber, 3), (Strings{"batch 0@0", "lost 2", "batch 2@2"}));
  EXPECT_EQ(subscriber->stats().replays, 0u);
  EXPECT_EQ(subscriber->stats().gaps, 1u);
}

TEST(KvEventSubscriberTest, ALateSubscriberWithoutReplayStartsLost) {
  FakeVllmServer server({.replay = false});
  auto subscriber = Subscribe(server, /*with_replay=*/false);
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(server.WaitForSubscriber());
  server.Publish(7, Payload(7));
  EXPECT_EQ(Collect(*subscriber, 2), (Strings{"lost 7", "batch 7@7"}));
}

TEST(KvEventSubscriberTest, AReplayThatNeverAnswersTimesOutAsLost) {
  FakeVllmServer server({.replay = true, .delimiter = true, .answer = false});
  auto subscriber = Subscribe(server, /*with_replay=*/true, absl::Milliseconds(200));
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(server.WaitForSubscriber());
  server.Publish(0, Payload(0));
  server.Publish(1, Payload(1), /*send=*/false);
  server.Publish(2, Payload(2));
  const absl::Time start = absl::Now();
  EXPECT_EQ(Collect(*subscriber, 3), (Strings{"batch 0@0", "lost 2", "batch 2@2"}));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(subscriber->stats().replays, 1u);
  // The next gap asks again, on a fresh socket.
  server.Publish(3, Payload(3), /*send=*/false);
  server.Publish(4, Payload(4));
  EXPECT_EQ(Collect(*subscriber, 2), (Strings{"lost 4", "batch 4@4"}));
  EXPECT_EQ(subscriber->stats().replays, 2u);
}

TEST(KvEventSubscriberTest, SequenceBackAtZeroIsARestart) {
  FakeVllmServer server;
  auto subscriber = Subscribe(server);
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(server.WaitForSubscriber());
  for (int seq = 0; seq < 3; ++seq) server.Publish(seq, Payload(seq));
  EXPECT_EQ(Collect(*subscriber, 3), (Strings{"batch 0@0", "batch 1@1", "batch 2@2"}));
  server.Restart();
  server.Publish(0, Payload(100));
  server.Publish(1, Payload(101));
  EXPECT_EQ(Collect(*subscriber, 3), (Strings{"restarted 0", "batch 0@100", "batch 1@101"}));
  EXPECT_EQ(subscriber->stats().restarts, 1u);
  EXPECT_EQ(subscriber->stats().gaps, 0u);
}

TEST(KvEventSubscriberTest, ARestartSeenLateReplaysTheNewProcessFromZero) {
  FakeVllmServer server;
  auto subscriber = Subscribe(server);
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(server.WaitForSubscriber());
  for (int seq = 0; seq < 5; ++seq) server.Publish(seq, Payload(seq));
  EXPECT_EQ(Collect(*subscriber, 5).size(), 5u);
  server.Restart();
  server.Publish(0, Payload(100), /*send=*/false);
  server.Publish(1, Payload(101), /*send=*/false);
  server.Publish(2, Payload(102));
  EXPECT_EQ(Collect(*subscriber, 4),
            (Strings{"restarted 2", "batch 0@100", "batch 1@101", "batch 2@102"}));
}

TEST(KvEventSubscriberTest, TheIdleProbeFindsARestartWhoseBatchesWereAllMissed) {
  FakeVllmServer server;
  auto subscriber = Subscribe(server, true, absl::Seconds(5), absl::Milliseconds(200));
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(server.WaitForSubscriber());
  for (int seq = 0; seq < 3; ++seq) server.Publish(seq, Payload(seq));
  EXPECT_EQ(Collect(*subscriber, 3).size(), 3u);
  // A new process whose batches all went out before the SUB socket came
  // back; nothing follows on PUB.
  server.Restart();
  server.Publish(0, Payload(100), /*send=*/false);
  server.Publish(1, Payload(101), /*send=*/false);
  EXPECT_EQ(Collect(*subscriber, 3), (Strings{"restarted 0", "batch 0@100", "batch 1@101"}));
  EXPECT_EQ(subscriber->stats().restarts, 1u);
  EXPECT_EQ(subscriber->last_seq(), 1);
}

TEST(KvEventSubscriberTest, TheIdleProbeDeliversTrailingBatchesMissedOnPub) {
  FakeVllmServer server;
  auto subscriber = Subscribe(server, true, absl::Seconds(5), absl::Milliseconds(200));
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(server.WaitForSubscriber());
  server.Publish(0, Payload(0));
  server.Publish(1, Payload(1));
  server.Publish(2, Payload(2), /*send=*/false);
  EXPECT_EQ(Collect(*subscriber, 3), (Strings{"batch 0@0", "batch 1@1", "batch 2@2"}));
  EXPECT_EQ(subscriber->stats().restarts, 0u);
}

TEST(KvEventSubscriberTest, TheIdleProbeOfAnUnchangedServerDeliversNothing) {
  FakeVllmServer server;
  auto subscriber = Subscribe(server, true, absl::Seconds(5), absl::Milliseconds(100));
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(server.WaitForSubscriber());
  for (int seq = 0; seq < 3; ++seq) server.Publish(seq, Payload(seq));
  EXPECT_EQ(Collect(*subscriber, 3).size(), 3u);
  const absl::Time until = absl::Now() + absl::Milliseconds(600);
  while (absl::Now() < until) {
    EXPECT_TRUE(subscriber->Poll(absl::Milliseconds(50)).empty());
  }
  EXPECT_GE(server.replay_requests(), 2);
  EXPECT_EQ(subscriber->stats().restarts, 0u);
  EXPECT_EQ(subscriber->last_seq(), 2);
}

TEST(KvEventSubscriberTest, UndecodableBatchesAreSkippedWithoutAGap) {
  FakeVllmServer server;
  auto subscriber = Subscribe(server);
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(server.WaitForSubscriber());
  server.Publish(0, Payload(0));
  server.Publish(1, "\xc1 not msgpack");
  server.PublishFrames({kTopic, "short"});  // not [topic, seq, payload]
  server.Publish(2, Payload(2));
  EXPECT_EQ(Collect(*subscriber, 2), (Strings{"batch 0@0", "batch 2@2"}));
  EXPECT_EQ(subscriber->stats().undecodable, 2u);
  EXPECT_EQ(subscriber->stats().gaps, 0u);
}

TEST(KvEventSubscriberTest, PollWithNothingToSayReturnsAfterItsTimeout) {
  FakeVllmServer server;
  auto subscriber = Subscribe(server);
  ASSERT_NE(subscriber, nullptr);
  const absl::Time start = absl::Now();
  EXPECT_TRUE(subscriber->Poll(absl::Milliseconds(50)).empty());
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(40));
  EXPECT_LT(took, absl::Seconds(2));
  EXPECT_TRUE(subscriber->Poll(absl::ZeroDuration()).empty());
}

TEST(KvEventSubscriberTest, MalformedEndpointsAreInvalidArguments) {
  KvEventSubscriberOptions options;
  EXPECT_EQ(KvEventSubscriber::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.endpoint = "not-an-endpoint";
  EXPECT_EQ(KvEventSubscriber::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.endpoint = "tcp://127.0.0.1:5557";
  options.replay_endpoint = "tcp://nowhere";
  EXPECT_EQ(KvEventSubscriber::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  // A server that is not up yet is fine: ZMQ connects when it comes.
  options.replay_endpoint = "tcp://127.0.0.1:5558";
  EXPECT_TRUE(KvEventSubscriber::Create(options).ok());
}

}  // namespace
}  // namespace tern::worker::vllm
