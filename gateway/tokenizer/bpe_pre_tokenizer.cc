#include "gateway/tokenizer/bpe_pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <atomic>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "gateway/tokenizer/byte_level.h"

namespace tern::gateway {
namespace {

// Per-thread match state: PCRE2 match data and JIT stacks must not be shared
// between threads that match at the same time; the compiled code may.
class ThreadMatchState {
 public:
  ThreadMatchState()
      : match_data_(pcre2_match_data_create(1, nullptr)),
        context_(pcre2_match_context_create(nullptr)),
        // Runs of a million spaces need more than the default 32 KiB.
        jit_stack_(pcre2_jit_stack_create(size_t{32} << 10, size_t{8} << 20, nullptr)) {
    TERN_CHECK(match_data_ != nullptr && context_ != nullptr) << "PCRE2 allocation failed";
    if (jit_stack_ != nullptr) pcre2_jit_stack_assign(context_, nullptr, jit_stack_);
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(jit_stack_);
    pcre2_match_context_free(context_);
    pcre2_match_data_free(match_data_);
  }
  ThreadMatchState(const ThreadMatchState&) = delete;
  ThreadMatchState& operator=(const ThreadMatchState&) = delete;

  pcre2_match_data* MatchData() { return match_data_; }
  pcre2_match_context* Context() { return context_; }

 private:
  pcre2_match_data* match_data_;
  pcre2_match_context* context_;
  pcre2_jit_stack* jit_stack_;
};

ThreadMatchState& MatchState() {
  thread_local ThreadMatchState state;
  return state;
}

// Matches at `offset`; the JIT's stack limit falls back to the interpreter.
int MatchAt(const pcre2_code* code, std::string_view text, size_t offset, uint32_t options) {
  ThreadMatchState& state = MatchState();
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = pcre2_match(code, subject, text.size(), offset, options | PCRE2_NO_UTF_CHECK,
                       state.MatchData(), state.Context());
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    rc =
        pcre2_match(code, subject, text.size(), offset, options | PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                    state.MatchData(), state.Context());
  }
  return rc;
}

std::string PcreErrorMessage(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  if (n < 0) return absl::StrCat("PCRE2 error ", code);
  return std::string(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n));
}

// PCRE2's \s also matches U+180E (a space before Unicode 6.3), unlike the
// reference engine, whose \s is exactly the White_Space property. Rewrites
// \s and \S, inside classes too, to that property; other escapes, and
// \Q...\E quoted runs, are copied unchanged.
std::string UseWhiteSpaceProperty(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '\\' || i + 1 == pattern.size()) {
      out.push_back(pattern[i]);
      continue;
    }
    const char next = pattern[++i];
    if (next == 's') {
      out.append("\\p{White_Space}");
    } else if (next == 'S') {
      out.append("\\P{White_Space}");
    } else if (next == 'Q') {
      const size_t end = pattern.find("\\E", i + 1);
      const size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
      out.append(pattern.substr(i - 1, stop - (i - 1)));
      i = stop - 1;
    } else {
      out.push_back('\\');
      out.push_back(next);
    }
  }
  return out;
}

pcre2_code* CompileOrDie(std::string_view pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &error, &offset, nullptr);
  TERN_CHECK(code != nullptr) << "built-in pattern: " << PcreErrorMessage(error);
  return code;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RegexSplitter>> RegexSplitter::Create(std::string_view pattern,
                                                                     bool literal) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  const uint32_t options = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
  if (!IsValidUtf8(pattern)) {
    return absl::InvalidArgumentError("tokenizer.json: split pattern is not valid UTF-8");
  }
  const std::string source = literal ? std::string(pattern) : UseWhiteSpaceProperty(pattern);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(),
                                   options, &error, &offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: split pattern does not compile at offset ", offset, ": ",
                     PcreErrorMessage(error)));
  }
  // Without JIT support matching still works, only slower.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<RegexSplitter>(new RegexSplitter(code));
}

RegexSplitter::~RegexSplitter() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void RegexSplitter::Split(std::string_view text, std::vector<std::string_view>& out) const {
  const auto* code = static_cast<const pcre2_code*>(code_);
  size_t emitted = 0;  // end of the last piece appended
  size_t offset = 0;   // where the next search starts
  while (offset < text.size()) {
    const int rc = MatchAt(code, text, offset, 0);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      static std::atomic<bool> logged{false};
      if (!logged.exchange(true)) {
        TERN_LOG(Warning) << "tokenizer: split pattern failed (" << PcreErrorMessage(rc)
                          << "); keeping the rest of the text as one piece";
      }
      break;
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(MatchState().MatchData());
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (end == begin) {
      // Empty matches split nothing; step over one character.
      size_t length = 1;
      DecodeUtf8At(text, begin, &length);
      offset = begin + length;
      continue;
    }
    if (begin > emitted) out.push_back(text.substr(emitted, begin - emitted));
    out.push_back(text.substr(begin, end - begin));
    emitted = offset = end;
  }
  if (emitted < text.size()) out.push_back(text.substr(emitted));
}

bool IsUnicodeWhitespace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

bool IsUnicodeWordChar(char32_t cp) {
  if (cp < 0x80) {
    return (cp >= '0' && cp <= '9') || (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') ||
           cp == '_';
  }
  static const pcre2_code* const word_char =
      CompileOrDie("[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]");
  std::string encoded;
  AppendUtf8(cp, encoded);
  return MatchAt(word_char, encoded, 0, 0) >= 0;
}

}  // namespace tern::gateway
