#include "cli/process_supervisor.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace tern::cli {

ProcessSupervisor::~ProcessSupervisor() { StopAll(std::chrono::seconds(5)); }

absl::StatusOr<ChildProcess> ProcessSupervisor::Start(
    const std::string& name, const std::vector<std::string>& argv,
    const std::vector<std::pair<std::string, std::string>>& env) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // The child's environment is built here: between fork and exec a
  // threaded parent's child may only make async-signal-safe calls.
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& [name_set, value] : env) replaced |= name_set == key;
    if (!replaced) environment.push_back(entry);
  }
  for (const auto& [key, value] : env) environment.push_back(key + "=" + value);
  std::vector<char*> envp;
  for (const std::string& e : environment) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork failed: ", std::strerror(errno)));
  if (pid == 0) {
    // The child: die with the supervisor, and take signals the default way.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    execvpe(args[0], args.data(), envp.data());
    std::fprintf(stderr, "cannot start %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  ChildProcess child{name, pid, argv};
  children_.push_back(child);
  return child;
}

std::optional<ExitedChild> ProcessSupervisor::ReapExited() {
  for (auto it = children_.begin(); it != children_.end(); ++it) {
    int status = 0;
    if (waitpid(it->pid, &status, WNOHANG) == it->pid) {
      std::string how = WIFEXITED(status) ? absl::StrCat("exited with status ", WEXITSTATUS(status))
                                          : absl::StrCat("was killed by signal ", WTERMSIG(status));
      ExitedChild exited{*it, absl::StrCat(it->name, " (pid ", it->pid, ") ", how)};
      children_.erase(it);
      return exited;
    }
  }
  return std::nullopt;
}

void ProcessSupervisor::StopAll(std::chrono::milliseconds grace) {
  // Stop the front door first so no new request reaches a stopping backend.
  for (auto it = children_.rbegin(); it != children_.rend(); ++it) kill(it->pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (!children_.empty()) {
    for (auto it = children_.begin(); it != children_.end();) {
      int status = 0;
      if (waitpid(it->pid, &status, WNOHANG) == it->pid) {
        it = children_.erase(it);
      } else {
        ++it;
      }
    }
    if (children_.empty()) break;
    if (std::chrono::steady_clock::now() > deadline) {
      for (const ChildProcess& child : children_) {
        kill(child.pid, SIGKILL);
        waitpid(child.pid, nullptr, 0);
      }
      children_.clear();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

absl::StatusOr<int> PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return absl::InternalError("cannot find a free port");
  }
  const int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

}  // namespace tern::cli
