#include "worker/vllm/events/vllm_kv_events.h"

#include <cstddef>
#include <exception>
#include <limits>
#include <msgpack.hpp>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"

namespace tern::worker::vllm {
namespace {

// vLLM's events nest four levels at most (batch, events, event, extra_keys
// entry, its tuple); the bound only keeps hostile nesting from costing much.
constexpr std::size_t kMaxDepth = 64;
constexpr char kMediumGpu[] = "GPU";

using Object = msgpack::object;

bool IsNil(const Object& o) { return o.type == msgpack::type::NIL; }

absl::string_view StrOf(const Object& o) { return {o.via.str.ptr, o.via.str.size}; }

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("vLLM event batch: ", where, ": ", what));
}

// A msgpack integer within [lo, hi].
absl::StatusOr<int64_t> ReadInt(const Object& o, absl::string_view where, int64_t lo, int64_t hi) {
  if (o.type == msgpack::type::POSITIVE_INTEGER) {
    if (o.via.u64 > static_cast<uint64_t>(hi)) return Invalid(where, "integer out of range");
    return static_cast<int64_t>(o.via.u64);
  }
  if (o.type == msgpack::type::NEGATIVE_INTEGER) {
    if (o.via.i64 < lo) return Invalid(where, "integer out of range");
    return o.via.i64;
  }
  return Invalid(where, "not an integer");
}

absl::StatusOr<int32_t> ReadInt32(const Object& o, absl::string_view where) {
  TERN_ASSIGN_OR_RETURN(int64_t value, ReadInt(o, where, std::numeric_limits<int32_t>::min(),
                                               std::numeric_limits<int32_t>::max()));
  return static_cast<int32_t>(value);
}

absl::StatusOr<std::string> ReadStr(const Object& o, absl::string_view where) {
  if (o.type != msgpack::type::STR) return Invalid(where, "not a string");
  return std::string(StrOf(o));
}

absl::StatusOr<VllmBlockId> ReadBlockId(const Object& o, absl::string_view where) {
  switch (o.type) {
    case msgpack::type::POSITIVE_INTEGER:
      // The low 64 bits of a digest may pass 2^63; only the bits matter.
      return VllmBlockIdFromInt(static_cast<int64_t>(o.via.u64));
    case msgpack::type::NEGATIVE_INTEGER:
      return VllmBlockIdFromInt(o.via.i64);
    case msgpack::type::BIN:
      return VllmBlockIdFromBytes({o.via.bin.ptr, o.via.bin.size});
    case msgpack::type::STR:
      return VllmBlockIdFromBytes(std::string_view(o.via.str.ptr, o.via.str.size));
    default:
      return Invalid(where, "block hash is neither an integer nor bytes");
  }
}

absl::StatusOr<std::vector<VllmBlockId>> ReadBlockIds(const Object& o, absl::string_view where) {
  if (o.type != msgpack::type::ARRAY) return Invalid(where, "not an array");
  std::vector<VllmBlockId> ids;
  ids.reserve(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    TERN_ASSIGN_OR_RETURN(VllmBlockId id,
                          ReadBlockId(o.via.array.ptr[i], absl::StrCat(where, "[", i, "]")));
    ids.push_back(std::move(id));
  }
  return ids;
}

absl::StatusOr<std::vector<int32_t>> ReadTokenIds(const Object& o, absl::string_view where) {
  if (o.type != msgpack::type::ARRAY) return Invalid(where, "not an array");
  std::vector<int32_t> tokens;
  tokens.reserve(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    const Object& token = o.via.array.ptr[i];
    // Checked inline: a prompt's worth of tokens should not build a message each.
    if (token.type == msgpack::type::POSITIVE_INTEGER &&
        token.via.u64 <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
      tokens.push_back(static_cast<int32_t>(token.via.u64));
    } else {
      return Invalid(absl::StrCat(where, "[", i, "]"), "not a token id");
    }
  }
  return tokens;
}

