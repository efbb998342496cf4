#include "worker/vllm/vllm_engine.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "nlohmann/json.hpp"
#include "worker/vllm/events/block_rekeyer.h"
#include "worker/vllm/events/kv_event_subscriber.h"

namespace tern::worker::vllm {
namespace {

constexpr char kCompletionsPath[] = "/v1/completions";

// KV events a subscription may fall behind by, in block hashes, before it is
// resynchronised with a snapshot (as the native engine bounds it).
constexpr size_t kMaxPendingHashes = size_t{1} << 20;

// "token_id:123" (return_tokens_as_token_ids) -> 123.
std::optional<int32_t> TokenIdFromLogprobKey(const std::string& key) {
  absl::string_view view = key;
  if (!absl::ConsumePrefix(&view, "token_id:")) return std::nullopt;
  int32_t id = 0;
  if (!absl::SimpleAtoi(view, &id)) return std::nullopt;
  return id;
}

// vLLM's `structured_outputs` request field (vLLM 0.10.2 and later; the
// older guided_* fields are gone since 0.12) for a constraint.
nlohmann::json StructuredOutputs(const structured::ConstraintSpec& constraint) {
  using Kind = structured::ConstraintSpec::Kind;
  switch (constraint.kind) {
    case Kind::kJsonSchema:
      // Validated by the gateway; vLLM takes the schema as an object.
      return {{"json", nlohmann::json::parse(constraint.json_schema, nullptr, false)}};
    case Kind::kJsonObject:
      return {{"json_object", true}};
    case Kind::kRegex:
      return {{"regex", constraint.regex}};
    case Kind::kChoice:
      return {{"choice", constraint.choices}};
    case Kind::kNone:
      break;
  }
  return nullptr;
}

double LogprobValue(const nlohmann::json& value) {
  // vLLM sends -inf as -9999.0; JSON has no infinities.
  return value.is_number() ? value.get<double>() : -9999.0;
}

}  // namespace

struct VllmEngine::Request {
  uint64_t id = 0;
  SequenceSpec spec;
  StreamSink sink;
  std::shared_ptr<SequenceHandle> handle;
  absl::Time submitted;
  std::optional<absl::Time> first_token;
  absl::Time last_token;
  // Guarded by the engine's mu_: the open stream, for Cancel.
  std::shared_ptr<SseStream> stream;
  bool cancelled = false;
  // Owned by the request thread.
  bool seed_sent = false;
  int32_t generated = 0;  // resumed tokens included
  int32_t prompt_tokens_reported = 0;
  int32_t cached_tokens = 0;
  bool has_usage = false;
  // A token that may turn out to be the stop token, held until the next
  // chunk shows whether the sequence goes on.
  std::optional<int32_t> held;
  std::optional<TokenLogprobs> held_logprobs;
};

namespace {

// Notes a chunk's usage (the one vLLM sends after the finish, with
// stream_options.include_usage): that it came, and the prompt tokens vLLM
// found cached (sent with --enable-prompt-tokens-details).
void TakeUsage(const nlohmann::json& chunk, bool* has_usage, int32_t* cached_tokens) {
  const auto usage = chunk.find("usage");
  if (usage == chunk.end() || !usage->is_object()) return;
  *has_usage = true;
  const auto details = usage->find("prompt_tokens_details");
  if (details == usage->end() || !details->is_object()) return;
  const auto cached = details->find("cached_tokens");
  if (cached != details->end() && cached->is_number_integer()) {
    *cached_tokens = cached->get<int32_t>();
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<VllmEngine>> VllmEngine::Create(VllmEngineOptions options) {
  if (options.server.host.empty() || options.server.port == 0) {
    return absl::InvalidArgumentError("the vLLM server needs a host and a port");
  }
  if (options.max_num_seqs < 1)
    return absl::InvalidArgumentError("max_num_seqs must be at least 1");
  if (options.max_queue < 0) return absl::InvalidArgumentError("max_queue must not be negative");
  if (options.max_model_len < 2) {
    return absl::InvalidArgumentError("max_model_len must be at least 2");
  }
  if (options.vocab_size < 1) return absl::InvalidArgumentError("vocab_size must be positive");
  if (options.block_size < 0) return absl::InvalidArgumentError("block_size must not be negative");
  if (options.served_model_name.empty() && options.server.model.empty()) {
    return absl::InvalidArgumentError("the vLLM server needs a model name");
  }
  auto engine = std::unique_ptr<VllmEngine>(new VllmEngine(std::move(options)));
  engine->monitor_ = std::thread([e = engine.get()] { e->MonitorLoop(); });
  engine->events_ = std::thread([e = engine.get()] { e->EventLoop(); });
  return engine;
}

VllmEngine::VllmEngine(VllmEngineOptions options)
    : options_(std::move(options)),
      target_{options_.server.host, options_.server.port},
      publisher_(kMaxPendingHashes) {
  absl::MutexLock lock(&mu_);
  block_size_ = options_.block_size;
}

VllmEngine::~VllmEngine() {
  absl::flat_hash_map<uint64_t, std::thread> threads;
  std::vector<std::thread> finished;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    draining_ = true;
    for (auto& [id, request] : requests_) {
      request->cancelled = true;
      if (request->stream) request->stream->Abort();
    }
  }
  // Request threads end once their streams are aborted; they move
  // themselves to finished_threads_.
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (threads_.empty()) {
        finished = std::move(finished_threads_);
        break;
      }
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  for (std::thread& t : finished) t.join();
  if (monitor_.joinable()) monitor_.join();
  if (events_.joinable()) events_.join();
  publisher_.CloseAll();
}

absl::Status VllmEngine::ConfigError() const {
  absl::MutexLock lock(&mu_);
  return config_error_;
}

bool VllmEngine::ready() const {
  absl::MutexLock lock(&mu_);
  return healthy_ && block_size_ > 0;
}

bool VllmEngine::healthy() const {
  absl::MutexLock lock(&mu_);
  return healthy_;
}

void VllmEngine::MonitorLoop() {
  absl::Time next_health = absl::InfinitePast();
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    const absl::Time now = absl::Now();
    if (now >= next_health) {
      absl::StatusOr<HttpReply> health = HttpGet(target_, "/health", absl::Seconds(2));
      const bool ok = health.ok() && health->status == 200;
      absl::MutexLock lock(&mu_);
      if (ok != healthy_) {
        TERN_LOG(Info) << "vLLM at " << options_.server.url << (ok ? " is up" : " is down")
                       << (health.ok() ? "" : absl::StrCat(": ", health.status().message()));
      }
      healthy_ = ok;
      next_health = now + absl::Seconds(1);
    }
    absl::StatusOr<HttpReply> metrics = HttpGet(target_, "/metrics", absl::Seconds(2));
    if (metrics.ok() && metrics->status == 200) {
      const std::string& text = metrics->body;
      std::optional<double> usage = PrometheusSample(text, "vllm:kv_cache_usage_perc");
      if (!usage) usage = PrometheusSample(text, "vllm:gpu_cache_usage_perc");
      std::optional<std::string> size =
          PrometheusLabel(text, "vllm:cache_config_info", "block_size");
      std::optional<std::string> blocks =
          PrometheusLabel(text, "vllm:cache_config_info", "num_gpu_blocks");
      absl::MutexLock lock(&mu_);
      server_running_ = PrometheusSample(text, "vllm:num_requests_running").value_or(0);
      server_waiting_ = PrometheusSample(text, "vllm:num_requests_waiting").value_or(0);
      server_kv_usage_ = usage.value_or(0);
      int32_t server_size = 0;
      if (!size || !absl::SimpleAtoi(*size, &server_size) || server_size <= 0) {
        if (options_.block_size == 0) {
          config_error_ = absl::FailedPreconditionError(
              absl::StrCat("vLLM at ", options_.server.url,
                           " does not state its block size in vllm:cache_config_info; pass "
                           "--block-size (vLLM's --block-size)"));
        }
      } else if (options_.block_size > 0 && server_size != options_.block_size) {
        config_error_ = absl::FailedPreconditionError(
            absl::StrCat("vLLM at ", options_.server.url, " runs --block-size ", server_size,
                         " but this worker was configured with block size ", options_.block_size));
      } else {
        block_size_ = server_size;
        config_error_ = absl::OkStatus();
      }
      int64_t total = 0;
      if (blocks && absl::SimpleAtoi(*blocks, &total)) blocks_total_ = total;
    }
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.poll_interval);
  }
}

void VllmEngine::EventLoop() {
  std::unique_ptr<KvEventSubscriber> subscriber;
  if (!options_.server.events.empty()) {
    KvEventSubscriberOptions sub_options;
    sub_options.endpoint = options_.server.events;
    sub_options.replay_endpoint = options_.server.replay;
    sub_options.topic = options_.server.topic;
    absl::StatusOr<std::unique_ptr<KvEventSubscriber>> created =
        KvEventSubscriber::Create(sub_options);
    if (created.ok()) {
      subscriber = *std::move(created);
    } else {
      TERN_LOG(Error) << "cannot follow vLLM's KV events at " << options_.server.events << ": "
                      << created.status().message();
    }
  }
  // The rekeyer is created once the block size is known.
  std::unique_ptr<BlockRekeyer> rekeyer;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      if (rekeyer == nullptr && block_size_ > 0) {
        rekeyer = std::make_unique<BlockRekeyer>(block_size_);
      }
    }
    std::vector<KvEvent> events;
    uint64_t batches = 0;
    if (subscriber != nullptr && rekeyer != nullptr) {
      for (KvEventDelivery& delivery : subscriber->Poll(absl::Milliseconds(20))) {
        switch (delivery.kind) {
          case KvEventDelivery::Kind::kRestarted:
          case KvEventDelivery::Kind::kLost: {
            TERN_LOG(Warning) << "vLLM at " << options_.server.url
                              << (delivery.kind == KvEventDelivery::Kind::kRestarted
                                      ? " restarted"
                                      : " lost KV events beyond its replay buffer")
                              << ": its prefix index starts again from empty";
            rekeyer->Clear();
            events.clear();
            KvEvent cleared;
            cleared.kind = KvEventKind::kAllBlocksCleared;
            events.push_back(std::move(cleared));
            break;
          }
          case KvEventDelivery::Kind::kBatch:
            ++batches;
            for (const VllmEvent& event : delivery.batch.events) rekeyer->Apply(event, &events);
            break;
        }
      }
    } else {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(20));
    }
    EngineLoad load;
    {
      absl::MutexLock lock(&mu_);
      progress_ += batches;
      if (subscriber != nullptr) {
        const KvEventSubscriberStats& s = subscriber->stats();
        stats_.event_batches = s.batches;
        stats_.replays = s.replays;
        stats_.replayed_batches = s.replayed_batches;
        stats_.gaps = s.gaps;
        stats_.lost = s.lost;
        stats_.restarts = s.restarts;
        stats_.undecodable = s.undecodable;
      }
      if (rekeyer != nullptr) {
        const RekeyStats& r = rekeyer->stats();
        stats_.blocks_stored = r.stored_blocks;
        stats_.blocks_removed = r.removed_blocks;
        stats_.blocks_skipped = r.unknown_parent_blocks + r.wrong_block_size_blocks +
                                r.extra_keys_blocks + r.other_medium_blocks;
        stats_.cached_blocks = static_cast<int64_t>(rekeyer->blocks());
      }
      load = LoadLocked();
    }
    publisher_.Publish(
        std::move(events), load, StatePublisher::Urgency::kCadence, [&] { return load; },
        [&] { return rekeyer != nullptr ? rekeyer->Snapshot() : std::vector<KvEvent>(); });
  }
}

