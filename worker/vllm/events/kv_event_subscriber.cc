#include "worker/vllm/events/kv_event_subscriber.h"

#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <iterator>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace tern::worker::vllm {
namespace {

// vLLM's PUB high-water mark: a worker busy elsewhere for a while should not
// drop what vLLM was willing to send. The replay socket takes as much, since
// vLLM's ROUTER drops replies beyond its own mark when the reader lags.
constexpr int kReceiveHwm = 100000;
// Bounds the work one Poll does before handing back to its caller.
constexpr int kMaxMessagesPerPoll = 1024;
// The replay end marker: -1 as signed 8 bytes.
constexpr uint64_t kEndSeq = std::numeric_limits<uint64_t>::max();

// An 8-byte big-endian sequence number; nullopt for any other frame.
std::optional<uint64_t> ReadSeq(const zmq::message_t& frame) {
  if (frame.size() != 8) return std::nullopt;
  const auto* bytes = static_cast<const unsigned char*>(frame.data());
  uint64_t seq = 0;
  for (int i = 0; i < 8; ++i) seq = (seq << 8) | bytes[i];
  return seq;
}

std::string_view View(const zmq::message_t& frame) {
  return {static_cast<const char*>(frame.data()), frame.size()};
}

long PollMillis(absl::Duration timeout) {
  if (timeout <= absl::ZeroDuration()) return 0;
  const int64_t ms = absl::ToInt64Milliseconds(absl::Ceil(timeout, absl::Milliseconds(1)));
  return static_cast<long>(std::min<int64_t>(ms, std::numeric_limits<int32_t>::max()));
}

// True when `socket` has a message within `timeout`; false on timeout and on
// an interrupted wait (the caller's loop comes back).
bool WaitReadable(zmq::socket_t& socket, absl::Duration timeout) {
  zmq_pollitem_t item = {socket.handle(), 0, ZMQ_POLLIN, 0};
  return zmq_poll(&item, 1, PollMillis(timeout)) > 0 && (item.revents & ZMQ_POLLIN) != 0;
}

// One whole multipart message if one is waiting.
bool TryReceive(zmq::socket_t& socket, std::vector<zmq::message_t>* frames) {
  frames->clear();
  try {
    return zmq::recv_multipart(socket, std::back_inserter(*frames), zmq::recv_flags::dontwait)
        .has_value();
  } catch (const zmq::error_t& e) {
    TERN_LOG(Warning) << "kv events: receive failed: " << e.what();
    return false;
  }
}

absl::Status SocketError(const std::string& endpoint, const zmq::error_t& e) {
  const std::string message =
      absl::StrCat("kv events: cannot connect to \"", endpoint, "\": ", e.what());
  if (e.num() == EINVAL || e.num() == EPROTONOSUPPORT || e.num() == ENOCOMPATPROTO) {
    return absl::InvalidArgumentError(message);
  }
  return absl::InternalError(message);
}

}  // namespace

struct KvEventSubscriber::State {
  explicit State(KvEventSubscriberOptions o) : options(std::move(o)) {}

  // A fresh DEALER on the replay endpoint. Each replay gets its own, so
  // replies a timed-out replay left in flight never reach the next one.
  void ConnectReplay() {
    replay = zmq::socket_t(context, zmq::socket_type::dealer);
    replay.set(zmq::sockopt::linger, 0);
    replay.set(zmq::sockopt::rcvhwm, kReceiveHwm);
    replay.connect(options.replay_endpoint);
  }

  void Poll(absl::Duration timeout, std::vector<KvEventDelivery>* out);
  void HandleBatch(int64_t seq, std::string_view payload, std::vector<KvEventDelivery>* out);
  // Fetches batches [from, to) from the replay socket into *batches; false
  // when they cannot all be had.
  bool Replay(int64_t from, int64_t to, std::vector<std::pair<int64_t, std::string>>* batches);
  // Everything the replay socket holds from `from` on, up to its end
  // marker; false (and nothing) without a whole answer within `timeout`.
  bool Fetch(int64_t from, absl::Duration timeout,
             std::vector<std::pair<int64_t, std::string>>* batches);
  // The idle check (see KvEventSubscriberOptions::probe_interval).
  void Probe(std::vector<KvEventDelivery>* out);
  void Deliver(int64_t seq, std::string_view payload, bool replayed,
               std::vector<KvEventDelivery>* out);

  const KvEventSubscriberOptions options;
  // Declared first so the sockets close before it terminates.
  zmq::context_t context;
  zmq::socket_t sub;
  // Not connected while no replay endpoint is configured.
  zmq::socket_t replay;
  KvEventSubscriberStats stats;
  int64_t last_seq = -1;
  // The payload of batch last_seq, to tell the same process from a new one.
  std::string last_payload;
  // The last batch delivered or probe made.
  absl::Time last_probe = absl::Now();
};

