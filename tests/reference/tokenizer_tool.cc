// tokenizer-tool: drives gateway::Tokenizer for the reference-parity suite
// (tests/reference/tokenizer.test.mjs).
//
//   tokenizer-tool TOKENIZER_JSON
//     stdin:  one JSON object per line: {"text": "...", "add_special_tokens": bool}
//     stdout: one JSON object per input line:
//       {"ids": [...], "decoded": Decode(ids, false),
//        "decoded_skip": Decode(ids, true),
//        "incremental": the IncrementalDetokenizer's outputs concatenated,
//        "incremental_valid": whether every Append()/Flush() output was UTF-8}
//     or {"error": "..."} for a line that is not such an object.
//
//   tokenizer-tool TOKENIZER_JSON --decode
//     stdin:  {"ids": [...]} per line; stdout: the same fields as above but
//             "ids", for those ids.
//
//   tokenizer-tool TOKENIZER_JSON --bench SECONDS
//     stdin:  the same lines; the texts are encoded over and over for about
//             SECONDS, then one line is written:
//             {"bytes": N, "seconds": S, "mb_per_s": X, "load_seconds": L}
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "gateway/tokenizer/byte_level.h"
#include "gateway/tokenizer/detokenizer.h"
#include "gateway/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using tern::gateway::Tokenizer;

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

Json DecodeAll(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  tern::gateway::IncrementalDetokenizer detokenizer(tokenizer, /*skip_special_tokens=*/false);
  std::string incremental;
  bool valid = true;
  for (const int32_t id : ids) {
    const std::string piece = detokenizer.Append(id);
    valid = valid && tern::gateway::IsValidUtf8(piece);
    incremental += piece;
  }
  const std::string rest = detokenizer.Flush();
  valid = valid && tern::gateway::IsValidUtf8(rest);
  incremental += rest;

  return Json{{"decoded", tokenizer.Decode(ids, false)},
              {"decoded_skip", tokenizer.Decode(ids, true)},
              {"incremental", incremental},
              {"incremental_valid", valid}};
}

Json Process(const Tokenizer& tokenizer, const std::string& line, bool decode_mode) {
  const Json request = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (decode_mode) {
    if (!request.is_object() || !request.contains("ids") || !request["ids"].is_array()) {
      return Json{{"error", "expected {\"ids\": [int...]}"}};
    }
    std::vector<int32_t> ids;
    for (const Json& id : request["ids"]) {
      if (!id.is_number_integer()) return Json{{"error", "ids must be integers"}};
      ids.push_back(id.get<int32_t>());
    }
    return DecodeAll(tokenizer, ids);
  }
  if (!request.is_object() || !request.contains("text") || !request["text"].is_string()) {
    return Json{{"error", "expected {\"text\": string, \"add_special_tokens\": bool}"}};
  }
  const bool add_special = request.value("add_special_tokens", false);
  const std::vector<int32_t> ids =
      tokenizer.Encode(request["text"].get<std::string>(), add_special);
  Json result = DecodeAll(tokenizer, ids);
  result["ids"] = ids;
  return result;
}

int Bench(const Tokenizer& tokenizer, double seconds, double load_seconds) {
  std::vector<std::string> texts;
  std::string line;
  while (std::getline(std::cin, line)) {
    const Json request = Json::parse(line, nullptr, false);
    if (request.is_object() && request.contains("text") && request["text"].is_string()) {
      texts.push_back(request["text"].get<std::string>());
    }
  }
  size_t bytes = 0;
  size_t sink = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  do {
    for (const std::string& text : texts) {
      sink += tokenizer.Encode(text, false).size();
      bytes += text.size();
    }
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < seconds && !texts.empty());
  std::cout << Dump(Json{{"bytes", bytes},
                         {"seconds", elapsed},
                         {"mb_per_s", elapsed > 0 ? bytes / elapsed / 1e6 : 0.0},
                         {"tokens", sink},
                         {"load_seconds", load_seconds}})
            << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 2 ? argv[2] : "";
  if (!(argc == 2 || (argc == 3 && mode == "--decode") || (argc == 4 && mode == "--bench"))) {
    std::cerr << "usage: tokenizer-tool TOKENIZER_JSON [--decode | --bench SECONDS]"
                 " < requests.jsonl\n";
    return 2;
  }
  const auto load_start = Clock::now();
  auto tokenizer = Tokenizer::FromFile(argv[1]);
  if (!tokenizer.ok()) {
    std::cerr << "tokenizer-tool: " << tokenizer.status().ToString() << "\n";
    return 1;
  }
  const double load_seconds = std::chrono::duration<double>(Clock::now() - load_start).count();
  if (mode == "--bench") return Bench(**tokenizer, std::atof(argv[3]), load_seconds);

  std::ios::sync_with_stdio(false);
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    std::cout << Dump(Process(**tokenizer, line, mode == "--decode")) << "\n";
  }
  std::cout.flush();
  return 0;
}
