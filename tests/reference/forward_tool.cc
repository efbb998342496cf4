// forward-tool: drives the model side of the worker for the llama.cpp parity
// suite (tests/reference/forward.test.mjs).
//
//   forward-tool synth --preset P --out DIR --tokenizer-dir D
//                      [--seed N] [--chat-template FILE] [--max-shard-bytes N] [--no-gguf]
//                      [--gguf-f32]
//     Writes a synthetic checkpoint (and model.gguf, BF16 or F32 matrices).
//
//   forward-tool run MODEL_DIR [--tp N] [--batch B] [--kv-mib M]
//                              [--lm-head auto|as-stored|int8]
//     Reads JSON lines {"tokens": [...], "n_predict": N} on stdin and writes,
//     per line, {"last_logits": [...], "greedy": [...], "margins": [...]}:
//     the logits after the prompt's last token, N greedy tokens continuing the
//     prompt, and the top1 - top2 logit margin at each greedy step.
//     With "forced": [...] (N ids) the continuation appends those tokens
//     instead of its own picks (teacher forcing); "greedy" and "margins" then
//     describe our argmax after each forced prefix.
//     A bad request line gets {"error": "..."} and the tool goes on.
//     The requests run through the worker's Executor with N tensor-parallel
//     ranks, B sequences at a time (in input order): each step carries every
//     unfinished sequence's next tokens (prompt chunks and decode tokens
//     mixed, up to the executor's token budget), as the engine batches them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "cli/model/synth.h"
#include "nlohmann/json.hpp"
#include "worker/model/executor.h"
#include "worker/model/model.h"
#include "worker/model/model_config.h"
#include "worker/model/sampler.h"

