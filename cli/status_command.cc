#include "cli/status_command.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/flags.h"
#include "common/grpc_tls.h"
#include "tern/v1/router.grpc.pb.h"

namespace tern::cli {
namespace {

constexpr char kUsage[] =
    "usage: tern status [--router 127.0.0.1:50051] [--timeout-ms 2000]\n"
    "                   [--mtls-ca-file F --mtls-cert-file F --mtls-key-file F]\n"
    "  The workers the router knows, their health, load and prefix cache. A router\n"
    "  with mutual TLS (tern.yaml's tls: section) needs a client certificate of its CA\n"
    "  (`tern up --tls` prints where its client certificate is).\n";

std::string Percent(int64_t part, int64_t whole) {
  return whole > 0 ? absl::StrFormat("%.1f%%",
                                     100.0 * static_cast<double>(part) / static_cast<double>(whole))
                   : std::string("-");
}

}  // namespace

std::string FormatClusterState(const tern::v1::ClusterStateResponse& state) {
  // HIT RATE: prompt tokens the worker found cached over those routed to it;
  // PREDICTED: what the router's prefix index expected.
  const std::vector<std::string> header = {"WORKER",   "HEALTH",   "MODEL",     "RUN/WAIT",
                                           "INFLIGHT", "KV FREE",  "CACHED",    "CIRCUIT",
                                           "STREAM",   "HIT RATE", "PREDICTED", "DETAIL"};
  std::vector<std::vector<std::string>> rows = {header};
  for (const tern::v1::WorkerStatus& w : state.workers()) {
    rows.push_back({
        w.address(),
        w.healthy() ? "healthy" : "UNHEALTHY",
        w.model_id().empty() ? "-" : w.model_id(),
        absl::StrCat(w.load().running_seqs(), "/", w.load().waiting_seqs()),
        absl::StrCat(w.inflight()),
        absl::StrCat(w.load().free_kv_blocks()),
        absl::StrCat(w.cached_blocks()),
        w.circuit().empty() ? "-" : w.circuit(),
        w.state_stream() ? "in sync" : "-",
        Percent(w.reported_cached_tokens(), w.routed_prompt_tokens()),
        Percent(w.predicted_cached_tokens(), w.routed_prompt_tokens()),
        w.detail().empty() ? "-" : w.detail(),
    });
  }
  std::vector<size_t> widths(header.size(), 0);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) {
      // The last column is free text: no padding after it.
      absl::StrAppend(&out,
                      c + 1 < row.size() ? absl::StrFormat("%-*s  ", widths[c], row[c]) : row[c]);
    }
    out += "\n";
  }
  const int healthy = static_cast<int>(std::count_if(state.workers().begin(), state.workers().end(),
                                                     [](const auto& w) { return w.healthy(); }));
  absl::StrAppend(&out, state.workers_size(), " workers (", healthy, " healthy), ",
                  state.queued_requests(), " requests queued in the router, policy ",
                  state.policy().empty() ? "-" : state.policy(), ", ", state.index_resyncs(),
                  " index resyncs\n");
  return out;
}

int RunStatus(int argc, char** argv) {
  absl::StatusOr<Flags> flags = Flags::Parse(
      argc, argv, 1, {"router", "timeout-ms", "mtls-ca-file", "mtls-cert-file", "mtls-key-file"},
      {"help"});
  if (!flags.ok()) {
    std::cerr << "tern status: " << flags.status().message() << "\n" << kUsage;
    return 2;
  }
  if (flags->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  absl::StatusOr<std::optional<int64_t>> timeout_ms = flags->GetInt("timeout-ms");
  if (!timeout_ms.ok() || timeout_ms->value_or(2000) <= 0) {
    std::cerr << "tern status: --timeout-ms must be a positive integer\n";
    return 2;
  }
  const std::string address = flags->GetOr("router", "127.0.0.1:50051");
  TlsSection tls;
  tls.ca_file = flags->GetOr("mtls-ca-file", "");
  tls.cert_file = flags->GetOr("mtls-cert-file", "");
  tls.key_file = flags->GetOr("mtls-key-file", "");
  if (absl::Status files = CheckTlsFiles(tls); !files.ok() ||
                                               tls.ca_file.empty() != tls.cert_file.empty() ||
                                               tls.cert_file.empty() != tls.key_file.empty()) {
    std::cerr << "tern status: "
              << (files.ok() ? "--mtls-ca-file, --mtls-cert-file and --mtls-key-file go together"
                             : files.message())
              << "\n";
    return 2;
  }
  auto stub = tern::v1::Router::NewStub(ChannelSecurity(tls).CreateChannel(address));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(timeout_ms->value_or(2000)));
  tern::v1::ClusterStateResponse state;
  const grpc::Status status = stub->ClusterState(&context, tern::v1::ClusterStateRequest(), &state);
  if (!status.ok()) {
    std::cerr << "tern status: router " << address << ": " << status.error_message() << "\n";
    return 1;
  }
  std::cout << "router " << address << "\n" << FormatClusterState(state);
  return 0;
}

}  // namespace tern::cli
