#include <list>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "structured/constraint.h"

namespace tern::structured {

struct ConstraintCache::Entries {
  absl::Mutex mu;
  // Most recently used first.
  std::list<std::pair<std::string, std::shared_ptr<const CompiledConstraint>>> order
      ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string, decltype(order)::iterator> by_key ABSL_GUARDED_BY(mu);
};

ConstraintCache::ConstraintCache(std::shared_ptr<const TokenVocabulary> vocabulary, size_t capacity)
    : vocabulary_(std::move(vocabulary)),
      capacity_(capacity),
      entries_(std::make_unique<Entries>()) {}

ConstraintCache::~ConstraintCache() = default;

absl::StatusOr<std::shared_ptr<const CompiledConstraint>> ConstraintCache::GetOrCompile(
    const ConstraintSpec& spec) {
  const std::string key = spec.CacheKey();
  {
    absl::MutexLock lock(&entries_->mu);
    auto it = entries_->by_key.find(key);
    if (it != entries_->by_key.end()) {
      entries_->order.splice(entries_->order.begin(), entries_->order, it->second);
      return it->second->second;
    }
  }
  // Compiled outside the lock: two threads may both compile a new spec; the
  // first to insert wins and the other's copy is dropped.
  auto compiled = CompiledConstraint::Compile(spec, vocabulary_);
  if (!compiled.ok()) return compiled.status();
  absl::MutexLock lock(&entries_->mu);
  auto it = entries_->by_key.find(key);
  if (it != entries_->by_key.end()) return it->second->second;
  entries_->order.emplace_front(key, *compiled);
  entries_->by_key[key] = entries_->order.begin();
  while (entries_->order.size() > capacity_) {
    entries_->by_key.erase(entries_->order.back().first);
    entries_->order.pop_back();
  }
  return *compiled;
}

}  // namespace tern::structured
