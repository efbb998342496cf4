#include "cli/neuron/neuron_launcher.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/process_supervisor.h"
#include "common/log.h"

namespace tern::cli {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kFirstBackoff(1);
constexpr std::chrono::seconds kMaxBackoff(60);
// A run this long counts as healthy: the next failure starts the backoff over.
constexpr std::chrono::seconds kStableRun(60);

}  // namespace

NeuronLauncher::~NeuronLauncher() { Stop(std::chrono::seconds(30)); }

absl::Status NeuronLauncher::Start() {
  if (plan_.servers.empty()) return absl::InvalidArgumentError("the plan has no servers");
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void NeuronLauncher::Stop(std::chrono::milliseconds grace) {
  if (!thread_.joinable()) return;
  grace_ms_.store(grace.count());
  stop_.store(true);
  thread_.join();
}

void NeuronLauncher::Run() {
  struct Server {
    std::optional<pid_t> pid;
    Clock::time_point started;
    Clock::time_point next_start;
    std::chrono::seconds backoff = kFirstBackoff;
  };
  ProcessSupervisor supervisor;
  std::vector<Server> servers(plan_.servers.size());
  const auto name = [this](size_t i) {
    return absl::StrCat("vllm server ", i, " (cores ", plan_.servers[i].visible_cores, ")");
  };
  const auto start = [&](size_t i) {
    const NeuronServer& plan = plan_.servers[i];
    absl::StatusOr<ChildProcess> child = supervisor.Start(name(i), plan.argv, plan.env);
    Server& s = servers[i];
    s.started = Clock::now();
    if (child.ok()) {
      s.pid = child->pid;
      TERN_LOG(Info) << "started " << name(i) << " as pid " << child->pid << ": " << plan.url;
    } else {
      s.next_start = Clock::now() + s.backoff;
      TERN_LOG(Error) << "cannot start " << name(i) << ": " << child.status().message();
    }
  };
  for (size_t i = 0; i < servers.size(); ++i) start(i);
  while (!stop_.load()) {
    while (std::optional<ExitedChild> exited = supervisor.ReapExited()) {
      for (size_t i = 0; i < servers.size(); ++i) {
        Server& s = servers[i];
        if (s.pid != exited->child.pid) continue;
        s.pid.reset();
        if (Clock::now() - s.started >= kStableRun) s.backoff = kFirstBackoff;
        s.next_start = Clock::now() + s.backoff;
        TERN_LOG(Warning) << exited->description << "; starting it again in " << s.backoff.count()
                          << " s";
        s.backoff = std::min(kMaxBackoff, s.backoff * 2);
      }
    }
    for (size_t i = 0; i < servers.size(); ++i) {
      if (!servers[i].pid && Clock::now() >= servers[i].next_start && !stop_.load()) {
        start(i);
        restarts_.fetch_add(1);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  supervisor.StopAll(std::chrono::milliseconds(grace_ms_.load()));
}

}  // namespace tern::cli