// One event field, by name (map events and positional events share this).
absl::Status ReadField(absl::string_view name, const Object& value, absl::string_view where,
                       VllmEvent* event) {
  // msgspec writes None as nil: the field keeps its default, as when omitted
  // (the medium's is vLLM's own, the GPU).
  if (IsNil(value)) return absl::OkStatus();
  const std::string field_where = absl::StrCat(where, ".", name);
  if (name == "block_hashes") {
    TERN_ASSIGN_OR_RETURN(event->block_hashes, ReadBlockIds(value, field_where));
  } else if (name == "parent_block_hash") {
    TERN_ASSIGN_OR_RETURN(event->parent_block_hash, ReadBlockId(value, field_where));
  } else if (name == "token_ids") {
    TERN_ASSIGN_OR_RETURN(event->token_ids, ReadTokenIds(value, field_where));
  } else if (name == "block_size") {
    TERN_ASSIGN_OR_RETURN(event->block_size, ReadInt32(value, field_where));
  } else if (name == "lora_id") {
    TERN_ASSIGN_OR_RETURN(event->lora_id,
                          ReadInt(value, field_where, std::numeric_limits<int64_t>::min(),
                                  std::numeric_limits<int64_t>::max()));
  } else if (name == "medium") {
    TERN_ASSIGN_OR_RETURN(event->medium, ReadStr(value, field_where));
  } else if (name == "lora_name") {
    TERN_ASSIGN_OR_RETURN(event->lora_name, ReadStr(value, field_where));
  } else if (name == "extra_keys") {
    // One entry per block, nil when the block's hash covers only tokens.
    if (value.type != msgpack::type::ARRAY) return Invalid(field_where, "neither nil nor an array");
    event->has_extra_keys = false;
    for (uint32_t i = 0; i < value.via.array.size; ++i) {
      if (!IsNil(value.via.array.ptr[i])) event->has_extra_keys = true;
    }
  } else if (name == "group_idx") {
    TERN_ASSIGN_OR_RETURN(event->group_idx, ReadInt32(value, field_where));
  }
  // Other fields (kv_cache_spec_*, and any a later vLLM adds) do not matter here.
  return absl::OkStatus();
}

// Positional field names after the tag, per event kind (vLLM's declaration order).
const std::vector<absl::string_view>& PositionalFields(VllmEventKind kind) {
  static const auto* const kStored = new std::vector<absl::string_view>{
      "block_hashes", "parent_block_hash", "token_ids",  "block_size", "lora_id",
      "medium",       "lora_name",         "extra_keys", "group_idx"};
  static const auto* const kRemoved =
      new std::vector<absl::string_view>{"block_hashes", "medium", "group_idx"};
  static const auto* const kNone = new std::vector<absl::string_view>{};
  switch (kind) {
    case VllmEventKind::kBlockStored:
      return *kStored;
    case VllmEventKind::kBlockRemoved:
      return *kRemoved;
    default:
      return *kNone;
  }
}

VllmEventKind KindOfTag(absl::string_view tag) {
  if (tag == "BlockStored") return VllmEventKind::kBlockStored;
  if (tag == "BlockRemoved") return VllmEventKind::kBlockRemoved;
  if (tag == "AllBlocksCleared") return VllmEventKind::kAllBlocksCleared;
  return VllmEventKind::kUnknown;
}

absl::StatusOr<VllmEvent> ReadEvent(const Object& o, absl::string_view where) {
  VllmEvent event;
  event.medium = kMediumGpu;
  if (o.type == msgpack::type::ARRAY) {
    if (o.via.array.size == 0) return Invalid(where, "event array has no tag");
    const Object& tag = o.via.array.ptr[0];
    if (tag.type != msgpack::type::STR) return Invalid(where, "event tag is not a string");
    event.tag = std::string(StrOf(tag));
    event.kind = KindOfTag(event.tag);
    const std::vector<absl::string_view>& fields = PositionalFields(event.kind);
    for (uint32_t i = 1; i < o.via.array.size && i - 1 < fields.size(); ++i) {
      TERN_RETURN_IF_ERROR(ReadField(fields[i - 1], o.via.array.ptr[i], where, &event));
    }
    return event;
  }
  if (o.type == msgpack::type::MAP) {
    const Object* tag = nullptr;
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      const Object& key = o.via.map.ptr[i].key;
      if (key.type == msgpack::type::STR && StrOf(key) == "type") tag = &o.via.map.ptr[i].val;
    }
    if (tag == nullptr) return Invalid(where, "event map has no \"type\"");
    if (tag->type != msgpack::type::STR) return Invalid(where, "event type is not a string");
    event.tag = std::string(StrOf(*tag));
    event.kind = KindOfTag(event.tag);
    if (event.kind == VllmEventKind::kUnknown) return event;
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      const Object& key = o.via.map.ptr[i].key;
      if (key.type != msgpack::type::STR) continue;
      TERN_RETURN_IF_ERROR(ReadField(StrOf(key), o.via.map.ptr[i].val, where, &event));
    }
    return event;
  }
  return Invalid(where, "event is neither an array nor a map");
}

