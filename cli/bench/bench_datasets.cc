#include "cli/bench/bench_datasets.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace tern::cli {
namespace {

// "Ġ" (U+0120, the byte-level alphabet's space) in UTF-8.
constexpr absl::string_view kSpaceMark = "\xC4\xA0";

bool IsPlainWord(absl::string_view token) {
  if (token.size() < kSpaceMark.size() + 2 || token.size() > kSpaceMark.size() + 12) return false;
  if (token.substr(0, kSpaceMark.size()) != kSpaceMark) return false;
  for (char c : token.substr(kSpaceMark.size())) {
    if (c < 'a' || c > 'z') return false;
  }
  return true;
}

}  // namespace

PromptSynthesizer::PromptSynthesizer(std::unique_ptr<gateway::Tokenizer> tokenizer)
    : tokenizer_(std::move(tokenizer)) {
  for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
    if (!tokenizer_->IsSpecial(id) && IsPlainWord(tokenizer_->TokenString(id))) {
      word_ids_.push_back(id);
    }
  }
}

absl::StatusOr<std::unique_ptr<PromptSynthesizer>> PromptSynthesizer::FromTokenizerFile(
    const std::string& tokenizer_json) {
  TERN_ASSIGN_OR_RETURN(std::unique_ptr<gateway::Tokenizer> tokenizer,
                        gateway::Tokenizer::FromFile(tokenizer_json));
  return FromTokenizer(std::move(tokenizer));
}

absl::StatusOr<std::unique_ptr<PromptSynthesizer>> PromptSynthesizer::FromTokenizer(
    std::unique_ptr<gateway::Tokenizer> tokenizer) {
  std::unique_ptr<PromptSynthesizer> synthesizer(new PromptSynthesizer(std::move(tokenizer)));
  if (synthesizer->word_ids_.size() < 1000) {
    return absl::FailedPreconditionError(
        absl::StrCat("the tokenizer has only ", synthesizer->word_ids_.size(),
                     " plain ' word' tokens; prompts of exact lengths need a Llama-3-style BPE"));
  }
  return synthesizer;
}

absl::StatusOr<std::string> PromptSynthesizer::Text(int32_t tokens, std::mt19937_64& rng) const {
  std::uniform_int_distribution<size_t> pick(0, word_ids_.size() - 1);
  std::string text;
  for (int32_t i = 0; i < tokens; ++i) text += tokenizer_->TokenBytes(word_ids_[pick(rng)]);
  const int32_t got = CountTokens(text);
  if (got != tokens) {
    return absl::InternalError(
        absl::StrCat("a text of ", tokens, " words re-encoded to ", got, " tokens"));
  }
  return text;
}

int32_t PromptSynthesizer::CountTokens(absl::string_view text) const {
  return static_cast<int32_t>(
      tokenizer_->Encode(std::string_view(text.data(), text.size()), false).size());
}

absl::StatusOr<DatasetKind> ParseDatasetKind(absl::string_view name) {
  if (name == "random") return DatasetKind::kRandom;
  if (name == "shared-prefix") return DatasetKind::kSharedPrefix;
  if (name == "multi-turn") return DatasetKind::kMultiTurn;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dataset '", name, "' (random, shared-prefix, multi-turn)"));
}

const char* DatasetKindName(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::kRandom:
      return "random";
    case DatasetKind::kSharedPrefix:
      return "shared-prefix";
    case DatasetKind::kMultiTurn:
      return "multi-turn";
  }
  return "?";
}

int64_t Workload::num_requests() const {
  int64_t n = 0;
  for (const Session& s : sessions) n += static_cast<int64_t>(s.user_messages.size());
  return n;
}

absl::StatusOr<Workload> BuildWorkload(const DatasetOptions& options,
                                       const PromptSynthesizer& synthesizer) {
  if (options.output_len <= 0) return absl::InvalidArgumentError("--output-len must be positive");
  std::mt19937_64 rng(options.seed);
  Workload workload;
  workload.kind = options.kind;
  workload.output_len = options.output_len;
  auto add_message = [&](Session& session, std::string text, int32_t tokens) {
    session.user_messages.push_back(std::move(text));
    session.message_tokens.push_back(tokens);
  };
  switch (options.kind) {
    case DatasetKind::kRandom: {
      if (options.num_prompts <= 0 || options.input_len <= 0) {
        return absl::InvalidArgumentError("--num-prompts and --input-len must be positive");
      }
      for (int32_t i = 0; i < options.num_prompts; ++i) {
        Session session;
        TERN_ASSIGN_OR_RETURN(std::string text, synthesizer.Text(options.input_len, rng));
        add_message(session, std::move(text), options.input_len);
        workload.sessions.push_back(std::move(session));
      }
      break;
    }
    case DatasetKind::kSharedPrefix: {
      if (options.groups <= 0 || options.users <= 0 || options.prefix_len <= 0 ||
          options.question_len <= 0) {
        return absl::InvalidArgumentError(
            "--groups, --users, --prefix-len and --question-len must be positive");
      }
      std::vector<std::string> prefixes;
      for (int32_t g = 0; g < options.groups; ++g) {
        TERN_ASSIGN_OR_RETURN(std::string prefix, synthesizer.Text(options.prefix_len, rng));
        prefixes.push_back(std::move(prefix));
      }
      for (int32_t u = 0; u < options.users; ++u) {
        for (int32_t g = 0; g < options.groups; ++g) {
          TERN_ASSIGN_OR_RETURN(std::string question, synthesizer.Text(options.question_len, rng));
          Session session;
          session.group = g;
          add_message(session, prefixes[g] + question, options.prefix_len + options.question_len);
          workload.sessions.push_back(std::move(session));
        }
      }
      break;
    }
    case DatasetKind::kMultiTurn: {
      if (options.users <= 0 || options.turns <= 0 || options.input_len <= 0) {
        return absl::InvalidArgumentError("--users, --turns and --input-len must be positive");
      }
      for (int32_t u = 0; u < options.users; ++u) {
        Session session;
        for (int32_t t = 0; t < options.turns; ++t) {
          TERN_ASSIGN_OR_RETURN(std::string text, synthesizer.Text(options.input_len, rng));
          add_message(session, std::move(text), options.input_len);
        }
        workload.sessions.push_back(std::move(session));
      }
      break;
    }
  }
  return workload;
}

std::string ChatMessagesJson(const Session& session, size_t turn,
                             const std::vector<std::string>& answers) {
  nlohmann::json messages = nlohmann::json::array();
  for (size_t t = 0; t <= turn && t < session.user_messages.size(); ++t) {
    messages.push_back({{"role", "user"}, {"content", session.user_messages[t]}});
    if (t < turn) messages.push_back({{"role", "assistant"}, {"content", answers.at(t)}});
  }
  return messages.dump();
}

}  // namespace tern::cli
