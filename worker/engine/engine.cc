#include "worker/engine/engine.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace tern::worker {
namespace {

// How long an idle loop sleeps between checks of its wake condition; it is
// woken at once by Submit, WatchState and the destructor.
constexpr absl::Duration kIdleWait = absl::Milliseconds(200);

bool Contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Runs the warm-up steps (see engine.h) and records their durations.
absl::Status WarmUp(Executor& executor, const EngineOptions& options, StepTimeModel& step_times) {
  constexpr int64_t kWarmUpTokens = 32;
  const int64_t pool_tokens = int64_t{executor.num_blocks()} * executor.block_size();
  const int64_t largest =
      std::min({kWarmUpTokens, int64_t{options.max_num_batched_tokens}, pool_tokens});
  // Scratch blocks: no sequence exists yet, and a block's slots are always
  // written before they are read, so what the warm-up leaves there is harmless.
  std::vector<int32_t> blocks((largest + executor.block_size() - 1) / executor.block_size());
  std::iota(blocks.begin(), blocks.end(), 0);
  const std::vector<int32_t> tokens(largest, 0);
  std::vector<float> logits(executor.config().vocab_size);
  for (const int64_t n : {int64_t{1}, largest}) {
    StepSequence step;
    step.tokens = absl::MakeConstSpan(tokens).subspan(0, n);
    step.block_table = blocks;
    const absl::Time start = absl::Now();
    if (options.before_step_for_testing) options.before_step_for_testing(n);
    TERN_RETURN_IF_ERROR(executor.Step({&step, 1}, absl::MakeSpan(logits)));
    step_times.Observe(n, absl::Now() - start);
    if (n == largest) break;
  }
  return absl::OkStatus();
}

// Whole milliseconds, rounded up so that any estimate is at least 1.
int64_t CeilMilliseconds(absl::Duration d) {
  return static_cast<int64_t>(std::ceil(absl::ToDoubleMilliseconds(d)));
}

}  // namespace

struct Engine::Sequence {
  KvSequenceId id = 0;
  SequenceSpec spec;
  StreamSink sink;
  std::shared_ptr<SequenceHandle> handle;
  // Prompt plus resumed tokens: what is queued in the scheduler at Submit.
  std::vector<int32_t> initial_tokens;
  // The output's progress through spec.constraint; empty when unconstrained.
  std::optional<structured::ConstraintMatcher> matcher;
  // Tokens generated so far, resumed ones included.
  int32_t generated = 0;
  bool seed_sent = false;
  // For the observer: when it was submitted, first scheduled, and last
  // produced a token (InfinitePast: not yet).
  absl::Time submitted;
  absl::Time scheduled = absl::InfinitePast();
  absl::Time last_token = absl::InfinitePast();
  std::optional<absl::Duration> time_to_first_token;
};

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const Model* model, EngineOptions options) {
  if (model == nullptr) return absl::InvalidArgumentError("the engine needs a model");
  if (options.max_num_seqs < 1)
    return absl::InvalidArgumentError("max_num_seqs must be at least 1");
  if (options.max_queue < 0) return absl::InvalidArgumentError("max_queue must not be negative");
  if (options.max_model_len < 1) {
    return absl::InvalidArgumentError("max_model_len must be at least 1");
  }
  if (options.max_num_batched_tokens < 1) {
    return absl::InvalidArgumentError("max_num_batched_tokens must be at least 1");
  }
  options.executor.max_batch_tokens = options.max_num_batched_tokens;
  TERN_ASSIGN_OR_RETURN(std::unique_ptr<Executor> executor,
                        Executor::Create(model, options.executor));
  KvBlockManagerOptions kv_options;
  kv_options.block_size = executor->block_size();
  kv_options.num_blocks = executor->num_blocks();
  kv_options.enable_prefix_caching = options.enable_prefix_caching;
  TERN_ASSIGN_OR_RETURN(std::unique_ptr<KvBlockManager> kv, KvBlockManager::Create(kv_options));
  StepTimeModel step_times;
  if (absl::Status warm = WarmUp(*executor, options, step_times); !warm.ok()) {
    return absl::Status(warm.code(), absl::StrCat("warm-up step: ", warm.message()));
  }
  return std::unique_ptr<Engine>(new Engine(model, std::move(options), std::move(executor),
                                            std::move(kv), std::move(step_times)));
}

