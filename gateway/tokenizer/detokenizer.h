// IncrementalDetokenizer: turns a stream of generated token ids into text as
// it arrives, for streaming responses. A token may end in the middle of a
// UTF-8 character (byte-level BPE splits emoji, CJK...), so the bytes of an
// unfinished character are held back until the tokens that complete it come:
// Append() never returns a partial or ill-formed UTF-8 sequence. Bytes that
// can no longer become a character are emitted as U+FFFD, exactly where
// Tokenizer::Decode puts them, so the concatenation of all Append() results
// and Flush() equals Decode(all ids, skip_special_tokens).
//
// Thread-safety: one stream, one owner; not safe for concurrent use. The
// Tokenizer must outlive it.
#ifndef TERN_GATEWAY_TOKENIZER_DETOKENIZER_H_
#define TERN_GATEWAY_TOKENIZER_DETOKENIZER_H_

#include <cstdint>
#include <string>

#include "gateway/tokenizer/tokenizer.h"

namespace tern::gateway {

class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // Adds one token; returns the text completed by it (possibly empty). Ids
  // that name no token add nothing.
  std::string Append(int32_t id);

  // Ends the stream: returns the held-back bytes, an unfinished character
  // becoming U+FFFD. The detokenizer is empty (reusable) afterwards.
  std::string Flush();

  // Bytes held back waiting for the rest of a character (0 to 3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  const bool skip_special_tokens_;
  std::string pending_;  // the incomplete tail of the byte stream
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_TOKENIZER_DETOKENIZER_H_
