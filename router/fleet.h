// The gRPC shell around the fleet state (router/core/fleet_state.h): it
// connects to each member, probes its health (grpc.health.v1 Check, then
// Worker.Info; concurrently across workers, see router/core/health_checker.h),
// keeps a Worker.WatchState stream open to each healthy worker and feeds
// what it hears to the FleetState, then carries out the FleetEffects it
// answers (aborting the calls of a lost worker, re-subscribing after an
// event gap, waking the dispatcher).
//
// Per worker a WatchState stream (a gRPC callback reactor): a new stream
// starts the worker's prefix-index entries afresh (its first message is a
// snapshot); an event gap cancels it and subscribes again at once.
//
// A loop thread ticks every `tick_interval`: membership (static addresses,
// DNS names re-resolved every `dns_refresh`, self-registered workers; see
// router/core/membership.h), the engine-progress check, the health
// schedule, and the listener (the dispatcher's Pump).
//
// Thread contract: every public method may be called from any thread. The
// listener and WorkerCall::AbortWorkerLost are invoked without the fleet's
// locks held. Lock order: the fleet's own lock may be held while calling
// into the FleetState, never the reverse.
#ifndef TERN_ROUTER_FLEET_H_
#define TERN_ROUTER_FLEET_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/grpc_tls.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "router/core/clock.h"
#include "router/core/fleet_state.h"
#include "router/core/health_checker.h"
#include "router/core/membership.h"
#include "tern/v1/router.pb.h"
#include "tern/v1/worker.grpc.pb.h"

namespace tern::router {

struct FleetOptions {
  // "HOST:PORT" or "dns:NAME:PORT" (router/core/membership.h).
  std::vector<std::string> worker_addresses;
  // How often "dns:" entries are resolved again.
  absl::Duration dns_refresh = absl::Seconds(5);
  // How long a self-registered worker stays a member without re-registering.
  absl::Duration registration_lease = absl::Seconds(10);
  std::chrono::milliseconds health_interval{1000};
  std::chrono::milliseconds health_timeout{1000};
  // A worker with work whose engine makes no progress this long, beyond
  // stall_step_factor times its current step's expected duration, is stalled.
  absl::Duration stall_timeout = absl::Seconds(3);
  double stall_step_factor = 2.0;
  // Period of the loop's duties (membership, progress, health schedule, listener).
  absl::Duration tick_interval = absl::Milliseconds(100);
  CircuitBreakerOptions breaker;
  PrefixIndexOptions index;
  // How workers are dialled: plaintext, or mutual TLS (common/grpc_tls.h).
  ChannelSecurity security;
};

class Fleet {
 public:
  explicit Fleet(FleetOptions options);
  // Stops the loop, ends the WatchState streams and waits for them (Stop).
  ~Fleet();

  // Starts the loop; the first health round (and the WatchState streams of
  // healthy workers) completes, or times out, before Start returns.
  void Start();
  // Called without the fleet's lock after a change that may give queued
  // requests room (a load report, a worker becoming healthy) and on every
  // tick of the loop. Set before Start.
  void SetListener(std::function<void()> listener) { listener_ = std::move(listener); }
  // Stops the loop, the probes and the WatchState streams, and waits for
  // them; the listener is not called after Stop returns. Idempotent; one
  // thread only.
  void Stop();

  // What the dispatcher and the relay use.
  FleetState& state() { return state_; }
  const FleetState& state() const { return state_; }
  tern::v1::Worker::Stub* stub(const FleetMember& worker) const;

  // Router.RegisterWorker: the worker joins at the loop's next tick.
  absl::StatusOr<absl::Duration> Register(const std::string& address, absl::Time now);

  Clock* clock() const { return clock_; }
  std::vector<FleetMember*> workers() const { return state_.members(); }
  bool healthy(const FleetMember& worker) const { return state_.healthy(worker); }
  PrefixIndexStats index_stats() const { return state_.index_stats(); }
  // Models served by healthy workers.
  tern::v1::ListModelsResponse ListModels() const;
  tern::v1::ClusterStateResponse ClusterState() const;

 private:
  class WatchStream;
  class GrpcProber;
  struct Connection;

  void Loop();
  // Brings the membership up to date; new members are probed at once.
  void RefreshMembership(bool force_dns);
  // Carries out what the state asked for after a change on `worker` (or on
  // several workers, for `worker` null: then only calls and the listener).
  void Apply(FleetMember* worker, FleetEffects effects);
  void MaybeWatch(FleetMember& worker);
  void CancelStream(const FleetMember& worker);
  void OnWatchMessage(FleetMember& worker, const tern::v1::WorkerState& message);
  void OnWatchDone(WatchStream* stream, const grpc::Status& status);
  void Notify() const;

  const FleetOptions options_;
  Clock* const clock_;
  FleetState state_;
  Membership membership_;
  std::unique_ptr<GrpcProber> prober_;
  HealthChecker health_;
  std::function<void()> listener_;  // set before Start

  absl::Notification stopping_;
  mutable absl::Mutex mu_;
  // By WorkerId; they only grow, as the state's members do.
  std::vector<std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<WatchStream>> streams_ ABSL_GUARDED_BY(mu_);
  int live_streams_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread loop_thread_;
};

}  // namespace tern::router

#endif  // TERN_ROUTER_FLEET_H_
