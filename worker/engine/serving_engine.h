// What the Worker service needs of an engine, whichever kind runs behind it:
// tern's own CPU engine ("native", worker/engine/engine.h) or a co-located
// vLLM server ("vllm", worker/vllm/vllm_engine.h). Both take plain
// SequenceSpecs, stream StreamEvents to a sink, report their load and feed
// StateSubscriptions with KV events in tern's block hashes, so the router
// treats every kind alike.
//
// Thread contract: every method may be called from any thread; sinks are
// called on the engine's own threads and must not block.
#ifndef TERN_WORKER_ENGINE_SERVING_ENGINE_H_
#define TERN_WORKER_ENGINE_SERVING_ENGINE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/sequence.h"
#include "worker/engine/state_publisher.h"

namespace tern::worker {

// What Info reports; fixed once the engine is created.
struct EngineInfo {
  // "native" or "vllm".
  std::string kind;
  int32_t max_model_len = 0;
  int32_t max_num_seqs = 0;
  // The tokens per block of the engine's KV events' hashes: the router
  // hashes prompts for this worker with it.
  int32_t kv_block_size = 0;
  int64_t kv_blocks_total = 0;
  bool enable_prefix_caching = true;
  int32_t vocab_size = 0;
  std::vector<int32_t> eos_token_ids;
};

class ServingEngine {
 public:
  virtual ~ServingEngine() = default;

  // Queues a sequence; its events reach `sink`. INVALID_ARGUMENT for a spec
  // the engine cannot honour, RESOURCE_EXHAUSTED when its queue is full,
  // UNAVAILABLE once draining or when the engine cannot serve.
  virtual absl::StatusOr<std::shared_ptr<SequenceHandle>> Submit(SequenceSpec spec,
                                                                 StreamSink sink) = 0;
  // Stops taking new sequences; running and queued ones finish.
  virtual void Drain() = 0;
  virtual EngineLoad Load() const = 0;
  // A new subscription to load and KV events (see StateSubscription).
  virtual std::shared_ptr<StateSubscription> WatchState() = 0;
  virtual EngineInfo Info() const = 0;
};

}  // namespace tern::worker

#endif  // TERN_WORKER_ENGINE_SERVING_ENGINE_H_