EngineLoad VllmEngine::LoadLocked() const {
  EngineLoad load;
  int32_t own_running = 0;
  int32_t own_waiting = 0;
  int64_t queued_prefill = 0;
  for (const auto& [id, request] : requests_) {
    if (request->first_token) {
      ++own_running;
    } else {
      ++own_waiting;
      queued_prefill +=
          static_cast<int64_t>(request->spec.prompt.size() + request->spec.resume.size());
    }
  }
  load.running = std::max(own_running, static_cast<int32_t>(std::lround(server_running_)));
  load.waiting = std::max(own_waiting, static_cast<int32_t>(std::lround(server_waiting_)));
  load.steps = progress_;
  load.total_kv_blocks = blocks_total_;
  load.free_kv_blocks =
      blocks_total_ -
      std::min<int64_t>(blocks_total_, std::llround(server_kv_usage_ * blocks_total_));
  load.cached_kv_blocks = stats_.cached_blocks;
  load.queued_prefill_tokens = queued_prefill;
  load.prefix_query_tokens = prefix_query_tokens_;
  load.prefix_hit_tokens = prefix_hit_tokens_;
  load.prompt_tokens = prompt_tokens_;
  load.generation_tokens = generation_tokens_;
  load.finished = finished_;
  return load;
}

EngineLoad VllmEngine::Load() const {
  absl::MutexLock lock(&mu_);
  return LoadLocked();
}

