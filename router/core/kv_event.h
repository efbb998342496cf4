// A KV-cache event as the router core sees it: a plain value, converted from
// tern.v1.KvEvent once, where a worker's state stream is read (router/fleet.cc).
#ifndef TERN_ROUTER_CORE_KV_EVENT_H_
#define TERN_ROUTER_CORE_KV_EVENT_H_

#include <cstdint>
#include <vector>

namespace tern::router {

struct KvEvent {
  enum class Kind { kStored, kRemoved, kCleared, kUnknown };

  uint64_t sequence_number = 0;
  Kind kind = Kind::kUnknown;
  // kStored: chained block hashes (common/block_hash.h) that entered the
  // worker's cache; kRemoved: hashes that left it; empty for kCleared.
  std::vector<uint64_t> block_hashes;
};

}  // namespace tern::router

#endif  // TERN_ROUTER_CORE_KV_EVENT_H_
