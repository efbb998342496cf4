// How a tern worker names one vLLM server it fronts: its HTTP base URL and,
// optionally, its KV-event sockets, as one flag value
//   URL[,events=ENDPOINT][,replay=ENDPOINT][,model=NAME][,topic=TOPIC]
// e.g. "http://127.0.0.1:8100,events=tcp://127.0.0.1:5557,replay=tcp://127.0.0.1:5657".
// Without events= the worker routes by load alone (no prefix index for it).
// Pure functions; thread-safe.
#ifndef TERN_WORKER_VLLM_VLLM_SERVER_SPEC_H_
#define TERN_WORKER_VLLM_VLLM_SERVER_SPEC_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tern::worker::vllm {

struct VllmServerSpec {
  // "http://HOST:PORT" (a trailing path is dropped).
  std::string url;
  std::string host;
  uint16_t port = 0;
  // vLLM's KV events PUB endpoint and replay endpoint as reachable from
  // here ("tcp://HOST:PORT"); empty: none.
  std::string events;
  std::string replay;
  // The model name the server answers to; empty: the worker's served name.
  std::string model;
  // The KV events topic prefix to subscribe to; empty: every topic.
  std::string topic;
};

// INVALID_ARGUMENT naming the part that is wrong (scheme, port, key).
absl::StatusOr<VllmServerSpec> ParseVllmServerSpec(absl::string_view text);

// The flag value ParseVllmServerSpec reads back.
std::string FormatVllmServerSpec(const VllmServerSpec& spec);

}  // namespace tern::worker::vllm

#endif  // TERN_WORKER_VLLM_VLLM_SERVER_SPEC_H_