std::shared_ptr<StateSubscription> VllmEngine::WatchState() { return publisher_.Subscribe(); }

EngineInfo VllmEngine::Info() const {
  absl::MutexLock lock(&mu_);
  EngineInfo info;
  info.kind = "vllm";
  info.max_model_len = options_.max_model_len;
  info.max_num_seqs = options_.max_num_seqs;
  info.kv_block_size = block_size_;
  info.kv_blocks_total = blocks_total_;
  info.enable_prefix_caching = true;
  info.vocab_size = options_.vocab_size;
  info.eos_token_ids = options_.eos_token_ids;
  return info;
}

VllmEngineStats VllmEngine::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void VllmEngine::Drain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

absl::StatusOr<std::shared_ptr<SequenceHandle>> VllmEngine::Submit(SequenceSpec spec,
                                                                   StreamSink sink) {
  if (absl::Status checked = CheckSequenceSpec(spec, options_.vocab_size, options_.max_model_len);
      !checked.ok()) {
    return checked;
  }
  if (spec.constraint.kind != structured::ConstraintSpec::Kind::kNone && !spec.resume.empty()) {
    // vLLM would start the grammar over at the resumed tokens.
    return absl::InvalidArgumentError(
        "a constrained sequence cannot be resumed on a vLLM engine: vLLM's structured outputs "
        "start from the first generated token");
  }
  if (!spec.has_seed) {
    // Reported back so another worker can continue with the same seed. 63
    // bits: vLLM takes a Python int, and torch seeds are signed 64-bit.
    std::random_device device;
    spec.sampling.seed = ((static_cast<uint64_t>(device()) << 32) ^ device()) >> 1;
  }
  auto request = std::make_shared<Request>();
  request->spec = std::move(spec);
  request->sink = std::move(sink);
  request->submitted = absl::Now();
  // Threads of ended requests are joined here, outside of their own runs
  // (they have returned or are about to).
  std::vector<std::thread> ended;
  {
    absl::MutexLock lock(&mu_);
    ended = std::move(finished_threads_);
  }
  for (std::thread& t : ended) t.join();
  std::shared_ptr<SequenceHandle> handle;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) return absl::UnavailableError("the worker is draining");
    if (static_cast<int64_t>(requests_.size()) >=
        int64_t{options_.max_num_seqs} + options_.max_queue) {
      return absl::ResourceExhaustedError("the worker's queue is full");
    }
    request->id = next_id_++;
    std::weak_ptr<Request> weak = request;
    request->handle = std::make_shared<SequenceHandle>([this, weak] {
      std::shared_ptr<Request> r = weak.lock();
      if (r == nullptr) return;
      absl::MutexLock lock(&mu_);
      r->cancelled = true;
      if (r->stream) r->stream->Abort();
    });
    handle = request->handle;
    requests_[request->id] = request;
    threads_[request->id] = std::thread([this, request] { RunRequest(request); });
  }
  return handle;
}

