// A small structured logging facade (Abseil 20220623 has no absl/log).
// Lines go to stderr as `LEVEL time component: message key=value...`.
// Thread-safe: each line is written with a single write().
#ifndef TERN_COMMON_LOG_H_
#define TERN_COMMON_LOG_H_

#include <sstream>
#include <string>

namespace tern {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Sets the process-wide minimum level and the component name printed on each line.
void InitLogging(const std::string& component, LogLevel min_level = LogLevel::kInfo);
// Parses "debug", "info", "warning", "error"; unknown names give kInfo.
LogLevel ParseLogLevel(const std::string& name);
bool LogEnabled(LogLevel level);
void WriteLogLine(LogLevel level, const std::string& message);

namespace internal {
class LogMessage {
 public:
  explicit LogMessage(LogLevel level) : level_(level) {}
  ~LogMessage() { WriteLogLine(level_, stream_.str()); }
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};
}  // namespace internal

}  // namespace tern

// A one-pass `for` instead of if/else: safe inside an unbraced if.
#define TERN_LOG(level)                                                                  \
  for (bool tern_log_on_ = ::tern::LogEnabled(::tern::LogLevel::k##level); tern_log_on_; \
       tern_log_on_ = false)                                                             \
  ::tern::internal::LogMessage(::tern::LogLevel::k##level).stream()

// Aborts with a message: for impossible states only, never for request data.
#define TERN_CHECK(cond)                                       \
  for (bool tern_check_failed_ = !(cond); tern_check_failed_;) \
  ::tern::internal::FatalMessage(__FILE__, __LINE__, #cond).stream()

namespace tern::internal {
class FatalMessage {
 public:
  FatalMessage(const char* file, int line, const char* cond);
  [[noreturn]] ~FatalMessage();
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};
}  // namespace tern::internal

#endif  // TERN_COMMON_LOG_H_
