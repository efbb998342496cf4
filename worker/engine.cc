#include "worker/engine.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace tern::worker {

struct Engine::Sequence {
  SequenceSpec spec;
  StreamSink sink;
  std::shared_ptr<SequenceHandle> handle;
  std::unique_ptr<KvCache> cache;
  // Prompt (plus resumed tokens) followed by the tokens generated here.
  std::vector<int32_t> tokens;
  // Tokens generated so far, resumed ones included.
  int32_t generated = 0;
  bool prefilled = false;
  bool seed_sent = false;
};

Engine::Engine(const Model* model, EngineOptions options)
    : model_(model), options_(options), loop_([this] { Loop(); }) {}

Engine::~Engine() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  loop_.join();
}

absl::StatusOr<std::shared_ptr<SequenceHandle>> Engine::Submit(SequenceSpec spec, StreamSink sink) {
  const int32_t vocab = model_->config().vocab_size;
  if (spec.prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  for (const auto& [id, bias] : spec.logit_bias) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias names token id ", id, ", outside the vocabulary"));
    }
  }
  for (const std::vector<int32_t>* ids : {&spec.prompt, &spec.resume, &spec.stop_token_ids}) {
    for (int32_t id : *ids) {
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
      }
    }
  }
  if (spec.max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be at least 1");
  if (static_cast<int32_t>(spec.resume.size()) >= spec.max_tokens) {
    return absl::InvalidArgumentError("resume_token_ids already use the whole max_tokens budget");
  }
  const int64_t total = static_cast<int64_t>(spec.prompt.size()) + spec.max_tokens;
  if (total > options_.max_model_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("This model's maximum context length is ", options_.max_model_len,
                     " tokens. However, you requested ", total, " tokens (", spec.prompt.size(),
                     " in the prompt, ", spec.max_tokens, " for the completion)."));
  }
  if (!spec.has_seed) {
    // The seed is reported back so another worker can continue the same stream.
    std::random_device device;
    spec.sampling.seed = (static_cast<uint64_t>(device()) << 32) ^ device();
  }
  auto seq = std::make_unique<Sequence>();
  seq->handle = std::make_shared<SequenceHandle>();
  seq->tokens = spec.prompt;
  seq->tokens.insert(seq->tokens.end(), spec.resume.begin(), spec.resume.end());
  seq->generated = static_cast<int32_t>(spec.resume.size());
  seq->spec = std::move(spec);
  seq->sink = std::move(sink);
  std::shared_ptr<SequenceHandle> handle = seq->handle;

  absl::MutexLock lock(&mu_);
  if (stopping_ || draining_) return absl::UnavailableError("the worker is shutting down");
  const int32_t free_slots = options_.max_num_seqs - running_count_;
  if (static_cast<int32_t>(waiting_.size()) >= options_.max_queue + std::max(0, free_slots)) {
    return absl::ResourceExhaustedError("the worker's queue is full");
  }
  waiting_.push_back(std::move(seq));
  return handle;
}

void Engine::Drain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

EngineLoad Engine::Load() const {
  EngineLoad load;
  {
    absl::MutexLock lock(&mu_);
    load.running = running_count_;
    load.waiting = static_cast<int32_t>(waiting_.size());
    load.steps = steps_;
  }
  load.prompt_tokens = prompt_tokens_.load();
  load.generation_tokens = generation_tokens_.load();
  for (size_t i = 0; i < finished_.size(); ++i) load.finished[i] = finished_[i].load();
  return load;
}

void Engine::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !waiting_.empty() || !running_.empty();
      };
      mu_.Await(absl::Condition(&has_work));
      if (stopping_) {
        for (auto& seq : waiting_) running_.push_back(std::move(seq));
        waiting_.clear();
        mu_.Unlock();
        for (auto& seq : running_) Finish(*seq, FinishReason::kCancelled, -1, absl::OkStatus());
        running_.clear();
        mu_.Lock();
        running_count_ = 0;
        return;
      }
      while (!waiting_.empty() && static_cast<int32_t>(running_.size()) < options_.max_num_seqs) {
        running_.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
      }
      running_count_ = static_cast<int32_t>(running_.size());
      ++steps_;
    }
    // One token per running sequence, round-robin, so no stream stalls
    // behind another for more than one step.
    std::vector<std::unique_ptr<Sequence>> still_running;
    still_running.reserve(running_.size());
    for (auto& seq : running_) {
      if (Step(*seq)) still_running.push_back(std::move(seq));
    }
    running_ = std::move(still_running);
    absl::MutexLock lock(&mu_);
    running_count_ = static_cast<int32_t>(running_.size());
  }
}