std::string VllmEngine::RequestBody(const Request& request) const {
  const SequenceSpec& spec = request.spec;
  nlohmann::json body;
  body["model"] =
      options_.server.model.empty() ? options_.served_model_name : options_.server.model;
  std::vector<int32_t> prompt = spec.prompt;
  prompt.insert(prompt.end(), spec.resume.begin(), spec.resume.end());
  body["prompt"] = prompt;
  const int32_t resumed = static_cast<int32_t>(spec.resume.size());
  body["max_tokens"] = spec.max_tokens - resumed;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  body["return_token_ids"] = true;
  body["temperature"] = spec.sampling.temperature;
  body["top_p"] = spec.sampling.top_p;
  body["top_k"] = spec.sampling.top_k > 0 ? spec.sampling.top_k : -1;
  body["min_p"] = spec.sampling.min_p;
  body["presence_penalty"] = spec.sampling.presence_penalty;
  body["frequency_penalty"] = spec.sampling.frequency_penalty;
  body["repetition_penalty"] = spec.sampling.repetition_penalty;
  body["seed"] = spec.sampling.seed;
  body["ignore_eos"] = spec.ignore_eos;
  body["min_tokens"] = std::max(0, spec.min_tokens - resumed);
  if (!spec.stop_token_ids.empty()) body["stop_token_ids"] = spec.stop_token_ids;
  if (!spec.logit_bias.empty()) {
    nlohmann::json bias = nlohmann::json::object();
    for (const auto& [id, value] : spec.logit_bias) bias[std::to_string(id)] = value;
    body["logit_bias"] = bias;
  }
  if (spec.logprobs) {
    body["logprobs"] = spec.top_logprobs;
    body["return_tokens_as_token_ids"] = true;
  }
  if (spec.constraint.kind != structured::ConstraintSpec::Kind::kNone) {
    body["structured_outputs"] = StructuredOutputs(spec.constraint);
  }
  body["skip_special_tokens"] = false;
  body["request_id"] =
      spec.request_id.empty() ? absl::StrCat("tern-", request.id) : spec.request_id;
  return body.dump();
}

