// Stop strings over text that arrives in pieces (one detokenized step at a
// time). Text is released as soon as it cannot be the start of a stop string;
// a tail that could still grow into one is held back until the next piece
// decides it. On a match the output ends right before the stop string (or
// right after it, with include_stop_in_output) and everything after is dropped.
//
// Inputs must be whole UTF-8 characters (as IncrementalDetokenizer emits);
// released text then always ends on a character boundary, because a held-back
// tail starts where a stop string starts.
//
// Not thread-safe: one instance per request, used from one thread at a time.
#ifndef TERN_GATEWAY_OPENAI_STOP_MATCHER_H_
#define TERN_GATEWAY_OPENAI_STOP_MATCHER_H_

#include <string>
#include <string_view>
#include <vector>

namespace tern::gateway {

class StopMatcher {
 public:
  // Empty stop strings are ignored.
  explicit StopMatcher(std::vector<std::string> stops, bool include_stop_in_output = false);

  // Appends `text`; returns the text that became final. After a match
  // stopped() is true and later calls return "".
  std::string Push(std::string_view text);

  // End of generation: releases the held-back tail (no match can complete).
  std::string Flush();

  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  bool include_stop_in_output_;
  size_t longest_stop_ = 0;
  std::string pending_;  // held-back text: a proper prefix of some stop string
  bool stopped_ = false;
};

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_OPENAI_STOP_MATCHER_H_