namespace {

using nlohmann::json;
using tern::worker::Executor;
using tern::worker::Model;
using tern::worker::StepSequence;

int Usage() {
  std::cerr
      << "usage: forward-tool synth --preset P --out DIR --tokenizer-dir D [--seed N]\n"
         "                          [--chat-template FILE] [--max-shard-bytes N] [--no-gguf]\n"
         "                          [--gguf-f32]\n"
         "       forward-tool run MODEL_DIR [--tp N] [--batch B] [--kv-mib M]\n"
         "                            [--lm-head auto|as-stored|int8] < requests.jsonl\n";
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
float Margin(absl::Span<const float> logits) {
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

// One request line and, once run, its response.
struct Request {
  std::vector<int32_t> tokens;  // the prompt, then each appended token
  std::vector<int32_t> forced;
  bool has_forced = false;
  int64_t n_predict = 0;
  json response;  // an error when parsing failed
  // While running.
  int32_t computed = 0;
  int64_t steps = 0;
  bool done = false;
  std::vector<int32_t> blocks;
  std::vector<int32_t> greedy;
  std::vector<float> margins;
};

Request ParseRequest(const json& request) {
  Request r;
  if (!request.is_object() || !request.contains("tokens") || !request["tokens"].is_array()) {
    r.response = {{"error", "request needs a \"tokens\" array"}};
    return r;
  }
  auto to_id = [](const json& t, int32_t* id) {
    if (!t.is_number_integer()) return false;
    const int64_t v = t.get<int64_t>();
    if (v < INT32_MIN || v > INT32_MAX) return false;
    *id = static_cast<int32_t>(v);
    return true;
  };
  for (const json& t : request["tokens"]) {
    int32_t id;
    if (!to_id(t, &id)) {
      r.response = {{"error", "tokens must be 32-bit integers"}};
      return r;
    }
    r.tokens.push_back(id);
  }
  if (request.contains("forced")) {
    r.has_forced = true;
    if (!request["forced"].is_array()) {
      r.response = {{"error", "\"forced\" must be an array"}};
      return r;
    }
    for (const json& t : request["forced"]) {
      int32_t id;
      if (!to_id(t, &id)) {
        r.response = {{"error", "forced tokens must be 32-bit integers"}};
        return r;
      }
      r.forced.push_back(id);
    }
  }
  const json& n = request.contains("n_predict") ? request["n_predict"] : json(0);
  r.n_predict = r.has_forced ? static_cast<int64_t>(r.forced.size())
                             : (n.is_number_integer() ? n.get<int64_t>() : -1);
  if (r.n_predict < 0 || r.n_predict > 4096) {
    r.response = {{"error", "n_predict must be in [0, 4096]"}};
  } else if (r.tokens.empty()) {
    r.response = {{"error", "no tokens to run"}};
  }
  return r;
}

// Runs `group` together, as an engine would: every step carries each
// unfinished sequence's next tokens (a prompt chunk, or the one token
// appended after its last logits) within the executor's token budget.
void RunGroup(Executor& executor, std::vector<Request*> group) {
  const int32_t vocab = executor.config().vocab_size;
  const int32_t block_size = executor.block_size();
  // Blocks are handed out from the top of the pool down, so tables are not
  // the identity.
  std::vector<int32_t> free_blocks(executor.num_blocks());
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  auto fail = [](Request* r, const std::string& message) {
    r->response = {{"error", message}};
    r->done = true;
  };
  std::vector<StepSequence> batch;
  std::vector<Request*> in_batch;
  std::vector<float> logits;
  while (true) {
    batch.clear();
    in_batch.clear();
    int64_t budget = executor.max_batch_tokens();
    for (Request* r : group) {
      if (r->done || budget == 0) continue;
      const int64_t pending = static_cast<int64_t>(r->tokens.size()) - r->computed;
      const int32_t n = static_cast<int32_t>(std::min(pending, budget));
      const size_t end = static_cast<size_t>(r->computed) + n;
      while (r->blocks.size() * block_size < end) {
        if (free_blocks.empty()) break;
        r->blocks.push_back(free_blocks.back());
        free_blocks.pop_back();
      }
      if (r->blocks.size() * block_size < end) {
        fail(r, "the KV pool is too small for the batch (raise --kv-mib)");
        continue;
      }
      budget -= n;
      batch.push_back({absl::MakeConstSpan(r->tokens).subspan(r->computed, n), r->computed,
                       r->blocks, end == r->tokens.size()});
      in_batch.push_back(r);
    }
    if (batch.empty()) break;
    int64_t rows = 0;
    for (const StepSequence& s : batch) rows += s.want_logits ? 1 : 0;
    logits.resize(static_cast<size_t>(rows) * vocab);
    const absl::Status status = executor.Step(batch, absl::MakeSpan(logits));
    int64_t row = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      Request* r = in_batch[i];
      if (!status.ok()) {
        fail(r, status.ToString());
        continue;
      }
      r->computed += static_cast<int32_t>(batch[i].tokens.size());
      if (!batch[i].want_logits) continue;
      absl::Span<const float> l(logits.data() + row++ * vocab, vocab);
      if (r->steps == 0) r->response["last_logits"] = std::vector<float>(l.begin(), l.end());
      if (r->steps == r->n_predict) {
        r->done = true;
        continue;
      }
      r->margins.push_back(Margin(l));
      std::vector<float> copy(l.begin(), l.end());
      tern::worker::SamplingOptions greedy_options;
      greedy_options.temperature = 0.0f;
      const int32_t next = tern::worker::SampleToken(copy, greedy_options, r->tokens,
                                                     static_cast<int64_t>(r->tokens.size()));
      r->greedy.push_back(next);
      r->tokens.push_back(r->has_forced ? r->forced[r->steps] : next);
      if (++r->steps == r->n_predict) r->done = true;
    }
  }
  for (Request* r : group) {
    if (r->response.contains("error")) continue;
    r->response["greedy"] = r->greedy;
    r->response["margins"] = r->margins;
  }
}

int Run(int argc, char** argv) {
  const std::string dir = argv[2];
  tern::worker::ExecutorOptions options;
  int64_t batch = 1, kv_mib = 64;
  for (int i = 3; i < argc; ++i) {
    const std::string arg = argv[i];
    const char* value = i + 1 < argc ? argv[++i] : "";
    bool ok = false;
    if (arg == "--tp") {
      ok = absl::SimpleAtoi(value, &options.tp);
    } else if (arg == "--batch") {
      ok = absl::SimpleAtoi(value, &batch) && batch >= 1;
    } else if (arg == "--kv-mib") {
      ok = absl::SimpleAtoi(value, &kv_mib) && kv_mib >= 1;
    } else if (arg == "--lm-head") {
      auto format = tern::worker::ParseLmHeadFormat(value);
      ok = format.ok();
      if (ok) options.lm_head = *format;
    }
    if (!ok) return Usage();
  }
  options.kv_cache_bytes = kv_mib << 20;
  auto model = Model::Load(dir);
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return 1;
  }
  auto executor = Executor::Create(model->get(), options);
  if (!executor.ok()) {
    std::cerr << executor.status() << "\n";
    return 1;
  }
  // All lines first: requests run `batch` at a time, answers keep their order.
  std::vector<Request> requests;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    const json request = json::parse(line, nullptr, false);
    if (request.is_discarded()) {
      requests.emplace_back().response = {{"error", "line is not JSON"}};
    } else {
      requests.push_back(ParseRequest(request));
    }
  }
  std::vector<Request*> group;
  for (size_t i = 0; i <= requests.size(); ++i) {
    if (i == requests.size() || static_cast<int64_t>(group.size()) == batch) {
      RunGroup(**executor, group);
      group.clear();
    }
    if (i < requests.size() && !requests[i].response.contains("error")) {
      group.push_back(&requests[i]);
    }
  }
  for (const Request& r : requests) std::cout << r.response.dump() << "\n";
  std::cout << std::flush;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  const std::string command = argv[1];
  if (command == "synth") return Synth(argc, argv);
  if (command == "run" && argc >= 3) return Run(argc, argv);
  return Usage();
}
