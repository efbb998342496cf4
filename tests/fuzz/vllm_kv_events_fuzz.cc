// Fuzzes the decoder of vLLM's KV event batches (msgpack from a vLLM server's
// PUB or replay socket) and the re-keying of what it accepts. Properties: a
// payload either decodes or is InvalidArgument, never a crash; applying an
// accepted batch's events to a BlockRekeyer keeps its snapshot consistent
// with its block count (every known block appears once in the snapshot).
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "tests/fuzz/fuzz_check.h"
#include "worker/vllm/events/block_rekeyer.h"
#include "worker/vllm/events/vllm_kv_events.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using tern::worker::vllm::BlockRekeyer;
  const std::string_view payload(reinterpret_cast<const char*>(data), size);
  const auto batch = tern::worker::vllm::DecodeVllmEventBatch(payload);
  if (!batch.ok()) {
    TERN_FUZZ_CHECK(batch.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  // Small blocks, so short token lists still make whole blocks.
  for (int32_t block_size : {1, 4}) {
    BlockRekeyer rekeyer(block_size);
    std::vector<tern::worker::KvEvent> events;
    for (const auto& event : batch->events) rekeyer.Apply(event, &events);
    absl::flat_hash_set<uint64_t> seen;
    for (const tern::worker::KvEvent& stored : rekeyer.Snapshot()) {
      TERN_FUZZ_CHECK(stored.kind == tern::worker::KvEventKind::kBlockStored);
      for (uint64_t hash : stored.block_hashes) TERN_FUZZ_CHECK(seen.insert(hash).second);
    }
    TERN_FUZZ_CHECK(seen.size() == rekeyer.blocks());
  }
  return 0;
}
