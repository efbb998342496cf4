// Fleet membership: which worker addresses should be members now.
//
// Three sources, merged: the static "HOST:PORT" entries of the router's
// config; "dns:NAME:PORT" entries (a Kubernetes headless Service), resolved
// again every `dns_refresh`, the last successful answer standing while the
// resolver fails (a hiccup must not empty the fleet); and workers that
// registered themselves (Router.RegisterWorker), each a member until its
// lease runs out without a renewal.
//
// Thread contract: every method may be called from any thread. Desired runs
// the resolver without holding the lock (it may block).
#ifndef TERN_ROUTER_CORE_MEMBERSHIP_H_
#define TERN_ROUTER_CORE_MEMBERSHIP_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace tern::router {

// Splits "HOST:PORT" at its last colon; false unless both parts are there and
// the port is a number in 1..65535.
bool SplitHostPort(absl::string_view address, absl::string_view* host, absl::string_view* port);

// The set difference a membership change makes: addresses in `desired` not
// in `current` are added, those in `current` not in `desired` removed, each
// in the order of its input, duplicates once.
struct MembershipDiff {
  std::vector<std::string> added;
  std::vector<std::string> removed;
};
MembershipDiff DiffMembership(absl::Span<const std::string> current,
                              absl::Span<const std::string> desired);

// "HOST:PORT" for each address `name` resolves to (AF_INET and AF_INET6,
// IPv6 in brackets), deduplicated, in resolver order. `name_and_port` is
// "NAME:PORT". Blocks on the system resolver. UNAVAILABLE when the name does
// not resolve, INVALID_ARGUMENT when it is malformed.
absl::StatusOr<std::vector<std::string>> ResolveWorkerAddresses(absl::string_view name_and_port);

struct MembershipOptions {
  // "HOST:PORT" or "dns:NAME:PORT".
  std::vector<std::string> worker_addresses;
  // How often "dns:" entries are resolved again.
  absl::Duration dns_refresh = absl::Seconds(5);
  // How long a self-registered worker stays a member without re-registering.
  absl::Duration registration_lease = absl::Seconds(10);
};

class Membership {
 public:
  using Resolver =
      std::function<absl::StatusOr<std::vector<std::string>>(absl::string_view name_and_port)>;

  explicit Membership(MembershipOptions options, Resolver resolver = ResolveWorkerAddresses);

  // A worker asks to be a member, or renews its lease, at `now`. Returns the
  // lease. INVALID_ARGUMENT when `address` is not HOST:PORT.
  absl::StatusOr<absl::Duration> Register(const std::string& address, absl::Time now);

  // The addresses that should be members at `now`, static ones first, then
  // resolved, then registered. Resolves the DNS entries when due (or when
  // `force_dns`); drops leases that ran out.
  std::vector<std::string> Desired(absl::Time now, bool force_dns = false);

  bool has_dns() const { return !dns_names_.empty(); }

 private:
  const MembershipOptions options_;
  const Resolver resolver_;
  std::vector<std::string> static_addresses_;  // constant after construction
  std::vector<std::string> dns_names_;         // "NAME:PORT", constant after construction

  mutable absl::Mutex mu_;
  absl::Time next_dns_refresh_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // The last successful resolution of each DNS name, in dns_names_ order.
  std::vector<std::vector<std::string>> resolved_ ABSL_GUARDED_BY(mu_);
  // Self-registered addresses and the end of their leases, in first-registration order.
  std::vector<std::pair<std::string, absl::Time>> leases_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tern::router

#endif  // TERN_ROUTER_CORE_MEMBERSHIP_H_
