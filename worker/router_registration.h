// Keeps this worker a member of a router's fleet (Router.RegisterWorker,
// for `tern-worker --register-with`): registers at once, then every lease/3,
// and every second while the router cannot be reached. Once stopped it
// renews no more, and the router drops the worker when its lease ends.
//
// Owns one thread, started by the constructor and joined by Stop or the
// destructor. Stop is called from one thread only (the owner's).
#ifndef TERN_WORKER_ROUTER_REGISTRATION_H_
#define TERN_WORKER_ROUTER_REGISTRATION_H_

#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "common/grpc_tls.h"

namespace tern::worker {

class RouterRegistration {
 public:
  // `router` is the router's HOST:PORT; `advertise` the HOST:PORT it is to
  // reach this worker at; `security` how the router is dialled.
  RouterRegistration(std::string router, std::string advertise,
                     tern::ChannelSecurity security = tern::ChannelSecurity());
  ~RouterRegistration();

  RouterRegistration(const RouterRegistration&) = delete;
  RouterRegistration& operator=(const RouterRegistration&) = delete;

  // Ends the renewals and joins the thread. Idempotent.
  void Stop();

 private:
  void Loop();

  const std::string router_;
  const std::string advertise_;
  const tern::ChannelSecurity security_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace tern::worker

#endif  // TERN_WORKER_ROUTER_REGISTRATION_H_
