#include "cli/bench/bench_load.h"

#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdio>
#include <memory>
#include <random>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace tern::cli {
namespace asio = boost::asio;
namespace {

using Clock = std::chrono::steady_clock;

// Shared by the coroutines of one run; they all run on one thread.
struct RunState {
  const Workload* workload = nullptr;
  const LoadOptions* options = nullptr;
  Clock::time_point origin;
  std::vector<RequestRecord> records;
  size_t next_session = 0;
  size_t sessions_done = 0;
  double last_end = 0;
  asio::io_context* io = nullptr;
};

double SecondsSince(Clock::time_point origin) {
  return std::chrono::duration<double>(Clock::now() - origin).count();
}

asio::awaitable<void> RunSession(RunState& st, StreamConnection& connection, size_t index) {
  const Session& session = st.workload->sessions[index];
  std::vector<std::string> answers;
  StreamRequest request;
  request.path = st.options->chat ? "/v1/chat/completions" : "/v1/completions";
  if (!st.options->policy.empty()) {
    request.headers.emplace_back("x-tern-routing-policy", st.options->policy);
  }
  for (size_t turn = 0; turn < session.user_messages.size(); ++turn) {
    request.body = RequestBody(*st.options, *st.workload, session, turn, answers);
    RequestRecord record = co_await connection.Send(request, st.options->request_timeout);
    st.last_end = std::max(st.last_end, record.end);
    const bool ok = record.ok;
    answers.push_back(record.text);
    st.records.push_back(std::move(record));
    if (!ok) {
      for (size_t rest = turn + 1; rest < session.user_messages.size(); ++rest) {
        RequestRecord skipped;
        skipped.error = "earlier turn failed";
        st.records.push_back(std::move(skipped));
      }
      break;
    }
  }
  if (++st.sessions_done == st.workload->sessions.size()) st.io->stop();
}

// Closed loop: one slot keeps one connection and takes sessions in order.
asio::awaitable<void> RunSlot(RunState& st) {
  StreamConnection connection(co_await asio::this_coro::executor, st.options->endpoint, st.origin);
  while (st.next_session < st.workload->sessions.size()) {
    co_await RunSession(st, connection, st.next_session++);
  }
}

asio::awaitable<void> RunArrival(RunState& st, size_t index) {
  StreamConnection connection(co_await asio::this_coro::executor, st.options->endpoint, st.origin);
  co_await RunSession(st, connection, index);
}

// Open loop: sessions start at Poisson arrivals.
asio::awaitable<void> RunArrivals(RunState& st) {
  auto executor = co_await asio::this_coro::executor;
  std::mt19937_64 rng(st.options->seed);
  std::exponential_distribution<double> gap(st.options->request_rate);
  asio::steady_timer timer(executor);
  Clock::time_point at = Clock::now();
  for (size_t i = 0; i < st.workload->sessions.size(); ++i) {
    if (i > 0) {
      at += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
      timer.expires_at(at);
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    asio::co_spawn(executor, RunArrival(st, i), asio::detached);
  }
}

asio::awaitable<void> ReportProgress(RunState& st, int64_t total) {
  const bool tty = isatty(STDERR_FILENO);
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (int tick = 1;; ++tick) {
    timer.expires_after(std::chrono::milliseconds(500));
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!tty && tick % 20 != 0) continue;
    std::fprintf(stderr, "%s[tern bench] %zu/%lld requests done, %.1f s%s", tty ? "\r" : "",
                 st.records.size(), static_cast<long long>(total), SecondsSince(st.origin),
                 tty ? "" : "\n");
    std::fflush(stderr);
  }
}

}  // namespace

std::string RequestBody(const LoadOptions& options, const Workload& workload,
                        const Session& session, size_t turn,
                        const std::vector<std::string>& answers) {
  nlohmann::json body = {
      {"model", options.model}, {"max_tokens", workload.output_len},
      {"ignore_eos", true},     {"temperature", 0},
      {"stream", true},         {"stream_options", {{"include_usage", true}}},
  };
  if (options.chat) {
    body["messages"] = nlohmann::json::parse(ChatMessagesJson(session, turn, answers));
  } else {
    body["prompt"] = session.user_messages.at(turn);
  }
  return body.dump();
}

absl::StatusOr<LoadResult> RunLoad(const Workload& workload, const LoadOptions& options) {
  if (options.request_rate < 0) return absl::InvalidArgumentError("--request-rate must be >= 0");
  if (options.request_rate == 0 && options.concurrency <= 0) {
    return absl::InvalidArgumentError("--concurrency must be positive");
  }
  const int64_t total = workload.num_requests();
  LoadResult result;
  if (workload.sessions.empty()) return result;
  RunState st;
  asio::io_context io;
  st.workload = &workload;
  st.options = &options;
  st.io = &io;
  st.origin = Clock::now();
  if (options.request_rate > 0) {
    asio::co_spawn(io, RunArrivals(st), asio::detached);
  } else {
    const size_t slots = std::min<size_t>(options.concurrency, workload.sessions.size());
    for (size_t i = 0; i < slots; ++i) asio::co_spawn(io, RunSlot(st), asio::detached);
  }
  if (options.progress) asio::co_spawn(io, ReportProgress(st, total), asio::detached);
  asio::steady_timer deadline(io, options.run_timeout);
  deadline.async_wait([&io](boost::system::error_code ec) {
    if (!ec) io.stop();
  });
  io.run();
  if (options.progress) std::fprintf(stderr, "%s", isatty(STDERR_FILENO) ? "\n" : "");
  result.duration_s = st.last_end;
  while (static_cast<int64_t>(st.records.size()) < total) {
    RequestRecord unfinished;
    unfinished.error = "run timeout";
    st.records.push_back(std::move(unfinished));
  }
  result.records = std::move(st.records);
  return result;
}

}  // namespace tern::cli
