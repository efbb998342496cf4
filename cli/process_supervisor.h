// Starts the cluster's processes as children and watches them: the children
// inherit stdout/stderr (their log lines name their component), die with the
// supervisor (PR_SET_PDEATHSIG), and are stopped with SIGTERM then SIGKILL.
// Not thread-safe: used from `tern up`'s main thread only.
#ifndef TERN_CLI_PROCESS_SUPERVISOR_H_
#define TERN_CLI_PROCESS_SUPERVISOR_H_

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tern::cli {

struct ChildProcess {
  std::string name;
  pid_t pid = -1;
  std::vector<std::string> argv;  // as started, so it can be started again
};

struct ExitedChild {
  ChildProcess child;
  std::string description;  // "worker 1 (pid 42) was killed by signal 9"
};

class ProcessSupervisor {
 public:
  ~ProcessSupervisor();  // stops whatever is still running

  // Starts `argv`: argv[0] is the executable's path, or a name looked up in
  // PATH. `env` is set on top of this process's environment.
  absl::StatusOr<ChildProcess> Start(
      const std::string& name, const std::vector<std::string>& argv,
      const std::vector<std::pair<std::string, std::string>>& env = {});

  // A child that has exited since the last call, with a description of how.
  std::optional<ExitedChild> ReapExited();

  // SIGTERM to every child, then SIGKILL to those still alive after `grace`.
  void StopAll(std::chrono::milliseconds grace);

 private:
  std::vector<ChildProcess> children_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0).
absl::StatusOr<int> PickFreePort();

}  // namespace tern::cli

#endif  // TERN_CLI_PROCESS_SUPERVISOR_H_
