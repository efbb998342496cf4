// BpeModel: the byte-level BPE model of a Hugging Face tokenizer.json
// ("model": {"type": "BPE", ...}). It turns one pre-token (raw bytes) into
// token ids by applying the ranked merges, lowest rank first and leftmost
// first among equal ranks, exactly as the `tokenizers` library does.
//
// The model works on raw bytes: vocabulary entries written in the GPT-2
// byte-level alphabet are mapped back to the bytes they stand for at load
// time, so encoding never builds byte-level strings.
//
// Thread-safety: immutable after Create(); every method may be called from any
// thread concurrently.
#ifndef TERN_GATEWAY_TOKENIZER_BPE_H_
#define TERN_GATEWAY_TOKENIZER_BPE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace tern::gateway {

struct BpeConfig {
  // (token in the byte-level alphabet, id), in any order.
  std::vector<std::pair<std::string, int32_t>> vocab;
  // (left, right) in priority order: merges[0] is applied first.
  std::vector<std::pair<std::string, std::string>> merges;
  // A pre-token that is itself a vocabulary entry maps to it without merging.
  bool ignore_merges = false;
  // Token used for bytes that have no vocabulary entry (otherwise dropped).
  std::optional<std::string> unk_token;
  bool fuse_unk = false;
};

class BpeModel {
 public:
  // Largest id accepted, to bound the tables built from untrusted files.
  static constexpr int32_t kMaxId = (1 << 24) - 1;

  // InvalidArgument for duplicate or out-of-range ids, merges naming unknown
  // tokens, or merges whose result is not in the vocabulary.
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(BpeConfig config);

  // Appends the ids for `word`, the raw bytes of one pre-token.
  void EncodeWord(std::string_view word, std::vector<int32_t>& ids) const;

  // The id of a vocabulary entry written in the byte-level alphabet ("Ġthe").
  std::optional<int32_t> TokenId(std::string_view token) const;
  // Whether `id` names a vocabulary entry.
  bool Contains(int32_t id) const;
  // The entry as written in the vocabulary; empty for unknown ids.
  const std::string& TokenString(int32_t id) const;
  // The raw bytes the entry stands for; empty for unknown ids. An entry with
  // characters outside the byte-level alphabet stands for its own UTF-8.
  const std::string& TokenBytes(int32_t id) const;
  // One past the largest id.
  int32_t id_limit() const { return static_cast<int32_t>(tokens_.size()); }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  struct Token {
    std::string text;   // as in the vocabulary
    std::string bytes;  // byte-level mapping undone
    bool present = false;
  };

  BpeModel() = default;
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  void MergeWord(std::string_view word, std::vector<int32_t>& ids) const;

  // Constant after Create().
  std::vector<Token> tokens_;  // indexed by id
  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  absl::flat_hash_map<std::string, int32_t> bytes_to_id_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  int32_t byte_ids_[256];  // single-byte tokens, -1 when missing
  bool ignore_merges_ = false;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_TOKENIZER_BPE_H_