Engine::Engine(const Model* model, EngineOptions options, std::unique_ptr<Executor> executor,
               std::unique_ptr<KvBlockManager> kv, StepTimeModel step_times)
    : model_(model),
      options_(std::move(options)),
      executor_(std::move(executor)),
      kv_(std::move(kv)),
      scheduler_(std::make_unique<Scheduler>(
          SchedulerOptions{options_.max_num_seqs, options_.max_num_batched_tokens,
                           options_.enable_prefix_caching},
          kv_.get())),
      constraint_mask_(model_->config().vocab_size),
      step_times_(std::move(step_times)),
      publisher_(static_cast<size_t>(4) * std::max(1, executor_->num_blocks())) {
  load_ = CurrentLoad();
  loop_ = std::thread([this] { Loop(); });
}

Engine::~Engine() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  loop_.join();
}

int32_t Engine::num_kv_blocks() const { return executor_->num_blocks(); }
int32_t Engine::kv_block_size() const { return executor_->block_size(); }
int64_t Engine::decode_weight_bytes() const { return executor_->decode_weight_bytes(); }
const std::string& Engine::gemv_tuning() const { return executor_->gemv_tuning(); }
int32_t Engine::tp() const { return executor_->tp(); }

EngineInfo Engine::Info() const {
  EngineInfo info;
  info.kind = "native";
  info.max_model_len = options_.max_model_len;
  info.max_num_seqs = options_.max_num_seqs;
  info.kv_block_size = kv_block_size();
  info.kv_blocks_total = num_kv_blocks();
  info.enable_prefix_caching = options_.enable_prefix_caching;
  info.vocab_size = model_->config().vocab_size;
  info.eos_token_ids = model_->config().eos_token_ids;
  return info;
}

absl::StatusOr<std::shared_ptr<SequenceHandle>> Engine::Submit(SequenceSpec spec, StreamSink sink) {
  if (absl::Status checked =
          CheckSequenceSpec(spec, model_->config().vocab_size, options_.max_model_len);
      !checked.ok()) {
    return checked;
  }
  const int64_t total = static_cast<int64_t>(spec.prompt.size()) + spec.max_tokens;
  // The last sampled token is never computed, so a sequence needs KV for
  // total - 1 tokens; one that cannot fit the whole pool could never finish.
  const int64_t pool_tokens = int64_t{num_kv_blocks()} * kv_block_size();
  if (total - 1 > pool_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request needs KV cache for ", total - 1,
                     " tokens but this worker's whole KV cache holds ", pool_tokens));
  }
  std::optional<structured::ConstraintMatcher> matcher;
  if (spec.constraint.kind != structured::ConstraintSpec::Kind::kNone) {
    if (options_.constraints == nullptr) {
      return absl::InvalidArgumentError(
          "this worker cannot constrain outputs: its model directory has no tokenizer.json");
    }
    TERN_ASSIGN_OR_RETURN(std::shared_ptr<const structured::CompiledConstraint> compiled,
                          options_.constraints->GetOrCompile(spec.constraint));
    matcher.emplace(std::move(compiled));
    for (const int32_t token : spec.resume) {
      if (!matcher->AcceptToken(token).ok()) {
        return absl::InvalidArgumentError("the resumed tokens break the output constraint");
      }
    }
  }
  if (!spec.has_seed) {
    // The seed is reported back so another worker can continue the same stream.
    std::random_device device;
    spec.sampling.seed = (static_cast<uint64_t>(device()) << 32) ^ device();
  }
  auto seq = std::make_unique<Sequence>();
  seq->submitted = absl::Now();
  seq->handle = std::make_shared<SequenceHandle>();
  seq->initial_tokens = spec.prompt;
  seq->initial_tokens.insert(seq->initial_tokens.end(), spec.resume.begin(), spec.resume.end());
  seq->generated = static_cast<int32_t>(spec.resume.size());
  seq->matcher = std::move(matcher);
  seq->spec = std::move(spec);
  seq->sink = std::move(sink);
  std::shared_ptr<SequenceHandle> handle = seq->handle;

  absl::MutexLock lock(&mu_);
  if (stopping_ || draining_) return absl::UnavailableError("the worker is shutting down");
  const int32_t free_slots = options_.max_num_seqs - load_.running;
  const int64_t waiting = static_cast<int64_t>(submitted_.size()) + load_.waiting;
  if (waiting >= options_.max_queue + std::max(0, free_slots)) {
    return absl::ResourceExhaustedError("the worker's queue is full");
  }
  seq->id = next_id_++;
  submitted_.push_back(std::move(seq));
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
    load = load_;
    load.waiting += static_cast<int32_t>(submitted_.size());
    for (const auto& seq : submitted_) {
      load.queued_prefill_tokens += static_cast<int64_t>(seq->initial_tokens.size());
    }
  }
  load.prompt_tokens = prompt_tokens_.load();
  load.generation_tokens = generation_tokens_.load();
  for (size_t i = 0; i < finished_.size(); ++i) load.finished[i] = finished_[i].load();
  return load;
}

