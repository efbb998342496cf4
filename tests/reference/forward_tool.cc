// forward-tool: drives the model side of the worker for the llama.cpp parity
// suite (tests/reference/forward.test.mjs).
//
//   forward-tool synth --preset P --out DIR --tokenizer-dir D
//                      [--seed N] [--chat-template FILE] [--max-shard-bytes N] [--no-gguf]
//                      [--gguf-f32]
//     Writes a synthetic checkpoint (and model.gguf, BF16 or F32 matrices).
//
//   forward-tool run MODEL_DIR
//     Reads JSON lines {"tokens": [...], "n_predict": N} on stdin and writes,
//     per line, {"last_logits": [...], "greedy": [...], "margins": [...]}:
//     the logits after the prompt's last token, N greedy tokens continuing the
//     prompt, and the top1 - top2 logit margin at each greedy step.
//     With "forced": [...] (N ids) the continuation appends those tokens
//     instead of its own picks (teacher forcing); "greedy" and "margins" then
//     describe our argmax after each forced prefix.
//     A bad request line gets {"error": "..."} and the tool goes on.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "nlohmann/json.hpp"
#include "worker/model.h"
#include "worker/model_config.h"
#include "worker/sampler.h"
#include "worker/synth.h"

namespace {

using nlohmann::json;
using tern::worker::Model;

int Usage() {
  std::cerr
      << "usage: forward-tool synth --preset P --out DIR --tokenizer-dir D [--seed N]\n"
         "                          [--chat-template FILE] [--max-shard-bytes N] [--no-gguf]\n"
         "                          [--gguf-f32]\n"
         "       forward-tool run MODEL_DIR < requests.jsonl\n";
  return 2;
}

int Synth(int argc, char** argv) {
  tern::worker::SynthOptions options;
  std::string out_dir, template_path;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (arg == "--preset") {
      options.preset = value();
    } else if (arg == "--out") {
      out_dir = value();
    } else if (arg == "--tokenizer-dir") {
      options.tokenizer_dir = value();
    } else if (arg == "--chat-template") {
      template_path = value();
    } else if (arg == "--seed") {
      if (!absl::SimpleAtoi(value(), &options.seed)) return Usage();
    } else if (arg == "--max-shard-bytes") {
      if (!absl::SimpleAtoi(value(), &options.max_shard_bytes)) return Usage();
    } else if (arg == "--gguf-f32") {
      options.gguf_weight_type = tern::worker::GgmlType::kF32;
    } else if (arg == "--no-gguf") {
      options.write_gguf = false;
    } else {
      return Usage();
    }
  }
  if (out_dir.empty() || options.tokenizer_dir.empty()) return Usage();
  if (!template_path.empty()) {
    auto text = tern::worker::ReadCheckpointFile(template_path);
    if (!text.ok()) {
      std::cerr << text.status() << "\n";
      return 1;
    }
    options.chat_template = *text;
  }
  options.progress = [](const std::string& line) { std::cerr << line << "\n"; };
  const absl::Status status = tern::worker::WriteSyntheticCheckpoint(options, out_dir);
  if (!status.ok()) {
    std::cerr << status << "\n";
    return 1;
  }
  return 0;
}

// top1 - top2 of the logits.
float Margin(const std::vector<float>& logits) {
  float first = -INFINITY, second = -INFINITY;
  for (float v : logits) {
    if (v > first) {
      second = first;
      first = v;
    } else if (v > second) {
      second = v;
    }
  }
  return first - second;
}

json RunRequest(const Model& model, const json& request) {
  if (!request.is_object() || !request.contains("tokens") || !request["tokens"].is_array()) {
    return {{"error", "request needs a \"tokens\" array"}};
  }
  std::vector<int32_t> tokens;
  auto to_id = [](const json& t, int32_t* id) {
    if (!t.is_number_integer()) return false;
    const int64_t v = t.get<int64_t>();
    if (v < INT32_MIN || v > INT32_MAX) return false;
    *id = static_cast<int32_t>(v);
    return true;
  };
  for (const json& t : request["tokens"]) {
    int32_t id;
    if (!to_id(t, &id)) return {{"error", "tokens must be 32-bit integers"}};
    tokens.push_back(id);
  }
  std::vector<int32_t> forced;
  if (request.contains("forced")) {
    if (!request["forced"].is_array()) return {{"error", "\"forced\" must be an array"}};
    for (const json& t : request["forced"]) {
      int32_t id;
      if (!to_id(t, &id)) return {{"error", "forced tokens must be 32-bit integers"}};
      forced.push_back(id);
    }
  }
  const int64_t n_predict = request.contains("forced") ? static_cast<int64_t>(forced.size())
                                                       : request.value("n_predict", 0);
  if (n_predict < 0 || n_predict > 4096) return {{"error", "n_predict must be in [0, 4096]"}};
  auto cache = model.NewCache(static_cast<int>(tokens.size() + n_predict + 1));
  std::vector<float> logits;
  absl::Status status = model.Forward(tokens, cache, &logits);
  if (!status.ok()) return {{"error", status.ToString()}};
  json out;
  out["last_logits"] = logits;
  std::vector<int32_t> greedy;
  std::vector<float> margins;
  tern::worker::SamplingOptions greedy_options;
  greedy_options.temperature = 0.0f;
  for (int64_t step = 0; step < n_predict; ++step) {
    margins.push_back(Margin(logits));
    std::vector<float> copy = logits;
    const int32_t next = tern::worker::SampleToken(copy, greedy_options, tokens,
                                                   static_cast<int64_t>(tokens.size()));
    greedy.push_back(next);
    const int32_t appended = forced.empty() ? next : forced[step];
    tokens.push_back(appended);
    if (step + 1 < n_predict) {
      status = model.Forward(absl::MakeConstSpan(&appended, 1), cache, &logits);
      if (!status.ok()) return {{"error", status.ToString()}};
    }
  }
  out["greedy"] = greedy;
  out["margins"] = margins;
  return out;
}

int Run(const std::string& dir) {
  auto model = Model::Load(dir);
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return 1;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    const json request = json::parse(line, nullptr, false);
    const json response =
        request.is_discarded() ? json{{"error", "line is not JSON"}} : RunRequest(**model, request);
    std::cout << response.dump() << "\n" << std::flush;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  const std::string command = argv[1];
  if (command == "synth") return Synth(argc, argv);
  if (command == "run" && argc == 3) return Run(argv[2]);
  return Usage();
}
