#include "cli/bench/bench_soak.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cli/bench/bench_datasets.h"
#include "cli/bench/bench_load.h"
#include "cli/bench/bench_metrics.h"
#include "cli/runtime_files.h"
#include "common/flags.h"

namespace tern::cli {
namespace {

constexpr char kUsage[] =
    "usage: tern bench soak --model NAME (--minutes M | --seconds S) [--rate R]\n"
    "         [--url http://127.0.0.1:8000] [--interval-s 10] [--input-len 64]\n"
    "         [--output-len 32] [--tokenizer DIR] [--request-timeout S]\n"
    "         [--cluster-pid PID] [--pid NAME=PID ...] [--warmup-s S]\n"
    "  Steady Poisson load of R requests/s (default 4) against a running cluster; per\n"
    "  interval: RSS and open fds of each watched process, TTFT p50/p99, e2e p99,\n"
    "  completed/failed; at the end RSS drift (first -> last interval, and its\n"
    "  least-squares trend per hour) and fd growth.\n"
    "  --warmup-s: the same load for S seconds first, its intervals printed as\n"
    "  warm-up and left out of the drift (caches filling to their bounds).\n"
    "  --cluster-pid: watch the children of a `tern up`; --pid: one named process.\n";

RuntimeFile SoakTokenizerDir() {
  return {"the served model's tokenizer",
          "tokenizer",
          "DIR",
          "TERN_TOKENIZER_DIR",
          "",
          "a folder with the served model's tokenizer.json (its model folder will do)"};
}

void Say(const std::string& line) { std::cout << "[tern bench soak] " << line << std::endl; }

absl::StatusOr<double> DoubleFlag(const Flags& flags, const std::string& name, double fallback) {
  const std::optional<std::string> value = flags.Get(name);
  if (!value) return fallback;
  double parsed = 0;
  if (!absl::SimpleAtod(*value, &parsed) || !std::isfinite(parsed) || parsed < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a number >= 0"));
  }
  return parsed;
}

struct SoakPlan {
  LoadOptions load;
  DatasetOptions dataset;
  std::string tokenizer_dir;
  double total_s = 0;
  double interval_s = 10;
  double warmup_s = 0;
  double rate = 4;
  std::vector<SoakProcess> processes;
};

absl::StatusOr<SoakPlan> ParseSoakPlan(const Flags& flags) {
  SoakPlan plan;
  auto endpoint = ParseHttpUrl(flags.GetOr("url", "http://127.0.0.1:8000"));
  if (!endpoint.ok()) return endpoint.status();
  plan.load.endpoint = *endpoint;
  plan.load.model = flags.GetOr("model", "");
  if (plan.load.model.empty()) return absl::InvalidArgumentError("--model NAME is required");
  auto minutes = DoubleFlag(flags, "minutes", 0);
  auto seconds = DoubleFlag(flags, "seconds", 0);
  auto interval = DoubleFlag(flags, "interval-s", 10);
  auto rate = DoubleFlag(flags, "rate", 4);
  auto input_len = DoubleFlag(flags, "input-len", 64);
  auto output_len = DoubleFlag(flags, "output-len", 32);
  auto timeout = DoubleFlag(flags, "request-timeout", 120);
  auto warmup = DoubleFlag(flags, "warmup-s", 0);
  for (const auto* v :
       {&minutes, &seconds, &interval, &rate, &input_len, &output_len, &timeout, &warmup}) {
    if (!v->ok()) return v->status();
  }
  plan.total_s = *minutes * 60 + *seconds;
  if (plan.total_s <= 0) return absl::InvalidArgumentError("--minutes or --seconds is required");
  if (*interval <= 0 || *rate <= 0 || *input_len < 1 || *output_len < 1) {
    return absl::InvalidArgumentError(
        "--interval-s, --rate, --input-len, --output-len must be > 0");
  }
  plan.interval_s = std::min(*interval, plan.total_s);
  plan.warmup_s = *warmup;
  plan.rate = *rate;
  plan.dataset.input_len = static_cast<int32_t>(*input_len);
  plan.dataset.output_len = static_cast<int32_t>(*output_len);
  plan.load.request_rate = plan.rate;
  plan.load.progress = false;
  plan.load.request_timeout = std::chrono::milliseconds(static_cast<int64_t>(*timeout * 1000));
  auto tokenizer = FindRuntimeFile(SoakTokenizerDir(), flags);
  if (!tokenizer.ok()) return tokenizer.status();
  plan.tokenizer_dir = *tokenizer;
  if (auto cluster = flags.Get("cluster-pid")) {
    int pid = 0;
    if (!absl::SimpleAtoi(*cluster, &pid) || pid <= 0) {
      return absl::InvalidArgumentError("--cluster-pid needs a pid");
    }
    plan.processes = ChildProcesses(pid);
    if (plan.processes.empty()) {
      return absl::NotFoundError(absl::StrCat("process ", pid, " has no children to watch"));
    }
  }
  for (const std::string& named : flags.GetAll("pid")) {
    std::vector<std::string> parts = absl::StrSplit(named, absl::MaxSplits('=', 1));
    int pid = 0;
    if (parts.size() != 2 || parts[0].empty() || !absl::SimpleAtoi(parts[1], &pid) || pid <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("--pid needs NAME=PID, not ", named));
    }
    plan.processes.push_back({parts[0], pid});
  }
  return plan;
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Millis(double ms) { return std::isfinite(ms) ? absl::StrFormat("%.0f", ms) : "-"; }

// The least-squares slope of ys over xs (0 with fewer than two points).
double Slope(const std::vector<double>& xs, const std::vector<double>& ys) {
  const size_t n = xs.size();
  if (n < 2) return 0;
  double mx = 0;
  double my = 0;
  for (size_t i = 0; i < n; ++i) {
    mx += xs[i] / static_cast<double>(n);
    my += ys[i] / static_cast<double>(n);
  }
  double sxy = 0;
  double sxx = 0;
  for (size_t i = 0; i < n; ++i) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) * (xs[i] - mx);
  }
  return sxx > 0 ? sxy / sxx : 0;
}

}  // namespace

