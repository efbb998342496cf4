#include "router/core/membership.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace tern::router {
namespace {

constexpr absl::string_view kDnsPrefix = "dns:";

}  // namespace

bool SplitHostPort(absl::string_view address, absl::string_view* host, absl::string_view* port) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  int port_number = 0;
  return absl::SimpleAtoi(*port, &port_number) && port_number > 0 && port_number < 65536;
}

MembershipDiff DiffMembership(absl::Span<const std::string> current,
                              absl::Span<const std::string> desired) {
  const absl::flat_hash_set<std::string> have(current.begin(), current.end());
  const absl::flat_hash_set<std::string> want(desired.begin(), desired.end());
  MembershipDiff diff;
  absl::flat_hash_set<std::string> seen;
  for (const std::string& address : desired) {
    if (!have.contains(address) && seen.insert(address).second) diff.added.push_back(address);
  }
  seen.clear();
  for (const std::string& address : current) {
    if (!want.contains(address) && seen.insert(address).second) diff.removed.push_back(address);
  }
  return diff;
}

absl::StatusOr<std::vector<std::string>> ResolveWorkerAddresses(absl::string_view name_and_port) {
  absl::string_view name;
  absl::string_view port;
  if (!SplitHostPort(name_and_port, &name, &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker address \"dns:", name_and_port, "\" is not dns:NAME:PORT"));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;  // AF_INET and AF_INET6
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string host(name);
  const std::string service(port);
  if (const int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", name_and_port, ": ", gai_strerror(rc)));
  }
  std::vector<std::string> addresses;
  for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    std::string address;
    if (ai->ai_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(ai->ai_addr);
      if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) == nullptr) continue;
      address = absl::StrCat(text, ":", port);
    } else if (ai->ai_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(ai->ai_addr);
      if (inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text)) == nullptr) continue;
      address = absl::StrCat("[", text, "]:", port);
    } else {
      continue;
    }
    if (std::find(addresses.begin(), addresses.end(), address) == addresses.end()) {
      addresses.push_back(std::move(address));
    }
  }
  freeaddrinfo(found);
  if (addresses.empty()) {
    return absl::UnavailableError(absl::StrCat(name_and_port, " has no IPv4 or IPv6 address"));
  }
  return addresses;
}

Membership::Membership(MembershipOptions options, Resolver resolver)
    : options_(std::move(options)), resolver_(std::move(resolver)) {
  for (const std::string& address : options_.worker_addresses) {
    if (absl::StartsWith(address, kDnsPrefix)) {
      dns_names_.push_back(address.substr(kDnsPrefix.size()));
    } else if (std::find(static_addresses_.begin(), static_addresses_.end(), address) ==
               static_addresses_.end()) {
      static_addresses_.push_back(address);
    }
  }
  absl::MutexLock lock(&mu_);
  resolved_.resize(dns_names_.size());
}

absl::StatusOr<absl::Duration> Membership::Register(const std::string& address, absl::Time now) {
  absl::string_view host;
  absl::string_view port;
  if (!SplitHostPort(address, &host, &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker address \"", address, "\" is not HOST:PORT"));
  }
  absl::MutexLock lock(&mu_);
  auto it = std::find_if(leases_.begin(), leases_.end(),
                         [&](const auto& lease) { return lease.first == address; });
  if (it == leases_.end()) {
    TERN_LOG(Info) << "worker " << address << " registers";
    leases_.emplace_back(address, now + options_.registration_lease);
  } else {
    it->second = now + options_.registration_lease;
  }
  return options_.registration_lease;
}

std::vector<std::string> Membership::Desired(absl::Time now, bool force_dns) {
  bool resolve = false;
  {
    absl::MutexLock lock(&mu_);
    if (!dns_names_.empty() && (force_dns || now >= next_dns_refresh_)) {
      resolve = true;
      next_dns_refresh_ = now + options_.dns_refresh;
    }
  }
  // Resolution may block: it runs without the lock.
  std::vector<std::optional<std::vector<std::string>>> answers(dns_names_.size());
  if (resolve) {
    for (size_t i = 0; i < dns_names_.size(); ++i) {
      absl::StatusOr<std::vector<std::string>> addresses = resolver_(dns_names_[i]);
      if (addresses.ok()) {
        answers[i] = *std::move(addresses);
      } else {
        TERN_LOG(Warning) << addresses.status().message();
      }
    }
  }
  std::vector<std::string> desired = static_addresses_;
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < dns_names_.size(); ++i) {
    if (answers[i].has_value()) resolved_[i] = *std::move(answers[i]);
    desired.insert(desired.end(), resolved_[i].begin(), resolved_[i].end());
  }
  leases_.erase(std::remove_if(leases_.begin(), leases_.end(),
                               [&](const auto& lease) {
                                 if (lease.second > now) return false;
                                 TERN_LOG(Warning) << "worker " << lease.first
                                                   << " did not renew its registration";
                                 return true;
                               }),
                leases_.end());
  for (const auto& [address, until] : leases_) desired.push_back(address);
  return desired;
}

}  // namespace tern::router
