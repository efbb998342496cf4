#include "structured/grammar_matcher.h"

#include <algorithm>
#include <utility>

namespace tern::structured {
namespace {

// Past this many stacks an ambiguous grammar gets deduplicated on every step
// rather than only when a state becomes a cache key.
constexpr size_t kDedupStacks = 16;

// The scratch stack Expand works on; one per thread so steppers stay const.
std::vector<int32_t>& WorkStack() {
  thread_local std::vector<int32_t> work;
  return work;
}

}  // namespace

ParseState GrammarStepper::Initial() const {
  ParseState state;
  std::vector<int32_t> work = {0};
  Expand(work, &state);
  Canonicalize(&state);
  return state;
}

bool GrammarStepper::Advance(const ParseState& from, uint8_t byte, ParseState* next) const {
  next->stacks.clear();
  next->complete = false;
  std::vector<int32_t>& work = WorkStack();
  size_t count = 0;
  const int32_t* data = from.stacks.data();
  const int32_t* end = data + from.stacks.size();
  while (data < end) {
    const int32_t length = *data;
    const int32_t* stack = data + 1;
    data = stack + length;
    const int32_t top = stack[length - 1];
    if (!grammar_->byte_set(grammar_->element(top)).Contains(byte)) continue;
    work.assign(stack, stack + length);
    work.back() = top + 1;
    Expand(work, next);
    ++count;
  }
  if (count > 1 && next->stacks.size() > kDedupStacks * 4) Canonicalize(next);
  return next->alive();
}

void GrammarStepper::Expand(std::vector<int32_t>& work, ParseState* out) const {
  const int32_t position = work.back();
  const int32_t element = grammar_->element(position);
  if (element <= Grammar::kFirstByteSet) {
    out->stacks.push_back(static_cast<int32_t>(work.size()));
    out->stacks.insert(out->stacks.end(), work.begin(), work.end());
    return;
  }
  if (element == Grammar::kEnd) {
    work.pop_back();
    if (work.empty()) {
      out->complete = true;
    } else {
      Expand(work, out);
    }
    work.push_back(position);
    return;
  }
  // A rule reference: continue after it once the rule completes, or, in tail
  // position, let the rule's completion complete the caller directly.
  const bool tail = grammar_->element(position + 1) == Grammar::kEnd;
  if (tail) {
    work.pop_back();
  } else {
    work.back() = position + 1;
  }
  for (const int32_t* alt = grammar_->alternatives_begin(element);
       alt != grammar_->alternatives_end(element); ++alt) {
    work.push_back(*alt);
    Expand(work, out);
    work.pop_back();
  }
  if (tail) {
    work.push_back(position);
  } else {
    work.back() = position;
  }
}

void GrammarStepper::Canonicalize(ParseState* state) {
  struct Span {
    const int32_t* begin;
    const int32_t* end;
  };
  std::vector<Span> spans;
  const int32_t* data = state->stacks.data();
  const int32_t* end = data + state->stacks.size();
  while (data < end) {
    spans.push_back(Span{data, data + 1 + *data});
    data = spans.back().end;
  }
  if (spans.size() < 2) return;
  const auto less = [](const Span& a, const Span& b) {
    return std::lexicographical_compare(a.begin, a.end, b.begin, b.end);
  };
  const auto equal = [](const Span& a, const Span& b) {
    return std::equal(a.begin, a.end, b.begin, b.end);
  };
  std::sort(spans.begin(), spans.end(), less);
  spans.erase(std::unique(spans.begin(), spans.end(), equal), spans.end());
  std::vector<int32_t> sorted;
  sorted.reserve(state->stacks.size());
  for (const Span& s : spans) sorted.insert(sorted.end(), s.begin, s.end);
  state->stacks = std::move(sorted);
}

}  // namespace tern::structured