bool Engine::Step(Sequence& seq) {
  if (seq.handle->cancelled()) {
    Finish(seq, FinishReason::kCancelled, -1, absl::OkStatus());
    return false;
  }
  const ModelConfig& config = model_->config();
  if (!seq.cache) {
    const int64_t capacity = static_cast<int64_t>(seq.spec.prompt.size()) + seq.spec.max_tokens;
    seq.cache = std::make_unique<KvCache>(config, static_cast<int>(capacity));
  }
  // First step: the whole prompt (with resumed tokens); afterwards the last token.
  absl::Span<const int32_t> input =
      seq.prefilled ? absl::MakeConstSpan(&seq.tokens.back(), 1) : absl::MakeConstSpan(seq.tokens);
  std::vector<float> logits;
  absl::Status status = model_->Forward(input, *seq.cache, &logits);
  if (!seq.prefilled) prompt_tokens_.fetch_add(input.size());
  seq.prefilled = true;
  if (!status.ok()) {
    Finish(seq, FinishReason::kError, -1, status);
    return false;
  }
  for (const auto& [id, bias] : seq.spec.logit_bias) logits[id] += bias;
  const bool may_stop = seq.generated >= seq.spec.min_tokens;
  SamplingOptions sampling = seq.spec.sampling;
  // EOS and stop ids are masked until min_tokens, so they cannot be sampled early.
  if (!may_stop) {
    for (int32_t id : config.eos_token_ids) logits[id] = -INFINITY;
    for (int32_t id : seq.spec.stop_token_ids) logits[id] = -INFINITY;
  }
  const int64_t position = static_cast<int64_t>(seq.tokens.size());
  const int32_t token = SampleToken(logits, sampling, absl::MakeConstSpan(seq.tokens), position,
                                    seq.spec.prompt.size());
  ++seq.generated;
  generation_tokens_.fetch_add(1);

  const bool is_eos = !seq.spec.ignore_eos &&
                      std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), token) !=
                          config.eos_token_ids.end();
  const bool is_stop = std::find(seq.spec.stop_token_ids.begin(), seq.spec.stop_token_ids.end(),
                                 token) != seq.spec.stop_token_ids.end();
  if (may_stop && (is_eos || is_stop)) {
    Finish(seq, FinishReason::kStop, token, absl::OkStatus());
    return false;
  }
  seq.tokens.push_back(token);
  StreamEvent event;
  event.tokens.push_back(token);
  if (!seq.seed_sent) {
    event.has_seed = true;
    event.seed = seq.spec.sampling.seed;
    seq.seed_sent = true;
  }
  if (seq.generated >= seq.spec.max_tokens) {
    finished_[static_cast<size_t>(FinishReason::kLength)].fetch_add(1);
    event.finished = true;
    event.finish_reason = FinishReason::kLength;
    event.prompt_tokens = static_cast<int32_t>(seq.spec.prompt.size());
    event.completion_tokens = seq.generated;
    seq.sink(std::move(event));
    return false;
  }
  seq.sink(std::move(event));
  return true;
}

void Engine::Finish(Sequence& seq, FinishReason reason, int32_t stop_token, absl::Status error) {
  finished_[static_cast<size_t>(reason)].fetch_add(1);
  StreamEvent event;
  if (!seq.seed_sent) {
    event.has_seed = true;
    event.seed = seq.spec.sampling.seed;
    seq.seed_sent = true;
  }
  event.finished = true;
  event.finish_reason = reason;
  event.stop_token_id = stop_token;
  event.prompt_tokens = static_cast<int32_t>(seq.spec.prompt.size());
  event.completion_tokens = seq.generated;
  event.error = std::move(error);
  if (reason == FinishReason::kError) {
    TERN_LOG(Error) << "request " << seq.spec.request_id << " failed: " << event.error.message();
  } else if (reason == FinishReason::kCancelled) {
    TERN_LOG(Info) << "request " << seq.spec.request_id << " cancelled after " << seq.generated
                   << " tokens";
  }
  seq.sink(std::move(event));
}

}  // namespace tern::worker