std::vector<SoakProcess> ChildProcesses(int parent) {
  std::vector<SoakProcess> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    int pid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
    const std::string stat = ReadWholeFile(entry.path().string() + "/stat");
    const size_t close = stat.rfind(')');
    const size_t open = stat.find('(');
    if (close == std::string::npos || open == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    std::string state;
    int ppid = 0;
    rest >> state >> ppid;
    if (ppid != parent) continue;
    found.push_back({stat.substr(open + 1, close - open - 1), pid});
  }
  std::sort(found.begin(), found.end(),
            [](const SoakProcess& a, const SoakProcess& b) { return a.pid < b.pid; });
  int workers = 0;
  for (SoakProcess& p : found) {
    if (p.name == "tern-worker") p.name = absl::StrCat(p.name, "#", workers++);
  }
  return found;
}

ProcessUsage ReadProcessUsage(int pid) {
  ProcessUsage usage;
  const std::string dir = absl::StrCat("/proc/", pid);
  std::istringstream status(ReadWholeFile(dir + "/status"));
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) {
      int64_t kib = 0;
      std::istringstream(line.substr(6)) >> kib;
      usage.rss_kib = kib;
    }
  }
  std::error_code ec;
  int64_t fds = 0;
  for (std::filesystem::directory_iterator it(dir + "/fd", ec), end; !ec && it != end;
       it.increment(ec)) {
    ++fds;
  }
  if (usage.rss_kib >= 0 && !ec) usage.fds = fds;
  return usage;
}

