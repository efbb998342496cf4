// Engine kind "vllm": one co-located vLLM server (vLLM Neuron on trn2, or
// vLLM on GPUs) behind tern's engine interface, so a tern worker serves
// tern.v1.Worker in front of it exactly as in front of its own engine.
//
//  - Generate: each sequence is one token-level streaming POST to vLLM's
//    /v1/completions (token-id prompt with the resumed tokens appended,
//    return_token_ids, the sampling parameters, seed, ignore_eos,
//    min_tokens, stop_token_ids, logprobs as token ids), read on a thread of
//    its own; its token ids stream back as StreamEvents. The seed in effect
//    is reported as the native engine does (one is chosen when the request
//    has none). The stop token that ended a sequence (vLLM includes it in
//    token_ids) is reported as stop_token_id, not as a token.
//  - Cancel: the HTTP connection is shut down at once; vLLM aborts a request
//    whose client went away.
//  - KV events: the server's ZMQ event stream (worker/vllm/events) re-keyed
//    to tern's chained block hashes, so the router's prefix index works
//    unchanged; a restart of the server clears what it said before.
//  - Load: tern's own accounting of its requests (running once a first
//    token arrived, waiting before), the larger of it and vLLM's /metrics
//    (num_requests_running/waiting), KV usage and block counts from /metrics,
//    cached blocks from the events. The step counter counts progress seen
//    (token chunks and event batches), so a stalled server stops it.
//  - Info: the server's block size (from vllm:cache_config_info, or the
//    configured one, which must agree) and block count.
//
// Against a real vLLM, and vLLM Neuron above all, this is unverified on
// hardware: it is tested against a test double of vLLM's wire protocol.
//
// Thread contract: as ServingEngine. Sinks run on request threads.
#ifndef TERN_WORKER_VLLM_VLLM_ENGINE_H_
#define TERN_WORKER_VLLM_VLLM_ENGINE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/engine/serving_engine.h"
#include "worker/vllm/vllm_client.h"
#include "worker/vllm/vllm_server_spec.h"

namespace tern::worker::vllm {

struct VllmEngineOptions {
  VllmServerSpec server;
  // The name clients use; sent as `model` unless server.model is set.
  std::string served_model_name;
  // Tokens per KV block; 0: the server's (vllm:cache_config_info). When set
  // and the server states another, ConfigError says so.
  int32_t block_size = 0;
  // Reported in Info (the router keeps this many in flight, plus slack).
  int32_t max_num_seqs = 8;
  // Requests in flight beyond max_num_seqs before RESOURCE_EXHAUSTED.
  int32_t max_queue = 256;
  // Longest prompt + completion admitted.
  int32_t max_model_len = 8192;
  // From the checkpoint's config: token ids are checked against the
  // vocabulary; the EOS ids tell a stop token from a last token.
  int32_t vocab_size = 0;
  std::vector<int32_t> eos_token_ids;
  // How often /metrics and /health are read.
  absl::Duration poll_interval = absl::Milliseconds(250);
  absl::Duration connect_timeout = absl::Seconds(5);
  // A stream that stays silent this long fails (a prefill of the longest
  // prompt must fit in it).
  absl::Duration read_timeout = absl::Minutes(10);
  // Told about finished sequences and token gaps; may be null.
  EngineObserver* observer = nullptr;
};

// What the adapter has seen, for logs, metrics and tests.
struct VllmEngineStats {
  uint64_t event_batches = 0;
  uint64_t replays = 0;
  uint64_t replayed_batches = 0;
  uint64_t gaps = 0;
  uint64_t lost = 0;
  uint64_t restarts = 0;
  uint64_t undecodable = 0;
  uint64_t blocks_stored = 0;
  uint64_t blocks_removed = 0;
  uint64_t blocks_skipped = 0;
  int64_t cached_blocks = 0;
};

class VllmEngine final : public ServingEngine {
 public:
  // Checks the options and starts the monitor thread (and the event thread
  // when the server has events=). Does not wait for the server.
  static absl::StatusOr<std::unique_ptr<VllmEngine>> Create(VllmEngineOptions options);
  // Aborts the requests in flight and joins every thread.
  ~VllmEngine() override;

  VllmEngine(const VllmEngine&) = delete;
  VllmEngine& operator=(const VllmEngine&) = delete;

  // FAILED_PRECONDITION once the server's /metrics contradicts the options:
  // another block size than the configured one, or none stated where none
  // is configured. The engine cannot serve such a server correctly.
  absl::Status ConfigError() const;
  // Ready to serve: the server answers /health and its block size is known.
  bool ready() const;
  // The server answered /health with 200 at the last check.
  bool healthy() const;

  absl::StatusOr<std::shared_ptr<SequenceHandle>> Submit(SequenceSpec spec,
                                                         StreamSink sink) override;
  void Drain() override;
  EngineLoad Load() const override;
  std::shared_ptr<StateSubscription> WatchState() override;
  // Kind "vllm".
  EngineInfo Info() const override;

  VllmEngineStats stats() const;
  const VllmEngineOptions& options() const { return options_; }

 private:
  struct Request;

  explicit VllmEngine(VllmEngineOptions options);
  void MonitorLoop();
  void EventLoop();
  void RunRequest(std::shared_ptr<Request> request);
  std::string RequestBody(const Request& request) const;
  EngineLoad LoadLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const VllmEngineOptions options_;
  const HttpTarget target_;
  StatePublisher publisher_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool healthy_ ABSL_GUARDED_BY(mu_) = false;
  int32_t block_size_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t blocks_total_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status config_error_ ABSL_GUARDED_BY(mu_);
  // From the last /metrics read.
  double server_running_ ABSL_GUARDED_BY(mu_) = 0;
  double server_waiting_ ABSL_GUARDED_BY(mu_) = 0;
  double server_kv_usage_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Request>> requests_ ABSL_GUARDED_BY(mu_);
  // Request threads that ended, joined by the next Submit or the destructor.
  std::vector<std::thread> finished_threads_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::thread> threads_ ABSL_GUARDED_BY(mu_);
  VllmEngineStats stats_ ABSL_GUARDED_BY(mu_);
  // Totals for Load.
  uint64_t progress_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t prompt_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t generation_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t prefix_query_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t prefix_hit_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  std::array<uint64_t, 4> finished_ ABSL_GUARDED_BY(mu_) = {};

  std::thread monitor_;
  std::thread events_;
};

}  // namespace tern::worker::vllm

#endif  // TERN_WORKER_VLLM_VLLM_ENGINE_H_
