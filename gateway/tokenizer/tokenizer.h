// Tokenizer: text <-> token ids for Llama 3.x models, driven by a Hugging Face
// tokenizer.json and matching the `tokenizers` library on it:
//
//   encode: added tokens (<|eot_id|>, ...) are found in the text first and map
//           straight to their ids; the text between them is pre-tokenized
//           (Split regex, then ByteLevel) and each piece goes through the
//           byte-level BPE model; the post-processor's template
//           (<|begin_of_text|> for Llama 3) is added on request.
//   decode: the bytes of the tokens are concatenated and read as UTF-8, with
//           ill-formed sequences replaced by U+FFFD. No "clean up
//           tokenization spaces" pass: decoding is byte-exact.
//
// Supported tokenizer.json: model BPE (merges as "a b" strings or [a, b]
// pairs; ignore_merges; no byte fallback, dropout or subword affixes);
// normalizer null; pre_tokenizer Split (Isolated) / ByteLevel (without
// add_prefix_space) or a Sequence of them; post_processor TemplateProcessing
// / ByteLevel or a Sequence of them; decoder ByteLevel. Anything else is
// refused with InvalidArgument rather than tokenized differently.
//
// Thread-safety: immutable after construction; all const methods may be
// called from any number of threads concurrently.
#ifndef TERN_GATEWAY_TOKENIZER_TOKENIZER_H_
#define TERN_GATEWAY_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "gateway/tokenizer/bpe.h"
#include "gateway/tokenizer/bpe_added_tokens.h"
#include "gateway/tokenizer/bpe_pre_tokenizer.h"

namespace tern::gateway {

class Tokenizer {
 public:
  // Reads and parses a tokenizer.json. NotFound when the file cannot be read,
  // InvalidArgument when it is malformed or uses unsupported components.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json);

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`. Added/special tokens written in the text are
  // recognized (the library's default). `add_special_tokens` applies the
  // post-processor template (prepends <|begin_of_text|> for Llama 3).
  // Ill-formed UTF-8 in `text` is read as U+FFFD.
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const;

  // Text of `ids`, as the library's decode(ids, skip_special_tokens) with
  // clean_up_tokenization_spaces off. Ids that name no token are skipped.
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;

  // The raw bytes token `id` stands for (the byte-level mapping undone);
  // added tokens give their content. Empty for ids that name no token.
  const std::string& TokenBytes(int32_t id) const;
  // The token as written in tokenizer.json ("Ġthe", "<|eot_id|>"); empty for
  // ids that name no token.
  const std::string& TokenString(int32_t id) const;
  // The id of a token as written in tokenizer.json (an added token's content
  // or a vocabulary entry in the byte-level alphabet).
  std::optional<int32_t> TokenId(std::string_view token) const;
  // Whether `id` is an added token marked special (skipped by
  // skip_special_tokens).
  bool IsSpecial(int32_t id) const;
  // One past the largest token id (128256 for Llama 3).
  int32_t vocab_size() const { return vocab_size_; }
  // The token the post-processor puts first (<|begin_of_text|>), if any.
  std::optional<int32_t> bos_token_id() const { return bos_token_id_; }
  const std::vector<AddedToken>& added_tokens() const { return added_tokens_; }

 private:
  Tokenizer() = default;
  friend class TokenizerJsonLoader;

  // Appends the ids of `text`, a run without added tokens.
  void EncodePlain(std::string_view text, std::vector<int32_t>& ids) const;

  // Constant after construction.
  std::unique_ptr<BpeModel> model_;
  std::vector<AddedToken> added_tokens_;
  absl::flat_hash_map<int32_t, size_t> added_index_;  // id -> index in added_tokens_
  absl::flat_hash_map<std::string, int32_t> added_ids_;
  std::unique_ptr<AddedTokenSplitter> added_splitter_;
  // Pre-tokenizer steps, applied in order to every piece.
  std::vector<std::unique_ptr<RegexSplitter>> pre_tokenizer_steps_;
  // Post-processor template for a single sequence: ids before and after it.
  std::vector<int32_t> template_prefix_;
  std::vector<int32_t> template_suffix_;
  std::optional<int32_t> bos_token_id_;
  int32_t vocab_size_ = 0;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_TOKENIZER_TOKENIZER_H_