absl::StatusOr<std::unique_ptr<KvEventSubscriber>> KvEventSubscriber::Create(
    KvEventSubscriberOptions options) {
  if (options.endpoint.empty()) return absl::InvalidArgumentError("kv events: no endpoint");
  auto state = std::make_unique<State>(std::move(options));
  try {
    state->sub = zmq::socket_t(state->context, zmq::socket_type::sub);
    state->sub.set(zmq::sockopt::linger, 0);
    state->sub.set(zmq::sockopt::rcvhwm, kReceiveHwm);
    state->sub.set(zmq::sockopt::subscribe, state->options.topic);
    state->sub.connect(state->options.endpoint);
  } catch (const zmq::error_t& e) {
    return SocketError(state->options.endpoint, e);
  }
  if (!state->options.replay_endpoint.empty()) {
    try {
      state->ConnectReplay();
    } catch (const zmq::error_t& e) {
      return SocketError(state->options.replay_endpoint, e);
    }
  }
  return std::unique_ptr<KvEventSubscriber>(new KvEventSubscriber(std::move(state)));
}

KvEventSubscriber::KvEventSubscriber(std::unique_ptr<State> state) : state_(std::move(state)) {}

KvEventSubscriber::~KvEventSubscriber() = default;

std::vector<KvEventDelivery> KvEventSubscriber::Poll(absl::Duration timeout) {
  std::vector<KvEventDelivery> out;
  state_->Poll(timeout, &out);
  return out;
}

const KvEventSubscriberStats& KvEventSubscriber::stats() const { return state_->stats; }

int64_t KvEventSubscriber::last_seq() const { return state_->last_seq; }

void KvEventSubscriber::State::Poll(absl::Duration timeout, std::vector<KvEventDelivery>* out) {
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<zmq::message_t> frames;
  for (int i = 0; i < kMaxMessagesPerPoll; ++i) {
    // Waits only while nothing is due yet; then takes what is already queued.
    const absl::Duration wait = out->empty() ? deadline - absl::Now() : absl::ZeroDuration();
    if (!WaitReadable(sub, wait)) {
      if (out->empty() && last_seq >= 0 && !options.replay_endpoint.empty() &&
          options.probe_interval > absl::ZeroDuration() &&
          absl::Now() - last_probe >= options.probe_interval) {
        Probe(out);
      }
      if (!out->empty() || absl::Now() >= deadline) return;
      continue;
    }
    if (!TryReceive(sub, &frames)) continue;
    std::optional<uint64_t> seq;
    if (frames.size() == 3) seq = ReadSeq(frames[1]);
    if (!seq.has_value() || *seq > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      ++stats.undecodable;
      TERN_LOG(Warning) << "kv events: dropped a message that is not [topic, seq, payload]";
      continue;
    }
    HandleBatch(static_cast<int64_t>(*seq), View(frames[2]), out);
  }
}

void KvEventSubscriber::State::HandleBatch(int64_t seq, std::string_view payload,
                                           std::vector<KvEventDelivery>* out) {
  if (last_seq >= 0 && seq <= last_seq) {
    // One vLLM process numbers its batches up from 0 and PUB never repeats
    // one, so only a new process goes back.
    TERN_LOG(Info) << "kv events: sequence went from " << last_seq << " to " << seq
                   << ": vLLM restarted";
    out->push_back({KvEventDelivery::Kind::kRestarted, static_cast<uint64_t>(seq), {}});
    ++stats.restarts;
    last_seq = -1;
  }
  if (seq > last_seq + 1) {
    ++stats.gaps;
    std::vector<std::pair<int64_t, std::string>> missing;
    if (Replay(last_seq + 1, seq, &missing)) {
      for (const auto& [replayed_seq, replayed_payload] : missing) {
        Deliver(replayed_seq, replayed_payload, /*replayed=*/true, out);
      }
    } else {
      TERN_LOG(Warning) << "kv events: batches " << last_seq + 1 << " to " << seq - 1
                        << " are lost";
      out->push_back({KvEventDelivery::Kind::kLost, static_cast<uint64_t>(seq), {}});
      ++stats.lost;
    }
  }
  Deliver(seq, payload, /*replayed=*/false, out);
}

bool KvEventSubscriber::State::Replay(int64_t from, int64_t to,
                                      std::vector<std::pair<int64_t, std::string>>* batches) {
  std::vector<std::pair<int64_t, std::string>> held;
  if (!Fetch(from, options.replay_timeout, &held)) return false;
  // The server answers from its oldest buffered batch at or after `from`;
  // every one of [from, to) must be there, in order.
  if (static_cast<int64_t>(held.size()) < to - from) return false;
  for (int64_t seq = from; seq < to; ++seq) {
    if (held[seq - from].first != seq) return false;
  }
  held.resize(to - from);
  *batches = std::move(held);
  return true;
}

