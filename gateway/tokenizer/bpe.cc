#include "gateway/tokenizer/bpe.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gateway/tokenizer/byte_level.h"

namespace tern::gateway {
namespace {

absl::string_view ToAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

const std::string& EmptyString() {
  static const std::string* const empty = new std::string();
  return *empty;
}

constexpr size_t kMaxRetainedSymbols = 1 << 16;

struct Symbol {
  int32_t id;    // -1 once merged into its left neighbour
  int32_t prev;  // index of the previous live symbol, -1 at the start
  int32_t next;  // index of the next live symbol, -1 at the end
};

// A candidate merge of the symbol at `pos` with its right neighbour. Lower
// rank first, then leftmost: the order the reference implementation uses.
struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t merged_id;
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(BpeConfig config) {
  auto model = std::unique_ptr<BpeModel>(new BpeModel());
  int32_t max_id = -1;
  for (const auto& [text, id] : config.vocab) {
    if (id < 0 || id > kMaxId) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: vocabulary id ", id, " of \"", text, "\" is out of range"));
    }
    max_id = std::max(max_id, id);
  }
  model->tokens_.resize(static_cast<size_t>(max_id) + 1);
  model->token_to_id_.reserve(config.vocab.size());
  model->bytes_to_id_.reserve(config.vocab.size());
  for (auto& [text, id] : config.vocab) {
    Token& token = model->tokens_[id];
    if (token.present) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: vocabulary id ", id,
                                                     " is used by \"", token.text, "\" and \"",
                                                     text, "\""));
    }
    token.present = true;
    std::optional<std::string> bytes = ByteLevelToBytes(text);
    if (bytes.has_value()) {
      model->bytes_to_id_.emplace(*bytes, id);
      token.bytes = std::move(*bytes);
    } else {
      token.bytes = text;
    }
    model->token_to_id_.emplace(text, id);
    token.text = std::move(text);
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = model->bytes_to_id_.find(std::string(1, static_cast<char>(b)));
    model->byte_ids_[b] = it == model->bytes_to_id_.end() ? -1 : it->second;
  }

  model->merges_.reserve(config.merges.size());
  std::string merged;
  for (size_t rank = 0; rank < config.merges.size(); ++rank) {
    const auto& [left, right] = config.merges[rank];
    const auto l = model->token_to_id_.find(left);
    const auto r = model->token_to_id_.find(right);
    if (l == model->token_to_id_.end() || r == model->token_to_id_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge #", rank, " \"", left,
                                                     " ", right,
                                                     "\" names a token not in the vocabulary"));
    }
    merged.assign(left).append(right);
    const auto m = model->token_to_id_.find(merged);
    if (m == model->token_to_id_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge #", rank, " \"", left,
                                                     " ", right, "\" makes \"", merged,
                                                     "\", which is not in the vocabulary"));
    }
    // Like the reference, a repeated pair takes its last rank.
    model->merges_.insert_or_assign(PairKey(l->second, r->second),
                                    Merge{static_cast<int32_t>(rank), m->second});
  }

  model->ignore_merges_ = config.ignore_merges;
  model->fuse_unk_ = config.fuse_unk;
  if (config.unk_token.has_value()) {
    const auto it = model->token_to_id_.find(*config.unk_token);
    if (it == model->token_to_id_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer.json: unk_token \"", *config.unk_token, "\" is not in the vocabulary"));
    }
    model->unk_id_ = it->second;
  }
  return model;
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges_ || word.size() == 1) {
    const auto it = bytes_to_id_.find(ToAbsl(word));
    if (it != bytes_to_id_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  MergeWord(word, ids);
}

void BpeModel::MergeWord(std::string_view word, std::vector<int32_t>& ids) const {
  // Scratch space reused across calls on the same thread.
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();

  for (unsigned char c : word) {
    int32_t id = byte_ids_[c];
    if (id < 0) {
      if (unk_id_ < 0) continue;  // dropped, as the reference does without unk
      if (fuse_unk_ && !symbols.empty() && symbols.back().id == unk_id_) continue;
      id = unk_id_;
    }
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, index - 1, -1});
    if (index > 0) symbols[index - 1].next = index;
  }
  if (symbols.empty()) return;

  const auto push = [](Candidate c) {
    heap.push_back(c);
    std::push_heap(heap.begin(), heap.end(), std::greater<Candidate>());
  };
  const auto find_merge = [this](int32_t left, int32_t right) -> const Merge* {
    const auto it = merges_.find(PairKey(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) {
    if (const Merge* m = find_merge(symbols[i].id, symbols[i + 1].id)) {
      push(Candidate{m->rank, i, m->merged_id});
    }
  }
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<Candidate>());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (left.id < 0 || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // A stale candidate: one of the two symbols changed since it was queued
    // (their concatenation, and so the merged id, would differ).
    const Merge* m = find_merge(left.id, right.id);
    if (m == nullptr || m->merged_id != top.merged_id) continue;

    left.id = top.merged_id;
    right.id = -1;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const Merge* pm = find_merge(symbols[left.prev].id, left.id)) {
        push(Candidate{pm->rank, left.prev, pm->merged_id});
      }
    }
    if (left.next >= 0) {
      if (const Merge* nm = find_merge(left.id, symbols[left.next].id)) {
        push(Candidate{nm->rank, top.pos, nm->merged_id});
      }
    }
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
  // Do not keep the scratch of a pathological multi-megabyte word alive.
  if (symbols.capacity() > kMaxRetainedSymbols) std::vector<Symbol>().swap(symbols);
  if (heap.capacity() > kMaxRetainedSymbols) std::vector<Candidate>().swap(heap);
}

std::optional<int32_t> BpeModel::TokenId(std::string_view token) const {
  const auto it = token_to_id_.find(ToAbsl(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

bool BpeModel::Contains(int32_t id) const {
  return id >= 0 && id < id_limit() && tokens_[id].present;
}

const std::string& BpeModel::TokenString(int32_t id) const {
  return Contains(id) ? tokens_[id].text : EmptyString();
}

const std::string& BpeModel::TokenBytes(int32_t id) const {
  return Contains(id) ? tokens_[id].bytes : EmptyString();
}

}  // namespace tern::gateway
