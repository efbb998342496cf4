// vLLM's KV-cache events as they arrive on the wire (the reference's
// vllm-engine-protocol, section 2): a msgpack KVEventBatch {ts, events,
// data_parallel_rank}, in either encoding vLLM has used:
//  - older releases: msgspec `array_like` positional arrays, each event an
//    array whose first element is its tag ("BlockStored", ...);
//  - newer releases: maps, each event a map whose "type" is the tag, fields
//    with defaults omitted when unset.
// Decoding accepts both, missing trailing fields and appended ones; an
// unknown event tag decodes as kUnknown (and is skipped by consumers), so a
// newer vLLM with more event kinds does not stop the stream.
//
// vLLM's block hashes are opaque ids here: an int (low 64 bits of the
// digest, the default) or raw digest bytes; only equality matters.
//
// Pure functions on plain values; thread-safe.
#ifndef TERN_WORKER_VLLM_EVENTS_VLLM_KV_EVENTS_H_
#define TERN_WORKER_VLLM_EVENTS_VLLM_KV_EVENTS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tern::worker::vllm {

// One vLLM block hash, as an opaque key: "i" + the 8 bytes of the integer
// (two's complement, big-endian) for an int, "b" + the bytes for a digest.
using VllmBlockId = std::string;

VllmBlockId VllmBlockIdFromInt(int64_t value);
VllmBlockId VllmBlockIdFromBytes(std::string_view bytes);

enum class VllmEventKind { kBlockStored, kBlockRemoved, kAllBlocksCleared, kUnknown };

struct VllmEvent {
  VllmEventKind kind = VllmEventKind::kUnknown;
  // The tag as sent (for kUnknown, to name it in logs).
  std::string tag;
  // kBlockStored / kBlockRemoved.
  std::vector<VllmBlockId> block_hashes;
  // kBlockStored: the parent of block_hashes[0], absent for a prompt's first block.
  std::optional<VllmBlockId> parent_block_hash;
  // kBlockStored: the tokens of the stored blocks, block_size per block.
  std::vector<int32_t> token_ids;
  int32_t block_size = 0;
  // "GPU" unless stated (vLLM's default medium).
  std::string medium;
  std::optional<std::string> lora_name;
  std::optional<int64_t> lora_id;
  // Set when any block carries extra keys (multimodal inputs, LoRA,
  // cache_salt): its hash then covers more than its tokens.
  bool has_extra_keys = false;
  int32_t group_idx = 0;
};

struct VllmEventBatch {
  double ts = 0;
  std::vector<VllmEvent> events;
  std::optional<int32_t> data_parallel_rank;
};

// Decodes one PUB/replay payload. INVALID_ARGUMENT naming what is wrong for
// bytes that are not a batch in either encoding (not msgpack, wrong types).
absl::StatusOr<VllmEventBatch> DecodeVllmEventBatch(std::string_view payload);

}  // namespace tern::worker::vllm

#endif  // TERN_WORKER_VLLM_EVENTS_VLLM_KV_EVENTS_H_
