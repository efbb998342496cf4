// "HOST:PORT" listen/target addresses as written in tern.yaml and on the
// command line: "127.0.0.1:8000", "0.0.0.0:0", "[::1]:8000", "localhost:8000",
// ":8000" (all interfaces). Pure functions; thread-safe.
#ifndef TERN_GATEWAY_HTTP_HOST_PORT_H_
#define TERN_GATEWAY_HTTP_HOST_PORT_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tern::gateway {

struct HostPort {
  std::string host;  // without IPv6 brackets; "0.0.0.0" for ":PORT"
  uint16_t port = 0;
};

// INVALID_ARGUMENT naming the text when it is not HOST:PORT with a port in [0, 65535].
absl::StatusOr<HostPort> ParseHostPort(std::string_view text);

// "host:port", with brackets around IPv6 literals.
std::string FormatHostPort(const HostPort& address);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_HTTP_HOST_PORT_H_
