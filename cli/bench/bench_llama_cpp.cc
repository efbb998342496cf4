#include "cli/bench/bench_llama_cpp.h"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace tern::cli {
absl::StatusOr<LlamaCppFigures> ParseLlamaCppResult(const std::string& json_line) {
  try {
    const auto json = nlohmann::json::parse(json_line);
    LlamaCppFigures figures;
    const auto& info = json.at("llama_cpp");
    figures.build = absl::StrCat("llama.cpp ", info.value("release", "?"), " (",
                                 info.value("repo", "?"), "), ", info.value("build_type", "?"),
                                 " binary, node-llama-cpp ", info.value("node_llama_cpp", "?"));
    figures.system_info = info.value("system_info", "");
    for (const auto& [key, value] : json.at("prefill").items()) {
      figures.prefill_tokens_per_s[std::stoi(key)] = value.get<double>();
    }
    for (const auto& [key, value] : json.at("decode").items()) {
      figures.decode_tokens_per_s[std::stoi(key)] =
          value.is_null() ? std::nullopt : std::optional<double>(value.get<double>());
    }
    if (json.contains("errors")) {
      for (const auto& [key, value] : json.at("errors").items()) {
        figures.errors[key] = value.get<std::string>();
      }
    }
    return figures;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("bad llama.cpp result line: ", e.what()));
  }
}

absl::StatusOr<LlamaCppFigures> RunLlamaCppBench(const LlamaCppBenchOptions& options) {
  std::vector<std::string> args = {options.node,      options.script,
                                   "--model",         options.gguf,
                                   "--threads",       std::to_string(options.threads),
                                   "--prefill",       absl::StrJoin(options.prefill_lengths, ","),
                                   "--batches",       absl::StrJoin(options.decode_batches, ","),
                                   "--decode-prompt", std::to_string(options.decode_prompt),
                                   "--decode-steps",  std::to_string(options.decode_steps)};
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  int out[2];
  if (pipe(out) != 0) return absl::UnavailableError("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  posix_spawn_file_actions_addclose(&actions, out[1]);
  pid_t pid = -1;
  const int spawned =
      posix_spawnp(&pid, options.node.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (spawned != 0) {
    close(out[0]);
    return absl::UnavailableError(
        absl::StrCat("cannot start ", options.node, ": ", std::strerror(spawned)));
  }

  std::string output;
  const absl::Time deadline = absl::Now() + options.timeout;
  bool timed_out = false;
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      timed_out = true;
      break;
    }
    pollfd fd{out[0], POLLIN, 0};
    const int ready = poll(
        &fd, 1, static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1000)));
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    char buf[4096];
    const ssize_t n = read(out[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    output.append(buf, static_cast<size_t>(n));
  }
  close(out[0]);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat("llama.cpp benchmark not finished after ",
                                                    absl::FormatDuration(options.timeout)));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::UnavailableError(
        absl::StrCat("the llama.cpp benchmark failed (",
                     WIFEXITED(status) ? absl::StrCat("exit status ", WEXITSTATUS(status))
                                       : absl::StrCat("signal ", WTERMSIG(status)),
                     "); its messages are above"));
  }
  while (!output.empty() && (output.back() == '\n' || output.back() == '\r')) output.pop_back();
  const size_t last_line = output.rfind('\n');
  return ParseLlamaCppResult(last_line == std::string::npos ? output
                                                            : output.substr(last_line + 1));
}

}  // namespace tern::cli