std::shared_ptr<StateSubscription> Engine::WatchState() {
  std::shared_ptr<StateSubscription> subscription = publisher_.Subscribe();
  absl::MutexLock lock(&mu_);
  new_subscribers_ = true;  // wakes an idle loop for the first snapshot
  return subscription;
}

EngineLoad Engine::CurrentLoad() const {
  EngineLoad load;
  load.running = scheduler_->num_running();
  load.waiting = scheduler_->num_waiting();
  load.total_kv_blocks = kv_->num_blocks();
  load.free_kv_blocks = kv_->num_free_blocks();
  load.cached_kv_blocks = kv_->num_cached_blocks();
  load.queued_prefill_tokens = scheduler_->QueuedPrefillTokens();
  load.preemptions = scheduler_->preemptions();
  load.step_running = step_running_;
  // Between steps: a step of what is queued now, as the scheduler would cut it.
  const int64_t next_step_tokens = std::clamp<int64_t>(load.running + load.queued_prefill_tokens, 1,
                                                       options_.max_num_batched_tokens);
  load.expected_step_ms = CeilMilliseconds(step_running_ ? running_step_expected_
                                                         : step_times_.Estimate(next_step_tokens));
  const KvBlockManagerStats stats = kv_->stats();
  load.prefix_query_tokens = static_cast<uint64_t>(stats.prefix_query_tokens);
  load.prefix_hit_tokens = static_cast<uint64_t>(stats.prefix_hit_tokens);
  load.prompt_tokens = prompt_tokens_.load();
  load.generation_tokens = generation_tokens_.load();
  for (size_t i = 0; i < finished_.size(); ++i) load.finished[i] = finished_[i].load();
  return load;
}

void Engine::Loop() {
  while (true) {
    bool stopping;
    {
      absl::MutexLock lock(&mu_);
      stopping = stopping_;
    }
    if (stopping) break;
    TakeSubmittedAndCancelled();
    const bool worked = RunStep();
    const bool busy = !live_.empty();
    // A sequence that ended changes the load a router routes by: push it now.
    PublishState(busy && final_events_.empty() ? StatePublisher::Urgency::kCadence
                                               : StatePublisher::Urgency::kFlush);
    DeliverFinalEvents();
    if (busy && worked) continue;
    // Idle (or, impossibly, live sequences with nothing to compute): sleep
    // until there is something to do.
    absl::MutexLock lock(&mu_);
    auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || !submitted_.empty() || new_subscribers_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&has_work), busy ? absl::Milliseconds(1) : kIdleWait);
  }
  // Stopping: every sequence ends cancelled, subscriptions close.
  std::deque<std::unique_ptr<Sequence>> submitted;
  {
    absl::MutexLock lock(&mu_);
    submitted.swap(submitted_);
  }
  for (auto& seq : submitted) {
    finished_[static_cast<size_t>(FinishReason::kCancelled)].fetch_add(1);
    seq->sink(LastEvent(*seq, FinishReason::kCancelled));
  }
  std::vector<Sequence*> live;
  for (auto& [id, seq] : live_) live.push_back(seq.get());
  std::sort(live.begin(), live.end(), [](Sequence* a, Sequence* b) { return a->id < b->id; });
  for (Sequence* seq : live) Finish(*seq, FinishReason::kCancelled, -1, absl::OkStatus());
  PublishState(StatePublisher::Urgency::kFlush);
  DeliverFinalEvents();
  publisher_.CloseAll();
}