absl::Status ReadEvents(const Object& o, VllmEventBatch* batch) {
  if (o.type != msgpack::type::ARRAY) return Invalid("events", "not an array");
  batch->events.reserve(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    TERN_ASSIGN_OR_RETURN(VllmEvent event,
                          ReadEvent(o.via.array.ptr[i], absl::StrCat("events[", i, "]")));
    batch->events.push_back(std::move(event));
  }
  return absl::OkStatus();
}

absl::Status ReadTs(const Object& o, VllmEventBatch* batch) {
  switch (o.type) {
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64:
      batch->ts = o.via.f64;
      return absl::OkStatus();
    case msgpack::type::POSITIVE_INTEGER:
      batch->ts = static_cast<double>(o.via.u64);
      return absl::OkStatus();
    case msgpack::type::NEGATIVE_INTEGER:
      batch->ts = static_cast<double>(o.via.i64);
      return absl::OkStatus();
    default:
      return Invalid("ts", "not a number");
  }
}

absl::Status ReadRank(const Object& o, VllmEventBatch* batch) {
  if (IsNil(o)) {
    batch->data_parallel_rank.reset();
    return absl::OkStatus();
  }
  TERN_ASSIGN_OR_RETURN(batch->data_parallel_rank, ReadInt32(o, "data_parallel_rank"));
  return absl::OkStatus();
}

absl::StatusOr<VllmEventBatch> ReadBatch(const Object& o) {
  VllmEventBatch batch;
  if (o.type == msgpack::type::ARRAY) {
    const uint32_t n = o.via.array.size;
    if (n > 0) TERN_RETURN_IF_ERROR(ReadTs(o.via.array.ptr[0], &batch));
    if (n > 1) TERN_RETURN_IF_ERROR(ReadEvents(o.via.array.ptr[1], &batch));
    if (n > 2) TERN_RETURN_IF_ERROR(ReadRank(o.via.array.ptr[2], &batch));
    return batch;
  }
  if (o.type == msgpack::type::MAP) {
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      const Object& key = o.via.map.ptr[i].key;
      if (key.type != msgpack::type::STR) continue;
      const absl::string_view name = StrOf(key);
      const Object& value = o.via.map.ptr[i].val;
      if (name == "ts") {
        TERN_RETURN_IF_ERROR(ReadTs(value, &batch));
      } else if (name == "events") {
        batch.events.clear();
        TERN_RETURN_IF_ERROR(ReadEvents(value, &batch));
      } else if (name == "data_parallel_rank") {
        TERN_RETURN_IF_ERROR(ReadRank(value, &batch));
      }
    }
    return batch;
  }
  return Invalid("batch", "neither an array nor a map");
}

std::string TaggedId(char tag, const char* bytes, std::size_t size) {
  std::string id;
  id.reserve(size + 1);
  id.push_back(tag);
  id.append(bytes, size);
  return id;
}

}  // namespace

VllmBlockId VllmBlockIdFromInt(int64_t value) {
  const uint64_t bits = static_cast<uint64_t>(value);
  char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(bits >> (56 - 8 * i));
  return TaggedId('i', bytes, sizeof(bytes));
}

VllmBlockId VllmBlockIdFromBytes(std::string_view bytes) {
  return TaggedId('b', bytes.data(), bytes.size());
}

absl::StatusOr<VllmEventBatch> DecodeVllmEventBatch(std::string_view payload) {
  if (payload.empty()) return Invalid("payload", "empty");
  msgpack::object_handle handle;
  std::size_t offset = 0;
  try {
    // The parser allocates a container's elements from its header before
    // reading them; an element takes at least a byte, so a header claiming
    // more than the payload holds is refused before it can allocate.
    const std::size_t n = payload.size();
    const msgpack::unpack_limit limit(n, n / 2, n, n, n, kMaxDepth);
    handle = msgpack::unpack(payload.data(), payload.size(), offset, nullptr, nullptr, limit);
  } catch (const std::exception& e) {
    return Invalid("payload", absl::StrCat("not msgpack (", e.what(), ")"));
  }
  if (offset != payload.size()) {
    return Invalid("payload", absl::StrCat(payload.size() - offset, " bytes after the batch"));
  }
  return ReadBatch(handle.get());
}

}  // namespace tern::worker::vllm
