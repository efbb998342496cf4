// chat-template-tool: drives gateway::ChatTemplate for the reference-parity
// suite (tests/reference/chat_template.test.mjs).
//
//   chat-template-tool TEMPLATE_FILE
//     stdin:  one JSON object per line, the render context
//             ({"messages": [...], "bos_token": "...", ...})
//     stdout: one JSON object per input line:
//             {"ok": true, "text": "..."} or {"ok": false, "error": "..."}
//
// A template that does not compile makes every line an error carrying the
// compile error. Exit status 2 when the template file cannot be read.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "gateway/chat_template/chat_template.h"
#include "nlohmann/json.hpp"

namespace {

using Json = nlohmann::ordered_json;

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

Json Error(std::string_view message) {
  return Json{{"ok", false}, {"error", std::string(message)}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: chat-template-tool TEMPLATE_FILE < contexts.jsonl\n";
    return 2;
  }
  std::ifstream file(argv[1], std::ios::binary);
  if (!file) {
    std::cerr << "cannot read " << argv[1] << "\n";
    return 2;
  }
  std::stringstream source;
  source << file.rdbuf();
  const auto compiled = tern::gateway::ChatTemplate::Compile(source.str());

  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    if (!compiled.ok()) {
      std::cout << Dump(Error(std::string(compiled.status().message()))) << "\n";
      continue;
    }
    const Json context = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (context.is_discarded()) {
      std::cout << Dump(Error("input line is not JSON")) << "\n";
      continue;
    }
    const auto text = compiled->Render(context);
    if (text.ok()) {
      std::cout << Dump(Json{{"ok", true}, {"text", *text}}) << "\n";
    } else {
      std::cout << Dump(Error(std::string(text.status().message()))) << "\n";
    }
  }
  return 0;
}
