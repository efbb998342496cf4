#include "gateway/http/connection_limiter.h"

namespace tern::gateway {

const char* ConnectionCapName(ConnectionCap cap) {
  switch (cap) {
    case ConnectionCap::kNone:
      return "";
    case ConnectionCap::kTotal:
      return "max_connections";
    case ConnectionCap::kPerClient:
      return "max_connections_per_client";
  }
  return "";
}

ConnectionLimiter::ConnectionLimiter(int max_total, int max_per_client)
    : max_total_(max_total), max_per_client_(max_per_client) {}

ConnectionCap ConnectionLimiter::TryAdmit(const std::string& client) {
  absl::MutexLock lock(&mu_);
  if (max_total_ > 0 && open_ >= max_total_) return ConnectionCap::kTotal;
  int& from_client = per_client_[client];
  if (max_per_client_ > 0 && from_client >= max_per_client_) return ConnectionCap::kPerClient;
  ++from_client;
  ++open_;
  return ConnectionCap::kNone;
}

void ConnectionLimiter::Release(const std::string& client) {
  absl::MutexLock lock(&mu_);
  const auto it = per_client_.find(client);
  if (it == per_client_.end()) return;
  --open_;
  // Addresses come and go: keep the table to the clients connected now.
  if (--it->second <= 0) per_client_.erase(it);
}

int ConnectionLimiter::open() const {
  absl::MutexLock lock(&mu_);
  return open_;
}

}  // namespace tern::gateway