void Engine::TakeSubmittedAndCancelled() {
  std::deque<std::unique_ptr<Sequence>> submitted;
  {
    absl::MutexLock lock(&mu_);
    submitted.swap(submitted_);
  }
  for (auto& seq : submitted) {
    const KvSequenceId id = seq->id;
    const absl::Status added = scheduler_->Add(id, seq->initial_tokens);
    TERN_CHECK(added.ok()) << added;
    live_.emplace(id, std::move(seq));
  }
  std::vector<Sequence*> cancelled;
  for (auto& [id, seq] : live_) {
    if (seq->handle->cancelled()) cancelled.push_back(seq.get());
  }
  for (Sequence* seq : cancelled) Finish(*seq, FinishReason::kCancelled, -1, absl::OkStatus());
}

bool Engine::RunStep() {
  if (live_.empty()) return false;
  StepPlan plan = scheduler_->Schedule();
  for (auto& [id, status] : plan.failed) {
    auto it = live_.find(id);
    if (it != live_.end()) Finish(*it->second, FinishReason::kError, -1, status);
  }
  std::erase_if(plan.chunks, [this](const ScheduledChunk& c) { return !live_.contains(c.id); });
  if (plan.chunks.empty()) return false;

  const int32_t vocab = model_->config().vocab_size;
  std::vector<StepSequence> batch;
  batch.reserve(plan.chunks.size());
  size_t logit_rows = 0;
  int64_t step_tokens = 0;
  uint64_t prompt_tokens = 0;
  const absl::Time planned = absl::Now();
  for (const ScheduledChunk& chunk : plan.chunks) {
    const ScheduledSequence* s = scheduler_->Find(chunk.id);
    Sequence& planned_seq = *live_.at(chunk.id);
    if (planned_seq.scheduled == absl::InfinitePast()) planned_seq.scheduled = planned;
    const int32_t prompt_len = static_cast<int32_t>(planned_seq.initial_tokens.size());
    // Prompt tokens computed: recomputation after a preemption counts again,
    // cached ones do not.
    prompt_tokens += static_cast<uint64_t>(std::max(
        0, std::min(chunk.start + chunk.count, prompt_len) - std::min(chunk.start, prompt_len)));
    StepSequence step;
    step.tokens = absl::MakeConstSpan(s->tokens).subspan(chunk.start, chunk.count);
    step.start_position = chunk.start;
    step.block_table = *kv_->BlockTable(chunk.id);
    step.want_logits = chunk.want_logits;
    if (chunk.want_logits) ++logit_rows;
    step_tokens += chunk.count;
    batch.push_back(step);
  }
  if (logits_.size() < logit_rows * vocab) logits_.resize(logit_rows * vocab);
  step_running_ = true;
  running_step_expected_ = step_times_.Estimate(step_tokens);
  if (running_step_expected_ >= kLongStep) PublishState(StatePublisher::Urgency::kNow);
  const absl::Time step_start = absl::Now();
  if (options_.before_step_for_testing) options_.before_step_for_testing(step_tokens);
  const absl::Status status = executor_->Step(batch, absl::MakeSpan(logits_));
  // Failed steps stop at validation, so their durations say nothing.
  const absl::Duration step_duration = absl::Now() - step_start;
  if (status.ok()) {
    step_times_.Observe(step_tokens, step_duration);
    if (options_.observer != nullptr) {
      options_.observer->OnStep(
          StepReport{step_duration, static_cast<int32_t>(plan.chunks.size()), step_tokens});
    }
  }
  step_running_ = false;
  {
    absl::MutexLock lock(&mu_);
    ++load_.steps;
  }
  if (!status.ok()) {
    for (const ScheduledChunk& chunk : plan.chunks) {
      Finish(*live_.at(chunk.id), FinishReason::kError, -1, status);
    }
    return true;
  }
  scheduler_->Commit(plan);
  prompt_tokens_.fetch_add(prompt_tokens);
  size_t row = 0;
  for (const ScheduledChunk& chunk : plan.chunks) {
    if (!chunk.want_logits) continue;
    SampleAndEmit(*live_.at(chunk.id),
                  absl::MakeConstSpan(logits_).subspan(row * vocab, static_cast<size_t>(vocab)));
    ++row;
  }
  return true;
}

