// Workloads for `tern bench serve`: prompts of exact token lengths under the
// served model's tokenizer, arranged as vLLM's benchmark datasets are.
//
//   random         num_prompts single-turn prompts of input_len tokens each.
//   shared-prefix  groups x users single-turn prompts: every group has one
//                  shared prefix of prefix_len tokens, every user a distinct
//                  question of question_len tokens; the prompt is prefix +
//                  question, and the order interleaves the groups (user 0 of
//                  groups 0..G-1, then user 1, ...).
//   multi-turn     users conversations of `turns` user messages of input_len
//                  tokens each; turn t is sent with the whole history (every
//                  earlier user message and the assistant's answer to it).
//
// Every workload is a list of sessions, each an ordered list of user
// messages; a single-turn dataset has one message per session.
//
// Thread contract: PromptSynthesizer is immutable after construction and its
// const methods may be called from any thread; the rest are plain values.
#ifndef TERN_CLI_BENCH_BENCH_DATASETS_H_
#define TERN_CLI_BENCH_BENCH_DATASETS_H_

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gateway/tokenizer/tokenizer.h"

namespace tern::cli {

// Text of an exact number of tokens. The text is a run of vocabulary words
// (tokens written "Ġ" + 2..12 ASCII lowercase letters, i.e. " word"): the
// Llama 3 pre-tokenizer cuts such a run at every space and each piece is a
// whole vocabulary entry, so n words encode to exactly n tokens, and two such
// texts concatenated encode to the sum of their lengths. Every text is
// re-encoded to check this.
class PromptSynthesizer {
 public:
  // NOT_FOUND / INVALID_ARGUMENT from the tokenizer; FAILED_PRECONDITION when
  // the vocabulary has too few such words (not a Llama-3-style BPE).
  static absl::StatusOr<std::unique_ptr<PromptSynthesizer>> FromTokenizerFile(
      const std::string& tokenizer_json);
  static absl::StatusOr<std::unique_ptr<PromptSynthesizer>> FromTokenizer(
      std::unique_ptr<gateway::Tokenizer> tokenizer);

  // A text that encodes (without special tokens) to exactly `tokens` ids.
  // INTERNAL if the re-encoding check fails.
  absl::StatusOr<std::string> Text(int32_t tokens, std::mt19937_64& rng) const;

  // Tokens of `text` without special tokens.
  int32_t CountTokens(absl::string_view text) const;

  size_t num_words() const { return word_ids_.size(); }

 private:
  explicit PromptSynthesizer(std::unique_ptr<gateway::Tokenizer> tokenizer);

  std::unique_ptr<gateway::Tokenizer> tokenizer_;
  std::vector<int32_t> word_ids_;
};

enum class DatasetKind { kRandom, kSharedPrefix, kMultiTurn };

// "random", "shared-prefix", "multi-turn"; INVALID_ARGUMENT otherwise.
absl::StatusOr<DatasetKind> ParseDatasetKind(absl::string_view name);
const char* DatasetKindName(DatasetKind kind);

struct DatasetOptions {
  DatasetKind kind = DatasetKind::kRandom;
  int32_t num_prompts = 64;   // random
  int32_t input_len = 256;    // random prompts; multi-turn user messages
  int32_t output_len = 64;    // every answer (max_tokens, EOS ignored)
  int32_t groups = 4;         // shared-prefix
  int32_t users = 8;          // shared-prefix users per group; multi-turn conversations
  int32_t prefix_len = 1024;  // shared-prefix
  int32_t question_len = 64;  // shared-prefix
  int32_t turns = 3;          // multi-turn
  uint64_t seed = 0;
};

struct Session {
  std::vector<std::string> user_messages;  // one per turn, in order
  std::vector<int32_t> message_tokens;     // tokens of each user message
  int32_t group = -1;                      // shared-prefix group, else -1
};

struct Workload {
  DatasetKind kind = DatasetKind::kRandom;
  std::vector<Session> sessions;  // in issue order
  int32_t output_len = 0;
  int64_t num_requests() const;
};

// INVALID_ARGUMENT for non-positive sizes.
absl::StatusOr<Workload> BuildWorkload(const DatasetOptions& options,
                                       const PromptSynthesizer& synthesizer);

// The chat history for turn `turn` (0-based) of `session`: user message 0,
// answers[0], user message 1, ..., user message `turn`, as OpenAI messages
// serialized to a JSON array. `answers` must hold at least `turn` entries.
std::string ChatMessagesJson(const Session& session, size_t turn,
                             const std::vector<std::string>& answers);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_BENCH_DATASETS_H_