int RunBenchSoak(int argc, char** argv) {
  absl::StatusOr<Flags> flags =
      Flags::Parse(argc, argv, 1,
                   {"url", "model", "minutes", "seconds", "rate", "interval-s", "input-len",
                    "output-len", "tokenizer", "request-timeout", "cluster-pid", "pid", "warmup-s"},
                   {"help"});
  if (flags.ok() && flags->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  absl::StatusOr<SoakPlan> plan =
      flags.ok() ? ParseSoakPlan(*flags) : absl::StatusOr<SoakPlan>(flags.status());
  if (!plan.ok()) {
    std::cerr << "tern bench soak: " << plan.status().message() << "\n" << kUsage;
    return 2;
  }
  auto synthesizer = PromptSynthesizer::FromTokenizerFile(plan->tokenizer_dir + "/tokenizer.json");
  if (!synthesizer.ok()) {
    std::cerr << "tern bench soak: tokenizer: " << synthesizer.status().message() << "\n";
    return 2;
  }
  const auto count_intervals = [&](double total_s) {
    return static_cast<int>(std::ceil(total_s / plan->interval_s - 1e-9));
  };
  const int warmups = plan->warmup_s > 0 ? count_intervals(plan->warmup_s) : 0;
  const int intervals = count_intervals(plan->total_s);
  std::string watched;
  for (const SoakProcess& p : plan->processes) absl::StrAppend(&watched, " ", p.name, "=", p.pid);
  Say(absl::StrCat("soak: ", plan->load.endpoint.host, ":", plan->load.endpoint.port, " model ",
                   plan->load.model, ", Poisson ", plan->rate, " requests/s, ", intervals,
                   " interval(s) of ", plan->interval_s, " s",
                   warmups > 0 ? absl::StrCat(" after ", plan->warmup_s, " s of warm-up") : "",
                   ", input ", plan->dataset.input_len, " output ", plan->dataset.output_len,
                   " tokens; watching", watched.empty() ? " nothing" : watched));

  std::vector<std::vector<ProcessUsage>> usage;  // per measured interval, per process
  std::vector<double> ends_s;                    // each measured interval's end, from the first
  int64_t completed = 0;
  int64_t failed = 0;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < warmups + intervals; ++i) {
    const bool warming = i < warmups;
    const double phase_s = warming ? plan->warmup_s : plan->total_s;
    const int index = warming ? i : i - warmups;
    const double length = std::min(plan->interval_s, phase_s - index * plan->interval_s);
    DatasetOptions dataset = plan->dataset;
    dataset.kind = DatasetKind::kRandom;
    dataset.num_prompts = std::max(1, static_cast<int32_t>(std::lround(plan->rate * length)));
    dataset.seed = static_cast<uint64_t>(i);
    absl::StatusOr<Workload> workload = BuildWorkload(dataset, **synthesizer);
    if (!workload.ok()) {
      std::cerr << "tern bench soak: " << workload.status().message() << "\n";
      return 2;
    }
    LoadOptions options = plan->load;
    options.seed = static_cast<uint64_t>(i);
    options.run_timeout =
        std::chrono::milliseconds(static_cast<int64_t>(length * 1000)) + options.request_timeout;
    absl::StatusOr<LoadResult> result = RunLoad(*workload, options);
    if (!result.ok()) {
      std::cerr << "tern bench soak: " << result.status().message() << "\n";
      return 2;
    }
    const ServeMetrics m = ComputeServeMetrics(result->records, result->duration_s);
    completed += m.completed;
    failed += m.failed;
    std::vector<ProcessUsage> now;
    std::string tiers;
    for (const SoakProcess& p : plan->processes) {
      const ProcessUsage u = now.emplace_back(ReadProcessUsage(p.pid));
      absl::StrAppendFormat(&tiers, " %s rss %.1f MiB fds %d;", p.name, u.rss_kib / 1024.0, u.fds);
    }
    if (!warming) {
      usage.push_back(std::move(now));
      ends_s.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
    std::string errors;
    for (const auto& [kind, count] : m.errors) absl::StrAppend(&errors, " ", kind, " x", count);
    Say(
        absl::StrFormat("%s %d (%.1f s):%s TTFT p50 %s ms p99 %s ms, e2e p99 %s ms, "
                        "completed %d, failed %d%s",
                        warming ? "warm-up" : "interval", index + 1, result->duration_s, tiers,
                        Millis(m.ttft_ms.median), Millis(m.ttft_ms.p99), Millis(m.e2e_ms.p99),
                        m.completed, m.failed, errors));
  }
  std::string drift;
  for (size_t p = 0; p < plan->processes.size(); ++p) {
    const ProcessUsage& first = usage.front()[p];
    const ProcessUsage& last = usage.back()[p];
    if (first.rss_kib < 0 || last.rss_kib < 0) {
      absl::StrAppend(&drift, " ", plan->processes[p].name, " gone;");
      continue;
    }
    // The trend over every measured interval says more than two end points
    // when RSS moves in steps (allocator arenas, a connection's buffers).
    std::vector<double> xs;
    std::vector<double> ys;
    for (size_t i = 0; i < usage.size(); ++i) {
      if (usage[i][p].rss_kib < 0) continue;
      xs.push_back(ends_s[i] / 3600.0);
      ys.push_back(static_cast<double>(usage[i][p].rss_kib) / 1024.0);
    }
    absl::StrAppendFormat(&drift, " %s RSS %+.1f MiB (%+.1f%%, trend %+.2f MiB/h), fds %+d;",
                          plan->processes[p].name, (last.rss_kib - first.rss_kib) / 1024.0,
                          first.rss_kib > 0 ? 100.0 * (last.rss_kib - first.rss_kib) /
                                                  static_cast<double>(first.rss_kib)
                                            : 0.0,
                          Slope(xs, ys), last.fds - first.fds);
  }
  Say(absl::StrCat("done: completed ", completed, ", failed ", failed,
                   "; first -> last interval:", drift.empty() ? " no process watched" : drift));
  return failed == 0 ? 0 : 1;
}

}  // namespace tern::cli
