#include "structured/mask_cache.h"

#include <bit>
#include <utility>

namespace tern::structured {

MaskCache::MaskCache(const TokenMask* eligible, size_t max_entries, size_t max_bytes)
    : eligible_(eligible), max_entries_(max_entries), max_bytes_(max_bytes) {}

size_t MaskCache::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

bool MaskCache::Lookup(const std::vector<int32_t>& key, TokenMask* mask) const {
  std::shared_ptr<const Entry> entry;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) entry = it->second;
  }
  if (entry == nullptr) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  entry->referenced.store(true, std::memory_order_relaxed);
  switch (entry->form) {
    case Entry::Form::kBits:
      mask->words() = entry->bits;
      break;
    case Entry::Form::kAllowed:
      mask->Clear();
      for (int32_t id : entry->ids) mask->Allow(id);
      break;
    case Entry::Form::kRefused:
      mask->words() = eligible_->words();
      for (int32_t id : entry->ids) {
        mask->words()[static_cast<size_t>(id) >> 6] &= ~(uint64_t{1} << (id & 63));
      }
      break;
  }
  return true;
}

void MaskCache::Insert(const std::vector<int32_t>& key, const TokenMask& mask) {
  auto entry = std::make_shared<Entry>();
  const std::vector<uint64_t>& words = mask.words();
  const std::vector<uint64_t>& eligible = eligible_->words();
  size_t allowed = 0;
  size_t refused = 0;
  for (size_t w = 0; w < words.size(); ++w) {
    allowed += std::popcount(words[w]);
    refused += std::popcount(eligible[w] & ~words[w]);
  }
  const size_t bits_bytes = words.size() * 8;
  const auto collect = [&](bool want_allowed) {
    for (size_t w = 0; w < words.size(); ++w) {
      uint64_t bits = want_allowed ? words[w] : (eligible[w] & ~words[w]);
      while (bits != 0) {
        entry->ids.push_back(static_cast<int32_t>(w * 64 + std::countr_zero(bits)));
        bits &= bits - 1;
      }
    }
  };
  if (allowed * 4 <= bits_bytes && allowed <= refused) {
    entry->form = Entry::Form::kAllowed;
    collect(true);
  } else if (refused * 4 <= bits_bytes) {
    entry->form = Entry::Form::kRefused;
    collect(false);
  } else {
    entry->form = Entry::Form::kBits;
    entry->bits = words;
  }
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = entries_.try_emplace(key, entry);
  if (!inserted) return;
  bytes_ += entry->bytes() + key.size() * 8;
  clock_.push_back(key);
  while (!clock_.empty() && (entries_.size() > max_entries_ || bytes_ > max_bytes_)) {
    std::vector<int32_t> victim = std::move(clock_.front());
    clock_.pop_front();
    auto v = entries_.find(victim);
    if (v == entries_.end()) continue;
    if (v->second->referenced.exchange(false, std::memory_order_relaxed)) {
      clock_.push_back(std::move(victim));
      continue;
    }
    bytes_ -= v->second->bytes() + victim.size() * 8;
    entries_.erase(v);
  }
}

}  // namespace tern::structured
