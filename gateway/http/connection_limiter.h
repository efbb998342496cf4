// The gateway's caps on open HTTP connections: in total and per client
// address. A connection over either cap is refused when it is accepted
// (HttpServer closes it at once, before reading or a TLS handshake: answering
// would spend the very resources the cap protects).
//
// Thread-safe: any io thread admits and releases.
#ifndef TERN_GATEWAY_HTTP_CONNECTION_LIMITER_H_
#define TERN_GATEWAY_HTTP_CONNECTION_LIMITER_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace tern::gateway {

enum class ConnectionCap {
  kNone,       // admitted
  kTotal,      // max_connections reached
  kPerClient,  // max_connections_per_client reached for this address
};

// The cap's config key, also the `reason` label of
// tern_gateway_connections_rejected_total: "max_connections" or
// "max_connections_per_client" ("" for kNone).
const char* ConnectionCapName(ConnectionCap cap);

class ConnectionLimiter {
 public:
  // A cap of 0 means none.
  ConnectionLimiter(int max_total, int max_per_client);

  ConnectionLimiter(const ConnectionLimiter&) = delete;
  ConnectionLimiter& operator=(const ConnectionLimiter&) = delete;

  // Counts a connection from `client` (its address) unless that would pass a
  // cap; returns the cap that refused it, or kNone when it was counted (and
  // must be released once, with the same address).
  ConnectionCap TryAdmit(const std::string& client);
  void Release(const std::string& client);

  int open() const;

 private:
  const int max_total_;
  const int max_per_client_;

  mutable absl::Mutex mu_;
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, int> per_client_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_HTTP_CONNECTION_LIMITER_H_
