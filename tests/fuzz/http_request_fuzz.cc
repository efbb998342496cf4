// Fuzzes the request parsing of a gateway HTTP connection (ParseHttpRequest:
// Beast's parser under our header and body limits, then the HttpRequest the
// endpoints see). Properties: every input parses or is refused with 400, 413
// or 431; a request never carries more body than the limit allows; tighter
// limits never accept what looser ones refuse, nor change the result.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "gateway/http/api_error.h"
#include "gateway/http/http_server.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using tern::gateway::HttpRequest;
using tern::gateway::HttpServerOptions;

// Small enough that fuzzer-sized inputs reach the 413 and 431 paths.
HttpServerOptions TightLimits() {
  HttpServerOptions options;
  options.max_header_bytes = 512;
  options.max_body_bytes = 256;
  return options;
}

bool SameRequest(const HttpRequest& a, const HttpRequest& b) {
  return a.method == b.method && a.path == b.path && a.query == b.query && a.body == b.body &&
         a.authorization == b.authorization && a.routing_policy == b.routing_policy &&
         a.session_id == b.session_id && a.keep_alive == b.keep_alive;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const HttpServerOptions tight = TightLimits();
  static const HttpServerOptions defaults;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  const auto loose = tern::gateway::ParseHttpRequest(bytes, defaults);
  const auto request = tern::gateway::ParseHttpRequest(bytes, tight);
  if (!request.ok()) {
    const int status = tern::gateway::ToApiError(request.status()).http_status;
    TERN_FUZZ_CHECK(status == 400 || status == 413 || status == 431);
    return 0;
  }
  TERN_FUZZ_CHECK(request->body.size() <= static_cast<size_t>(tight.max_body_bytes));
  TERN_FUZZ_CHECK(request->path.find('?') == std::string_view::npos);
  TERN_FUZZ_CHECK(!request->method.empty());
  TERN_FUZZ_CHECK(loose.ok() && SameRequest(*request, *loose));
  return 0;
}