void Engine::SampleAndEmit(Sequence& seq, absl::Span<const float> raw_logits) {
  const ModelConfig& config = model_->config();
  // One buffer for every draw: a fresh vocabulary-sized vector each token
  // cost more in page faults than the draw itself.
  std::vector<float>& logits = sample_logits_;
  logits.assign(raw_logits.begin(), raw_logits.end());
  for (const auto& [id, bias] : seq.spec.logit_bias) logits[id] += bias;
  const bool may_stop = seq.generated >= seq.spec.min_tokens;
  // EOS and stop ids are masked until min_tokens, so they cannot be sampled early.
  if (!may_stop) {
    for (int32_t id : config.eos_token_ids) logits[id] = -INFINITY;
    for (int32_t id : seq.spec.stop_token_ids) logits[id] = -INFINITY;
  }
  if (seq.matcher) {
    const absl::Time mask_start = absl::Now();
    const bool continues = ApplyConstraint(seq, logits, may_stop);
    if (options_.observer != nullptr) options_.observer->OnConstraintMask(absl::Now() - mask_start);
    if (!continues) {
      Finish(seq, FinishReason::kError, -1,
             absl::InternalError("no token of the vocabulary can continue the constrained output"));
      return;
    }
  }
  const std::vector<int32_t>& tokens = scheduler_->Find(seq.id)->tokens;
  const int64_t position = static_cast<int64_t>(tokens.size());
  const int32_t token = SampleToken(logits, seq.spec.sampling, absl::MakeConstSpan(tokens),
                                    position, seq.spec.prompt.size());
  ++seq.generated;
  generation_tokens_.fetch_add(1);
  const absl::Time now = absl::Now();
  if (seq.last_token == absl::InfinitePast()) {
    seq.time_to_first_token = now - seq.submitted;
  } else if (options_.observer != nullptr) {
    options_.observer->OnInterTokenLatency(now - seq.last_token);
  }
  seq.last_token = now;

  const bool is_eos =
      (!seq.spec.ignore_eos || seq.matcher) && Contains(config.eos_token_ids, token);
  const bool is_stop = Contains(seq.spec.stop_token_ids, token);
  if (may_stop && (is_eos || is_stop)) {
    Finish(seq, FinishReason::kStop, token, absl::OkStatus());
    return;
  }
  // The mask allowed only tokens the matcher accepts.
  if (seq.matcher) TERN_CHECK(seq.matcher->AcceptToken(token).ok()) << "masked token " << token;
  const absl::Status appended = scheduler_->AppendToken(seq.id, token);
  TERN_CHECK(appended.ok()) << appended;
  StreamEvent event;
  event.tokens.push_back(token);
  if (seq.spec.logprobs) {
    event.logprobs.push_back(ComputeLogprobs(raw_logits, token, seq.spec.top_logprobs));
  }
  if (!seq.seed_sent) {
    event.has_seed = true;
    event.seed = seq.spec.sampling.seed;
    seq.seed_sent = true;
  }
  // A constrained output that nothing may extend is complete.
  const bool complete = seq.matcher && seq.matcher->MustEnd();
  if (seq.generated < seq.spec.max_tokens && !complete) {
    seq.sink(std::move(event));
    return;
  }
  const FinishReason reason = complete ? FinishReason::kStop : FinishReason::kLength;
  StreamEvent last = LastEvent(seq, reason);
  event.finished = true;
  event.finish_reason = last.finish_reason;
  event.prompt_tokens = last.prompt_tokens;
  event.completion_tokens = last.completion_tokens;
  event.cached_prompt_tokens = last.cached_prompt_tokens;
  finished_[static_cast<size_t>(reason)].fetch_add(1);
  ReportFinished(seq, reason);
  final_events_.emplace_back(std::move(seq.sink), std::move(event));
  const KvSequenceId id = seq.id;
  TERN_CHECK(scheduler_->Remove(id).ok());
  live_.erase(id);
}

