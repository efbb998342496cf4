#include "gateway/openai/logprobs.h"

#include <algorithm>
#include <cmath>

namespace tern::gateway {
namespace {

using Json = nlohmann::ordered_json;

// JSON has no -inf; vLLM reports impossible tokens as -9999 too.
double FiniteLogprob(float logprob) {
  if (std::isnan(logprob)) return -9999.0;
  return std::max(static_cast<double>(logprob), -9999.0);
}

std::string TokenText(const Tokenizer& tokenizer, int32_t id) {
  return tokenizer.Decode({id}, /*skip_special_tokens=*/false);
}

Json TokenBytesJson(const Tokenizer& tokenizer, int32_t id) {
  Json bytes = Json::array();
  for (const char c : tokenizer.TokenBytes(id)) bytes.push_back(static_cast<uint8_t>(c));
  return bytes;
}

}  // namespace

void LogprobTracker::Add(const tern::v1::TokenLogprob& logprob, size_t text_bytes,
                         bool inside_character) {
  Pending pending;
  pending.entry.token_id = logprob.token_id();
  pending.entry.logprob = logprob.logprob();
  for (const tern::v1::TopLogprob& top : logprob.top()) {
    pending.entry.top.emplace_back(top.token_id(), top.logprob());
  }
  pending.start = stream_bytes_;
  stream_bytes_ += text_bytes;
  pending.end = stream_bytes_;
  pending.open = inside_character;
  // Earlier tokens whose character was unfinished end where this one does;
  // they are complete once this one leaves no character open.
  for (auto it = pending_.rbegin(); it != pending_.rend() && it->open; ++it) {
    it->end = stream_bytes_;
    it->open = inside_character;
  }
  pending_.push_back(std::move(pending));
}

void LogprobTracker::ExtendLast(size_t text_bytes) {
  stream_bytes_ += text_bytes;
  for (auto it = pending_.rbegin(); it != pending_.rend() && (it->open || it == pending_.rbegin());
       ++it) {
    it->end = stream_bytes_;
    it->open = false;
  }
}

std::vector<TokenLogprobEntry> LogprobTracker::Release(std::string_view text) {
  released_.append(text);
  std::vector<TokenLogprobEntry> ready;
  // An empty token at the release point waits: the text it belongs to is not out yet.
  while (!pending_.empty() && !pending_.front().open && pending_.front().start < released_.size() &&
         pending_.front().end <= released_.size()) {
    ready.push_back(Take());
  }
  return ready;
}

std::vector<TokenLogprobEntry> LogprobTracker::Finish(bool stopped) {
  std::vector<TokenLogprobEntry> rest;
  while (!pending_.empty() && (!stopped || pending_.front().start < released_.size())) {
    rest.push_back(Take());
  }
  pending_.clear();
  return rest;
}

TokenLogprobEntry LogprobTracker::Take() {
  Pending pending = std::move(pending_.front());
  pending_.pop_front();
  pending.entry.text_offset = CodePointOffset(std::min(pending.start, released_.size()));
  return std::move(pending.entry);
}

int64_t LogprobTracker::CodePointOffset(size_t at) {
  for (; counted_bytes_ < at; ++counted_bytes_) {
    // Every byte but a UTF-8 continuation byte starts a code point.
    if ((static_cast<uint8_t>(released_[counted_bytes_]) & 0xC0) != 0x80) ++counted_code_points_;
  }
  return counted_code_points_;
}

nlohmann::ordered_json ChatLogprobsJson(const Tokenizer& tokenizer,
                                        const std::vector<TokenLogprobEntry>& entries) {
  Json content = Json::array();
  for (const TokenLogprobEntry& entry : entries) {
    Json item;
    item["token"] = TokenText(tokenizer, entry.token_id);
    item["logprob"] = FiniteLogprob(entry.logprob);
    item["bytes"] = TokenBytesJson(tokenizer, entry.token_id);
    Json top = Json::array();
    for (const auto& [id, logprob] : entry.top) {
      Json alternative;
      alternative["token"] = TokenText(tokenizer, id);
      alternative["logprob"] = FiniteLogprob(logprob);
      alternative["bytes"] = TokenBytesJson(tokenizer, id);
      top.push_back(std::move(alternative));
    }
    item["top_logprobs"] = std::move(top);
    content.push_back(std::move(item));
  }
  Json logprobs;
  logprobs["content"] = std::move(content);
  return logprobs;
}

nlohmann::ordered_json CompletionLogprobsJson(const Tokenizer& tokenizer,
                                              const std::vector<TokenLogprobEntry>& entries,
                                              int32_t top_n) {
  Json tokens = Json::array();
  Json token_logprobs = Json::array();
  Json top_logprobs = Json::array();
  Json text_offset = Json::array();
  for (const TokenLogprobEntry& entry : entries) {
    const std::string text = TokenText(tokenizer, entry.token_id);
    tokens.push_back(text);
    token_logprobs.push_back(FiniteLogprob(entry.logprob));
    // The sampled token first, then the alternatives; tokens that decode to
    // the same text share one key (the first, most likely, wins).
    Json top = Json::object();
    top[text] = FiniteLogprob(entry.logprob);
    const size_t n = std::min(entry.top.size(), static_cast<size_t>(std::max(top_n, 0)));
    for (size_t i = 0; i < n; ++i) {
      const std::string alternative = TokenText(tokenizer, entry.top[i].first);
      if (!top.contains(alternative)) top[alternative] = FiniteLogprob(entry.top[i].second);
    }
    top_logprobs.push_back(std::move(top));
    text_offset.push_back(entry.text_offset);
  }
  Json logprobs;
  logprobs["tokens"] = std::move(tokens);
  logprobs["token_logprobs"] = std::move(token_logprobs);
  logprobs["top_logprobs"] = std::move(top_logprobs);
  logprobs["text_offset"] = std::move(text_offset);
  return logprobs;
}

}  // namespace tern::gateway
