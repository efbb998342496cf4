// Fuzzes the chat-template engine, in two modes picked by the first byte:
//   odd ('1'):  the rest is a template, optionally followed by a NUL byte and
//               a JSON context object; the template is compiled and rendered
//               (with a small default conversation when no context is given);
//   even ('0'): the rest is a JSON context, rendered by the Llama 3.1 Instruct
//               template from deploy/chat_templates.
// Properties: compiling and rendering end with a value or with the documented
// error codes (InvalidArgument, ResourceExhausted), never a crash or a hang.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "gateway/chat_template/chat_template.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_check.h"

namespace {

using tern::gateway::ChatTemplate;
using Json = nlohmann::ordered_json;

const ChatTemplate* g_llama31 = nullptr;

const Json& DefaultContext() {
  static const Json* context = new Json(Json::parse(R"({
    "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_generation_prompt": true,
    "messages": [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": "What is 2+2?"},
                 {"role": "assistant", "content": "4"},
                 {"role": "user", "content": "And 3+3?"}]})"));
  return *context;
}

void CheckStatus(const absl::Status& status) {
  TERN_FUZZ_CHECK(absl::IsInvalidArgument(status) || absl::IsResourceExhausted(status));
}

void Render(const ChatTemplate& chat_template, const Json& context) {
  const absl::StatusOr<std::string> text = chat_template.Render(context);
  if (!text.ok()) CheckStatus(text.status());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  std::ifstream in(std::string(TERN_SOURCE_DIR) + "/deploy/chat_templates/llama-3.1-instruct.jinja",
                   std::ios::binary);
  std::stringstream source;
  source << in.rdbuf();
  absl::StatusOr<ChatTemplate> llama31 = ChatTemplate::Compile(source.str());
  if (!in || !llama31.ok()) {
    std::fprintf(stderr, "chat_template_fuzz: cannot compile the Llama 3.1 template\n");
    std::exit(1);
  }
  g_llama31 = new ChatTemplate(*std::move(llama31));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 1) == 0) {
    Json context = Json::parse(input, nullptr, /*allow_exceptions=*/false);
    if (context.is_discarded()) return 0;
    Render(*g_llama31, context);
    return 0;
  }
  const size_t nul = input.find('\0');
  const absl::StatusOr<ChatTemplate> chat_template = ChatTemplate::Compile(input.substr(0, nul));
  if (!chat_template.ok()) {
    CheckStatus(chat_template.status());
    return 0;
  }
  if (nul == std::string_view::npos) {
    Render(*chat_template, DefaultContext());
    return 0;
  }
  Json context = Json::parse(input.substr(nul + 1), nullptr, /*allow_exceptions=*/false);
  if (!context.is_discarded()) Render(*chat_template, context);
  return 0;
}
