#include "gateway/http/host_port.h"

#include "absl/strings/str_cat.h"

namespace tern::gateway {

absl::StatusOr<HostPort> ParseHostPort(std::string_view text) {
  auto invalid = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid address '", absl::string_view(text.data(), text.size()), "': expected HOST:PORT"));
  };
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return invalid();
  std::string_view host = text.substr(0, colon);
  const std::string_view port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return invalid();  // an IPv6 literal needs brackets
  }
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string_view::npos) {
    return invalid();
  }
  const int value = std::stoi(std::string(port));
  if (value > 65535) return invalid();
  HostPort address;
  address.host = host.empty() ? "0.0.0.0" : std::string(host);
  address.port = static_cast<uint16_t>(value);
  return address;
}

std::string FormatHostPort(const HostPort& address) {
  if (address.host.find(':') != std::string::npos)
    return absl::StrCat("[", address.host, "]:", address.port);
  return absl::StrCat(address.host, ":", address.port);
}

}  // namespace tern::gateway