bool Engine::ApplyConstraint(Sequence& seq, std::vector<float>& logits, bool may_stop) {
  const ModelConfig& config = model_->config();
  // EOS and stop ids are special tokens the grammar never allows; they come
  // back where the output is a whole match.
  const bool may_end = may_stop && seq.matcher->CanEnd();
  std::vector<std::pair<int32_t, float>> enders;
  if (may_end) {
    for (int32_t id : config.eos_token_ids) enders.emplace_back(id, logits[id]);
    for (int32_t id : seq.spec.stop_token_ids) enders.emplace_back(id, logits[id]);
  }
  seq.matcher->FillAllowedTokens(&constraint_mask_);
  const std::vector<uint64_t>& words = constraint_mask_.words();
  const size_t vocab = logits.size();
  for (size_t w = 0; w < words.size(); ++w) {
    if (words[w] == ~uint64_t{0}) continue;
    const size_t end = std::min(vocab, (w + 1) * 64);
    for (size_t id = w * 64; id < end; ++id) {
      if (((words[w] >> (id & 63)) & 1U) == 0) logits[id] = -INFINITY;
    }
  }
  for (const auto& [id, logit] : enders) logits[id] = logit;
  return may_end || constraint_mask_.CountAllowed() > 0;
}

StreamEvent Engine::LastEvent(Sequence& seq, FinishReason reason) const {
  StreamEvent event;
  if (!seq.seed_sent) {
    event.has_seed = true;
    event.seed = seq.spec.sampling.seed;
    seq.seed_sent = true;
  }
  event.finished = true;
  event.finish_reason = reason;
  event.prompt_tokens = static_cast<int32_t>(seq.spec.prompt.size());
  event.completion_tokens = seq.generated;
  const ScheduledSequence* scheduled = scheduler_->Find(seq.id);
  event.cached_prompt_tokens =
      scheduled == nullptr ? 0 : std::max(0, scheduled->first_cached_tokens);
  return event;
}

void Engine::ReportFinished(const Sequence& seq, FinishReason reason) const {
  if (options_.observer == nullptr) return;
  const absl::Time now = absl::Now();
  SequenceReport report;
  report.reason = reason;
  report.queue_time = (seq.scheduled == absl::InfinitePast() ? now : seq.scheduled) - seq.submitted;
  report.time_to_first_token = seq.time_to_first_token;
  report.e2e = now - seq.submitted;
  report.prompt_tokens = static_cast<int32_t>(seq.spec.prompt.size());
  report.generation_tokens = seq.generated - static_cast<int32_t>(seq.spec.resume.size());
  options_.observer->OnSequenceFinished(report);
}

void Engine::Finish(Sequence& seq, FinishReason reason, int32_t stop_token, absl::Status error) {
  finished_[static_cast<size_t>(reason)].fetch_add(1);
  ReportFinished(seq, reason);
  StreamEvent event = LastEvent(seq, reason);
  event.stop_token_id = stop_token;
  event.error = std::move(error);
  if (reason == FinishReason::kError) {
    TERN_LOG(Error) << "request " << seq.spec.request_id << " failed: " << event.error.message();
  } else if (reason == FinishReason::kCancelled) {
    TERN_LOG(Info) << "request " << seq.spec.request_id << " cancelled after " << seq.generated
                   << " tokens";
  }
  final_events_.emplace_back(std::move(seq.sink), std::move(event));
  const KvSequenceId id = seq.id;
  TERN_CHECK(scheduler_->Remove(id).ok());
  live_.erase(id);
}

void Engine::DeliverFinalEvents() {
  for (auto& [sink, event] : final_events_) sink(std::move(event));
  final_events_.clear();
}

void Engine::PublishState(StatePublisher::Urgency urgency) {
  EngineLoad load = CurrentLoad();
  {
    absl::MutexLock lock(&mu_);
    load.steps = load_.steps;
    load_ = load;
    new_subscribers_ = false;
  }
  // Compared with the last push as a router would see it: requests submitted
  // but not yet taken count as waiting. (Comparing the loop's own view let a
  // push that counted a just-submitted request stand after that request
  // ended, until the next cadence push.)
  const EngineLoad published = Load();
  publisher_.Publish(
      kv_->DrainEvents(), published, urgency, [&published] { return published; },
      [this] { return kv_->SnapshotEvents(); });
}

}  // namespace tern::worker