void VllmEngine::RunRequest(std::shared_ptr<Request> request) {
  Request& r = *request;
  const SequenceSpec& spec = r.spec;
  r.generated = static_cast<int32_t>(spec.resume.size());
  const auto is_stop_candidate = [&](int32_t token) {
    if (std::find(spec.stop_token_ids.begin(), spec.stop_token_ids.end(), token) !=
        spec.stop_token_ids.end()) {
      return true;
    }
    return !spec.ignore_eos &&
           std::find(options_.eos_token_ids.begin(), options_.eos_token_ids.end(), token) !=
               options_.eos_token_ids.end();
  };
  // Sends `tokens` (and their logprobs) as one event.
  const auto emit = [&](std::vector<int32_t> tokens, std::vector<TokenLogprobs> logprobs) {
    if (tokens.empty()) return;
    StreamEvent event;
    event.tokens = std::move(tokens);
    event.logprobs = std::move(logprobs);
    if (!r.seed_sent) {
      event.has_seed = true;
      event.seed = spec.sampling.seed;
      r.seed_sent = true;
    }
    r.sink(std::move(event));
  };

  FinishReason reason = FinishReason::kError;
  absl::Status error;
  int32_t stop_token = -1;
  absl::StatusOr<std::unique_ptr<SseStream>> opened = SseStream::Open(
      target_, kCompletionsPath, RequestBody(r), options_.connect_timeout, options_.read_timeout);
  std::shared_ptr<SseStream> stream;
  if (opened.ok()) {
    stream = std::shared_ptr<SseStream>(*std::move(opened));
    absl::MutexLock lock(&mu_);
    r.stream = stream;
    if (r.cancelled) stream->Abort();
  } else {
    error = opened.status();
  }
  bool finished = false;
  while (stream != nullptr && !finished) {
    absl::StatusOr<std::optional<std::string>> next = stream->Next();
    if (!next.ok()) {
      error = next.status();
      break;
    }
    if (!next->has_value()) {
      error = absl::UnavailableError("vLLM ended the stream without a finish reason");
      break;
    }
    nlohmann::json chunk = nlohmann::json::parse(**next, nullptr, false);
    if (!chunk.is_object()) {
      error = absl::UnavailableError("vLLM sent an event that is not JSON");
      break;
    }
    if (chunk.contains("error")) {
      const nlohmann::json& e = chunk["error"];
      error = absl::UnavailableError(
          absl::StrCat("vLLM failed the request: ",
                       e.is_object() && e.contains("message") && e["message"].is_string()
                           ? e["message"].get<std::string>()
                           : e.dump()));
      break;
    }
    TakeUsage(chunk, &r.has_usage, &r.cached_tokens);
    if (!chunk.contains("choices") || !chunk["choices"].is_array() || chunk["choices"].empty()) {
      continue;
    }
    const nlohmann::json& choice = chunk["choices"][0];
    std::vector<int32_t> tokens;
    if (r.held) tokens.push_back(*r.held);
    std::vector<TokenLogprobs> logprobs;
    if (r.held_logprobs) logprobs.push_back(*r.held_logprobs);
    r.held.reset();
    r.held_logprobs.reset();
    const size_t first_new = tokens.size();
    if (choice.contains("token_ids") && choice["token_ids"].is_array()) {
      for (const nlohmann::json& id : choice["token_ids"]) {
        if (id.is_number_integer()) tokens.push_back(id.get<int32_t>());
      }
    }
    if (spec.logprobs && choice.contains("logprobs") && choice["logprobs"].is_object()) {
      const nlohmann::json& lp = choice["logprobs"];
      const nlohmann::json& values = lp.value("token_logprobs", nlohmann::json::array());
      const nlohmann::json& tops = lp.value("top_logprobs", nlohmann::json::array());
      for (size_t i = first_new; i < tokens.size(); ++i) {
        const size_t k = i - first_new;
        TokenLogprobs entry;
        entry.token_id = tokens[i];
        entry.logprob = k < values.size() ? static_cast<float>(LogprobValue(values[k])) : 0.0f;
        if (k < tops.size() && tops[k].is_object()) {
          for (const auto& [key, value] : tops[k].items()) {
            if (std::optional<int32_t> id = TokenIdFromLogprobKey(key)) {
              entry.top.emplace_back(*id, static_cast<float>(LogprobValue(value)));
            }
          }
          std::sort(entry.top.begin(), entry.top.end(),
                    [](const auto& a, const auto& b) { return a.second > b.second; });
          if (static_cast<int32_t>(entry.top.size()) > spec.top_logprobs) {
            entry.top.resize(spec.top_logprobs);
          }
        }
        logprobs.push_back(std::move(entry));
      }
    }
    const int32_t new_tokens = static_cast<int32_t>(tokens.size() - first_new);
    if (new_tokens > 0) {
      const absl::Time now = absl::Now();
      absl::MutexLock lock(&mu_);
      if (!r.first_token) {
        r.first_token = now;
      } else if (options_.observer != nullptr) {
        options_.observer->OnInterTokenLatency(now - r.last_token);
      }
      r.last_token = now;
      r.generated += new_tokens;
      generation_tokens_ += static_cast<uint64_t>(new_tokens);
      ++progress_;
    }
    const nlohmann::json& finish =
        choice.contains("finish_reason") ? choice["finish_reason"] : nlohmann::json();
    if (finish.is_string()) {
      const std::string why = finish.get<std::string>();
      if (why == "length") {
        reason = FinishReason::kLength;
      } else if (why == "stop") {
        reason = FinishReason::kStop;
        // vLLM keeps the EOS or stop token in token_ids; tern reports it apart.
        if (!tokens.empty() && is_stop_candidate(tokens.back())) {
          stop_token = tokens.back();
          tokens.pop_back();
          if (logprobs.size() > tokens.size()) logprobs.pop_back();
          r.generated -= 1;  // counted as a token above; tern does not count it
        }
      } else if (why == "abort") {
        reason = FinishReason::kCancelled;
      } else {
        reason = FinishReason::kError;
        error =
            absl::UnavailableError(absl::StrCat("vLLM finished the request with \"", why, "\""));
      }
      finished = true;
      emit(std::move(tokens), std::move(logprobs));
      // The usage chunk follows the finish; read up to the end of the stream.
      while (!r.has_usage) {
        absl::StatusOr<std::optional<std::string>> rest = stream->Next();
        if (!rest.ok() || !rest->has_value()) break;
        const nlohmann::json tail = nlohmann::json::parse(**rest, nullptr, false);
        if (tail.is_object()) TakeUsage(tail, &r.has_usage, &r.cached_tokens);
      }
      break;
    }
    // Not finished: a trailing stop candidate is held until the next chunk.
    if (!tokens.empty() && is_stop_candidate(tokens.back())) {
      r.held = tokens.back();
      tokens.pop_back();
      if (logprobs.size() > tokens.size()) {
        r.held_logprobs = std::move(logprobs.back());
        logprobs.pop_back();
      }
    }
    emit(std::move(tokens), std::move(logprobs));
  }
  bool cancelled = false;
  {
    absl::MutexLock lock(&mu_);
    cancelled = r.cancelled;
    r.stream.reset();
  }
  if (!finished && cancelled) {
    reason = FinishReason::kCancelled;
    error = absl::OkStatus();
  } else if (!finished && error.ok()) {
    error = absl::UnavailableError("the vLLM stream ended early");
  }
  if (!finished && r.held) {
    // Ended without a finish reason: a held token was a real one.
    emit({*r.held}, r.held_logprobs ? std::vector<TokenLogprobs>{*r.held_logprobs}
                                    : std::vector<TokenLogprobs>{});
    r.held.reset();
  }
  if (reason == FinishReason::kError && error.ok()) {
    error = absl::UnavailableError("the vLLM request failed");
  }
  StreamEvent last;
  if (!r.seed_sent) {
    last.has_seed = true;
    last.seed = spec.sampling.seed;
  }
  last.finished = true;
  last.finish_reason = reason;
  last.stop_token_id = stop_token;
  last.prompt_tokens = static_cast<int32_t>(spec.prompt.size());
  last.completion_tokens = r.generated;
  last.cached_prompt_tokens = r.cached_tokens;
  if (reason == FinishReason::kError) last.error = error;
  const absl::Time end = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    finished_[static_cast<size_t>(reason)] += 1;
    const int64_t prompt = static_cast<int64_t>(spec.prompt.size() + spec.resume.size());
    prompt_tokens_ += static_cast<uint64_t>(prompt);
    if (r.has_usage) {
      prefix_query_tokens_ += static_cast<uint64_t>(prompt);
      prefix_hit_tokens_ += static_cast<uint64_t>(std::max(0, r.cached_tokens));
    }
    requests_.erase(r.id);
  }
  if (options_.observer != nullptr) {
    SequenceReport report;
    report.reason = reason;
    report.queue_time = (r.first_token ? *r.first_token : end) - r.submitted;
    if (r.first_token) report.time_to_first_token = *r.first_token - r.submitted;
    report.e2e = end - r.submitted;
    report.prompt_tokens = static_cast<int32_t>(spec.prompt.size());
    report.generation_tokens = r.generated - static_cast<int32_t>(spec.resume.size());
    options_.observer->OnSequenceFinished(report);
  }
  // The load without this request goes out before its end is heard (as the
  // native engine does it) only within the publisher's cadence; the sink
  // runs last.
  r.sink(std::move(last));
  absl::MutexLock lock(&mu_);
  auto it = threads_.find(r.id);
  if (it != threads_.end()) {
    finished_threads_.push_back(std::move(it->second));
    threads_.erase(it);
  }
}

}  // namespace tern::worker::vllm