bool KvEventSubscriber::State::Fetch(int64_t from, absl::Duration timeout,
                                     std::vector<std::pair<int64_t, std::string>>* batches) {
  batches->clear();
  if (options.replay_endpoint.empty()) return false;
  try {
    if (!replay) ConnectReplay();
  } catch (const zmq::error_t& e) {
    TERN_LOG(Warning) << "kv events: replay socket: " << e.what();
    return false;
  }
  ++stats.replays;
  char start[8];
  for (int i = 0; i < 8; ++i)
    start[i] = static_cast<char>(static_cast<uint64_t>(from) >> (56 - 8 * i));
  bool complete = false;
  try {
    // The empty frame stands in for the REQ envelope vLLM's ROUTER expects.
    const std::optional<size_t> sent =
        replay.send(zmq::message_t(), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    if (sent.has_value() &&
        replay.send(zmq::buffer(start, sizeof(start)), zmq::send_flags::dontwait).has_value()) {
      // Replies come in sequence order, each [empty, seq, payload] (a server
      // that drops the delimiter is taken too), then the end marker.
      const absl::Time deadline = absl::Now() + timeout;
      std::vector<zmq::message_t> frames;
      while (absl::Now() < deadline) {
        if (!WaitReadable(replay, deadline - absl::Now()) || !TryReceive(replay, &frames)) continue;
        size_t first = 0;
        if (frames.size() == 3 && frames[0].size() == 0) first = 1;
        if (frames.size() - first != 2) continue;
        const std::optional<uint64_t> raw = ReadSeq(frames[first]);
        if (!raw.has_value()) continue;
        if (*raw == kEndSeq) {
          complete = true;
          break;
        }
        if (*raw > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) continue;
        const int64_t seq = static_cast<int64_t>(*raw);
        // Before the request, or out of order: not part of this answer.
        if (seq < from || (!batches->empty() && seq <= batches->back().first)) continue;
        batches->emplace_back(seq, std::string(View(frames[first + 1])));
      }
    }
  } catch (const zmq::error_t& e) {
    TERN_LOG(Warning) << "kv events: replay failed: " << e.what();
  }
  // Whatever is still in flight goes with the old socket.
  try {
    ConnectReplay();
  } catch (const zmq::error_t&) {
    replay = zmq::socket_t();  // the next replay connects again
  }
  if (!complete) batches->clear();
  return complete;
}

void KvEventSubscriber::State::Probe(std::vector<KvEventDelivery>* out) {
  last_probe = absl::Now();
  std::vector<std::pair<int64_t, std::string>> held;
  // No answer: the server is down or busy; the next probe tries again.
  if (!Fetch(last_seq, options.probe_timeout, &held)) return;
  if (!held.empty() && held[0].first == last_seq && held[0].second == last_payload) {
    // The same process: anything after the last batch was missed on PUB.
    for (size_t i = 1; i < held.size(); ++i) {
      if (held[i].first != last_seq + 1) break;
      ++stats.gaps;
      Deliver(held[i].first, held[i].second, /*replayed=*/true, out);
    }
    return;
  }
  // The server no longer has our last batch as we saw it: a new process
  // whose batches were all lost before this socket reconnected.
  TERN_LOG(Info) << "kv events: the server no longer holds batch " << last_seq
                 << " as it was sent: vLLM restarted";
  out->push_back({KvEventDelivery::Kind::kRestarted, 0, {}});
  ++stats.restarts;
  last_seq = -1;
  last_payload.clear();
  if (!Fetch(0, options.replay_timeout, &held)) return;
  if (!held.empty() && held[0].first != 0) {
    out->push_back({KvEventDelivery::Kind::kLost, static_cast<uint64_t>(held[0].first), {}});
    ++stats.lost;
  }
  for (const auto& [seq, payload] : held) Deliver(seq, payload, /*replayed=*/true, out);
}

void KvEventSubscriber::State::Deliver(int64_t seq, std::string_view payload, bool replayed,
                                       std::vector<KvEventDelivery>* out) {
  last_seq = seq;
  last_payload.assign(payload.data(), payload.size());
  last_probe = absl::Now();
  absl::StatusOr<VllmEventBatch> batch = DecodeVllmEventBatch(payload);
  if (!batch.ok()) {
    // A payload this build cannot read is skipped, not a reason to drop the
    // whole view: its blocks will be missing, or linger until evicted.
    ++stats.undecodable;
    if (stats.undecodable == 1 || stats.undecodable % 1000 == 0) {
      TERN_LOG(Warning) << "kv events: skipped batch " << seq << " (" << stats.undecodable
                        << " so far): " << batch.status().message();
    }
    return;
  }
  out->push_back({KvEventDelivery::Kind::kBatch, static_cast<uint64_t>(seq), *std::move(batch)});
  ++stats.batches;
  if (replayed) ++stats.replayed_batches;
}

}  // namespace tern::worker::vllm
