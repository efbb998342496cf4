// Follows one vLLM server's KV-cache event stream: a ZMQ SUB socket on its
// PUB endpoint (frames [topic, seq as 8 bytes big-endian, msgpack payload])
// and, when configured, its replay ROUTER socket (request [empty, start seq];
// replies [seq, payload] for each buffered batch from there, then [-1, ""]).
//
// Sequence numbers are per vLLM process, from 0:
//  - the first batch seen with seq > 0: the server ran before we listened;
//    replay from 0 is asked for, so blocks cached before are known;
//  - a gap (seq > last + 1): replay of the missing batches is asked for;
//    if the replay socket cannot supply them all (none configured, no answer
//    within the replay timeout, or the buffer no longer holds them) the
//    batches are lost for good and kLost is delivered, after which the
//    stream continues from the batch at hand;
//  - seq not above the last one (back at 0 after a restart): kRestarted is
//    delivered, then the batch;
//  - no batch for probe_interval: the replay socket is asked whether the
//    server still holds the last batch as it was (see the option), which
//    catches a restart whose batches all went out before we reconnected.
// Duplicates delivered by replay and PUB are dropped, so batches come out
// once each, in sequence order.
//
// Thread contract: not thread-safe; Poll is called from one thread (the
// vllm engine's state thread), which owns the sockets.
#ifndef TERN_WORKER_VLLM_EVENTS_KV_EVENT_SUBSCRIBER_H_
#define TERN_WORKER_VLLM_EVENTS_KV_EVENT_SUBSCRIBER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/vllm/events/vllm_kv_events.h"

namespace tern::worker::vllm {

struct KvEventSubscriberOptions {
  // vLLM's `endpoint` as the worker reaches it, e.g. "tcp://127.0.0.1:5557".
  std::string endpoint;
  // vLLM's `replay_endpoint`; empty: no replay (a gap is kLost at once).
  std::string replay_endpoint;
  // Subscription prefix; "" takes every topic.
  std::string topic;
  // How long a replay may take before the missing batches count as lost.
  absl::Duration replay_timeout = absl::Seconds(2);
  // After this long without a batch, the replay socket is asked from the
  // last batch seen: the same payload back means nothing was missed (later
  // batches found there are delivered); anything else means a new process
  // whose first batches went out before the SUB socket reconnected (ZMQ's
  // slow joiner), i.e. kRestarted and a replay from 0. Zero: never.
  absl::Duration probe_interval = absl::Seconds(1);
  // How long a probe waits for the answer; none: tried again later.
  absl::Duration probe_timeout = absl::Milliseconds(300);
};

struct KvEventDelivery {
  enum class Kind {
    kBatch,      // batch holds the decoded batch numbered seq
    kRestarted,  // the server restarted: forget everything it said before
    kLost,       // batches were lost for good: forget everything
  };
  Kind kind = Kind::kBatch;
  uint64_t seq = 0;
  VllmEventBatch batch;
};

struct KvEventSubscriberStats {
  uint64_t batches = 0;
  uint64_t replayed_batches = 0;
  uint64_t replays = 0;   // replay requests sent
  uint64_t gaps = 0;      // gaps seen (recovered or not)
  uint64_t lost = 0;      // kLost deliveries
  uint64_t restarts = 0;  // kRestarted deliveries
  // Payloads DecodeVllmEventBatch rejected, and PUB messages that are not
  // [topic, seq, payload] (skipped).
  uint64_t undecodable = 0;
};

class KvEventSubscriber {
 public:
  // Creates the sockets and connects (ZMQ connects lazily: a server that is
  // not up yet is fine). INVALID_ARGUMENT for a malformed endpoint.
  static absl::StatusOr<std::unique_ptr<KvEventSubscriber>> Create(
      KvEventSubscriberOptions options);
  ~KvEventSubscriber();

  // Waits up to `timeout` for batches and returns what is due, in order
  // (empty on timeout). A replay it needs is done inside the call.
  std::vector<KvEventDelivery> Poll(absl::Duration timeout);

  const KvEventSubscriberStats& stats() const;
  // The last sequence number delivered; -1 before the first.
  int64_t last_seq() const;

 private:
  struct State;
  explicit KvEventSubscriber(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace tern::worker::vllm

#endif  // TERN_WORKER_VLLM_EVENTS_KV_EVENT_SUBSCRIBER_H_
