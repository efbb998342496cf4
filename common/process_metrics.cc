#include "common/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/metrics_server.h"

#ifndef TERN_VERSION
#define TERN_VERSION "unknown"
#endif
#ifndef TERN_COMMIT
#define TERN_COMMIT "unknown"
#endif

namespace tern {
namespace {

// Fields of /proc/self/stat after the command name (which may hold spaces
// and parentheses, so parsing starts after its last ')'). Field 3 of the
// man page (state) is element 0.
std::vector<std::string> StatFields() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return {};
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return {};
  std::istringstream rest(line.substr(close + 1));
  std::vector<std::string> fields;
  for (std::string field; rest >> field;) fields.push_back(field);
  return fields;
}

// Seconds since the epoch at boot (/proc/stat btime); 0 when unknown.
double BootTime() {
  std::ifstream in("/proc/stat");
  for (std::string key; in >> key;) {
    if (key == "btime") {
      double seconds = 0;
      in >> seconds;
      return seconds;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

double OpenFds() {
  std::error_code error;
  double count = 0;
  for (std::filesystem::directory_iterator it("/proc/self/fd", error), end; !error && it != end;
       it.increment(error)) {
    ++count;
  }
  return count;
}

}  // namespace

const char* TernVersion() { return TERN_VERSION; }
const char* TernCommit() { return TERN_COMMIT; }

std::vector<prometheus::MetricFamily> ProcessMetricFamilies(const std::string& component) {
  std::vector<prometheus::MetricFamily> families;
  families.push_back(GaugeFamily(
      "tern_build_info", "tern's version and commit; the value is always 1.",
      {{{{"version", TernVersion()}, {"commit", TernCommit()}, {"component", component}}, 1.0}}));

  const std::vector<std::string> stat = StatFields();
  // man 5 proc: utime (14), stime (15), starttime (22), vsize (23), rss (24).
  if (stat.size() > 21) {
    const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    const double cpu = (std::stod(stat[11]) + std::stod(stat[12])) / ticks;
    families.push_back(CounterFamily("process_cpu_seconds_total",
                                     "Total user and system CPU time spent in seconds.",
                                     {{{}, cpu}}));
    families.push_back(GaugeFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                   {{{}, std::stod(stat[20])}}));
    families.push_back(GaugeFamily("process_resident_memory_bytes",
                                   "Resident memory size in bytes.",
                                   {{{}, std::stod(stat[21]) * page}}));
    if (const double boot = BootTime(); boot > 0) {
      families.push_back(GaugeFamily("process_start_time_seconds",
                                     "Start time of the process since unix epoch in seconds.",
                                     {{{}, boot + std::stod(stat[19]) / ticks}}));
    }
  }
  families.push_back(
      GaugeFamily("process_open_fds", "Number of open file descriptors.", {{{}, OpenFds()}}));
  struct rlimit limit {};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    families.push_back(GaugeFamily("process_max_fds", "Maximum number of open file descriptors.",
                                   {{{}, static_cast<double>(limit.rlim_cur)}}));
  }
  return families;
}

}  // namespace tern
