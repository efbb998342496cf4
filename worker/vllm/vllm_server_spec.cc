#include "worker/vllm/vllm_server_spec.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tern::worker::vllm {
namespace {

absl::Status CheckEndpoint(absl::string_view key, absl::string_view value) {
  if (!absl::StartsWith(value, "tcp://") && !absl::StartsWith(value, "ipc://")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vLLM server ", key, "= must be a tcp:// or ipc:// endpoint, got \"", value, "\""));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<VllmServerSpec> ParseVllmServerSpec(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ',');
  VllmServerSpec spec;
  absl::string_view url = parts[0];
  if (!absl::ConsumePrefix(&url, "http://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("a vLLM server is named by an http:// URL first, got \"", parts[0], "\""));
  }
  url = url.substr(0, url.find('/'));
  absl::string_view host;
  absl::string_view port;
  if (absl::StartsWith(url, "[")) {
    const size_t close = url.find(']');
    if (close == absl::string_view::npos || close + 1 >= url.size() || url[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("bad vLLM server URL \"", parts[0], "\""));
    }
    host = url.substr(1, close - 1);
    port = url.substr(close + 2);
  } else {
    const size_t colon = url.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("the vLLM server URL \"", parts[0], "\" needs a port"));
    }
    host = url.substr(0, colon);
    port = url.substr(colon + 1);
  }
  uint32_t port_number = 0;
  if (host.empty() || !absl::SimpleAtoi(port, &port_number) || port_number == 0 ||
      port_number > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad vLLM server URL \"", parts[0], "\""));
  }
  spec.host = std::string(host);
  spec.port = static_cast<uint16_t>(port_number);
  spec.url = absl::StrCat("http://", url);
  for (size_t i = 1; i < parts.size(); ++i) {
    const size_t eq = parts[i].find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("vLLM server option \"", parts[i], "\" is not KEY=VALUE"));
    }
    const absl::string_view key = parts[i].substr(0, eq);
    const absl::string_view value = parts[i].substr(eq + 1);
    if (key == "events") {
      if (absl::Status s = CheckEndpoint(key, value); !s.ok()) return s;
      spec.events = std::string(value);
    } else if (key == "replay") {
      if (absl::Status s = CheckEndpoint(key, value); !s.ok()) return s;
      spec.replay = std::string(value);
    } else if (key == "model") {
      spec.model = std::string(value);
    } else if (key == "topic") {
      spec.topic = std::string(value);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown vLLM server option \"", key, "\" (events, replay, model, topic)"));
    }
  }
  if (!spec.replay.empty() && spec.events.empty()) {
    return absl::InvalidArgumentError("a vLLM server with replay= needs events= too");
  }
  return spec;
}

std::string FormatVllmServerSpec(const VllmServerSpec& spec) {
  std::string out = spec.url;
  if (!spec.events.empty()) absl::StrAppend(&out, ",events=", spec.events);
  if (!spec.replay.empty()) absl::StrAppend(&out, ",replay=", spec.replay);
  if (!spec.model.empty()) absl::StrAppend(&out, ",model=", spec.model);
  if (!spec.topic.empty()) absl::StrAppend(&out, ",topic=", spec.topic);
  return out;
}

}  // namespace tern::worker::vllm
