#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

namespace tern {
namespace {

std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_component_mu;
std::string g_component = "tern";

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarning:
      return "WARN";
    case LogLevel::kError:
      return "ERROR";
  }
  return "INFO";
}

std::string Timestamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(millis));
  return buf;
}

}  // namespace

void InitLogging(const std::string& component, LogLevel min_level) {
  std::lock_guard<std::mutex> lock(g_component_mu);
  g_component = component;
  g_min_level.store(static_cast<int>(min_level));
}

LogLevel ParseLogLevel(const std::string& name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "warning" || name == "warn") return LogLevel::kWarning;
  if (name == "error") return LogLevel::kError;
  return LogLevel::kInfo;
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_min_level.load(); }

void WriteLogLine(LogLevel level, const std::string& message) {
  std::string component;
  {
    std::lock_guard<std::mutex> lock(g_component_mu);
    component = g_component;
  }
  std::string line =
      std::string(LevelName(level)) + " " + Timestamp() + " " + component + ": " + message + "\n";
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

namespace internal {

FatalMessage::FatalMessage(const char* file, int line, const char* cond) {
  stream_ << file << ":" << line << ": check failed: " << cond << " ";
}

FatalMessage::~FatalMessage() {
  WriteLogLine(LogLevel::kError, stream_.str());
  std::abort();
}

}  // namespace internal
}  // namespace tern
