#include "cli/bench/fleet_simulator.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <list>
#include <queue>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/block_hash.h"
#include "router/core/clock.h"
#include "router/core/dispatcher.h"
#include "router/core/fleet_state.h"

namespace tern::cli {
namespace {

using router::FleetMember;

struct SimRequest {
  double arrival = 0;
  std::vector<int32_t> tokens;  // the prompt
  std::vector<uint64_t> hashes;
  int32_t output_len = 0;
  int32_t conversation = -1;  // multi-turn
  int32_t turn = 0;
  double first_token = 0;
};

struct SimSeq {
  size_t request;
  int64_t prefill_left = 0;
  int32_t decode_left = 0;
  int64_t blocks = 0;  // KV blocks it holds
};

// One worker's engine: batch, waiting line and an LRU prefix cache whose
// changes become KV events, published with the load as a worker's state
// stream would.
class SimWorker {
 public:
  explicit SimWorker(const SimCostModel& model) : model_(model) {}

  std::deque<size_t> waiting;
  std::vector<SimSeq> running;
  bool stepping = false;
  // The step under way, with separate_prefill: the request whose prefill it
  // advances by step_prefill_tokens, or none (a decode step).
  static constexpr size_t kDecodeStep = ~size_t{0};
  size_t step_prefill_request = kDecodeStep;
  int64_t step_prefill_tokens = 0;
  uint64_t steps = 0;
  int64_t prefill_pending = 0;  // uncached prompt tokens not yet computed
  int64_t used_blocks = 0;      // held by running sequences

  // Leading blocks of `hashes` in the cache, touched as used.
  int64_t Match(const std::vector<uint64_t>& hashes) {
    if (!model_.prefix_caching) return 0;
    int64_t n = 0;
    for (uint64_t h : hashes) {
      auto it = where_.find(h);
      if (it == where_.end()) break;
      lru_.splice(lru_.end(), lru_, it->second);
      ++n;
    }
    return n;
  }

  // Puts a finished prefill's blocks in the cache, evicting the least
  // recently used past its capacity; records the events.
  void Store(const std::vector<uint64_t>& hashes) {
    if (!model_.prefix_caching) return;
    router::KvEvent stored{0, router::KvEvent::Kind::kStored, {}};
    router::KvEvent removed{0, router::KvEvent::Kind::kRemoved, {}};
    for (uint64_t h : hashes) {
      auto it = where_.find(h);
      if (it != where_.end()) {
        lru_.splice(lru_.end(), lru_, it->second);
      } else {
        stored.block_hashes.push_back(h);
        where_[h] = lru_.insert(lru_.end(), h);
      }
    }
    while (static_cast<int64_t>(lru_.size()) > model_.cache_blocks) {
      removed.block_hashes.push_back(lru_.front());
      where_.erase(lru_.front());
      lru_.pop_front();
    }
    for (router::KvEvent* e : {&stored, &removed}) {
      if (e->block_hashes.empty()) continue;
      e->sequence_number = ++sequence_;
      pending_events_.push_back(std::move(*e));
    }
  }

  std::vector<router::KvEvent> TakeEvents() { return std::exchange(pending_events_, {}); }

  router::WorkerLoad Load() const {
    router::WorkerLoad load;
    load.running_seqs = static_cast<int32_t>(running.size());
    load.waiting_seqs = static_cast<int32_t>(waiting.size());
    load.free_kv_blocks = std::max<int64_t>(0, model_.cache_blocks - used_blocks);
    load.queued_prefill_tokens = prefill_pending;
    load.step_counter = steps;
    return load;
  }

 private:
  const SimCostModel& model_;
  std::list<uint64_t> lru_;  // least recently used first
  absl::flat_hash_map<uint64_t, std::list<uint64_t>::iterator> where_;
  uint64_t sequence_ = 0;
  std::vector<router::KvEvent> pending_events_;
};

struct Event {
  double time;
  int kind;  // 0 arrival (index = request), 1 step end (index = worker)
  size_t index;
  bool operator>(const Event& o) const { return time > o.time; }
};

class FleetSimulation {
 public:
  FleetSimulation(const SimCostModel& model, int32_t workers, router::PolicyKind policy,
                  const SimWorkload& workload)
      : model_(model),
        workload_(workload),
        rng_(workload.seed),
        dispatcher_(&state_, SimDispatcherOptions(policy, model.router_slack), &clock_) {
    members_ = AddSimulatedWorkers(state_, workers, model_, clock_.Now());
    for (int32_t w = 0; w < workers; ++w) workers_.emplace_back(model_);
  }

  SimResult Run();

 private:
  // Hears the dispatcher bind a queued request; binding happens once the
  // dispatcher's call returns (it may call back from inside Admit or Release).
  class Waiter : public router::DispatchWaiter {
   public:
    Waiter(FleetSimulation* sim, size_t request) : sim_(sim), request_(request) {}
    void OnDispatched(FleetMember* worker, int32_t predicted_cached_tokens) override {
      sim_->bound_.push_back({request_, worker, predicted_cached_tokens});
    }
    void OnRejected(const absl::Status& status) override { ++sim_->rejected_; }

   private:
    FleetSimulation* const sim_;
    const size_t request_;
  };
  struct Bound {
    size_t request;
    FleetMember* worker;
    int32_t predicted;
  };

  absl::Time At(double t) const { return absl::UnixEpoch() + absl::Hours(1) + absl::Seconds(t); }
  std::vector<int32_t> RandomTokens(int32_t n) {
    std::uniform_int_distribution<int32_t> token(0, 127999);
    std::vector<int32_t> out(n);
    for (auto& t : out) t = token(rng_);
    return out;
  }
  size_t AddRequest(std::vector<int32_t> tokens, double arrival, int32_t conversation,
                    int32_t turn) {
    SimRequest r;
    r.arrival = arrival;
    r.hashes = HashPrefixBlocks(tokens, model_.block_size);
    r.tokens = std::move(tokens);
    r.output_len = workload_.output_len;
    r.conversation = conversation;
    r.turn = turn;
    requests_.push_back(std::move(r));
    waiters_.emplace_back(this, requests_.size() - 1);
    events_.push({arrival, 0, requests_.size() - 1});
    return requests_.size() - 1;
  }
  void Arrive(size_t r, double now);
  void BindPending(double now);
  void Admit(size_t w, double now);
  void Publish(size_t w, double now);
  void StartStep(size_t w, double now);
  void EndStep(size_t w, double now);
  // Advances `s` by `tokens` of prefill; true when that ends its request.
  bool AdvancePrefill(SimWorker& worker, SimSeq& s, int64_t tokens, double now);
  void Finish(size_t r, double now);

  const SimCostModel& model_;
  const SimWorkload& workload_;
  std::mt19937_64 rng_;
  router::ManualClock clock_;
  router::FleetState state_{router::FleetStateOptions{}};
  router::Dispatcher dispatcher_;
  std::vector<FleetMember*> members_;
  std::vector<SimWorker> workers_;
  // Deques: waiting requests hold spans of their prompts, and waiters are
  // referenced by the dispatcher, while more are added.
  std::deque<SimRequest> requests_;
  std::deque<Waiter> waiters_;
  std::vector<Bound> bound_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  int64_t prompt_tokens_ = 0, predicted_tokens_ = 0, actual_tokens_ = 0, output_tokens_ = 0;
  int64_t completed_ = 0, rejected_ = 0, full_prefills_ = 0;
  double last_finish_ = 0;
  double imbalance_sum_ = 0;
  int64_t imbalance_samples_ = 0;
  std::vector<double> ttft_ms_;
  std::vector<double> tpot_ms_;
  std::vector<double> batch_wait_ms_;
};

void FleetSimulation::Arrive(size_t r, double now) {
  clock_.Set(At(now));
  // Load imbalance as the router sees it at this moment.
  int32_t max_inflight = 0;
  int64_t sum = 0;
  for (const FleetMember* m : members_) {
    max_inflight = std::max(max_inflight, m->inflight());
    sum += m->inflight();
  }
  if (sum > 0) {
    imbalance_sum_ += max_inflight * static_cast<double>(members_.size()) / sum;
    ++imbalance_samples_;
  }
  router::DispatchRequest request;
  request.ticket = r + 1;
  request.model = kSimModel;
  request.prompt = requests_[r].tokens;
  request.waiter = &waiters_[r];
  absl::StatusOr<router::Admission> admission = dispatcher_.Admit(std::move(request));
  if (!admission.ok()) {
    ++rejected_;
  } else if (admission->worker != nullptr) {
    bound_.push_back({r, admission->worker, admission->predicted_cached_tokens});
  }
  BindPending(now);
}

void FleetSimulation::BindPending(double now) {
  while (!bound_.empty()) {
    const Bound b = bound_.front();
    bound_.erase(bound_.begin());
    predicted_tokens_ += b.predicted;
    const auto w = static_cast<size_t>(b.worker->id());
    workers_[w].waiting.push_back(b.request);
    Admit(w, now);
  }
}

void FleetSimulation::Admit(size_t w, double now) {
  SimWorker& worker = workers_[w];
  while (!worker.waiting.empty() &&
         static_cast<int32_t>(worker.running.size()) < model_.max_num_seqs) {
    const size_t r = worker.waiting.front();
    worker.waiting.pop_front();
    const SimRequest& req = requests_[r];
    const int64_t cached = worker.Match(req.hashes) * model_.block_size;
    const int64_t prompt = static_cast<int64_t>(req.tokens.size());
    actual_tokens_ += cached;
    prompt_tokens_ += prompt;
    if (cached == 0) ++full_prefills_;
    batch_wait_ms_.push_back((now - req.arrival) * 1e3);
    // As vLLM does, a fully cached prompt still computes its last token.
    const int64_t blocks = (prompt + req.output_len + model_.block_size - 1) / model_.block_size;
    SimSeq seq{r, std::max<int64_t>(1, prompt - cached), req.output_len, blocks};
    worker.prefill_pending += seq.prefill_left;
    worker.used_blocks += blocks;
    worker.running.push_back(seq);
  }
  if (!worker.stepping && !worker.running.empty()) StartStep(w, now);
  Publish(w, now);
}

void FleetSimulation::Publish(size_t w, double now) {
  const std::vector<router::KvEvent> events = workers_[w].TakeEvents();
  state_.OnStateMessage(*members_[w], workers_[w].Load(), events, At(now));
}

void FleetSimulation::StartStep(size_t w, double now) {
  SimWorker& worker = workers_[w];
  worker.stepping = true;
  if (model_.separate_prefill) {
    // vLLM Neuron: the oldest pending prefill takes the whole step.
    worker.step_prefill_request = SimWorker::kDecodeStep;
    int32_t decoding = 0;
    for (const SimSeq& s : worker.running) {
      if (s.prefill_left > 0) {
        worker.step_prefill_request = s.request;
        worker.step_prefill_tokens = std::min<int64_t>(model_.prefill_chunk, s.prefill_left);
        events_.push({now + model_.PrefillSeconds(worker.step_prefill_tokens), 1, w});
        return;
      }
      ++decoding;
    }
    events_.push({now + model_.DecodeStepSeconds(decoding), 1, w});
    return;
  }
  int64_t budget = model_.prefill_chunk;
  int64_t prefill = 0;
  int32_t decoding = 0;
  for (const SimSeq& s : worker.running) {
    if (s.prefill_left == 0) {
      ++decoding;
    } else if (budget > 0) {
      const int64_t take = std::min(budget, s.prefill_left);
      budget -= take;
      prefill += take;
    }
  }
  double seconds = prefill > 0 ? model_.PrefillSeconds(prefill) : 0;
  if (decoding > 0) seconds += model_.DecodeStepSeconds(decoding);
  events_.push({now + seconds, 1, w});
}

bool FleetSimulation::AdvancePrefill(SimWorker& worker, SimSeq& s, int64_t tokens, double now) {
  s.prefill_left -= tokens;
  worker.prefill_pending -= tokens;
  if (s.prefill_left > 0) return false;
  // The prefill step samples the first token.
  SimRequest& req = requests_[s.request];
  req.first_token = now;
  ttft_ms_.push_back((now - req.arrival) * 1e3);
  worker.Store(req.hashes);
  return --s.decode_left == 0;
}

void FleetSimulation::EndStep(size_t w, double now) {
  clock_.Set(At(now));
  SimWorker& worker = workers_[w];
  worker.stepping = false;
  ++worker.steps;
  int64_t budget = model_.prefill_chunk;
  std::vector<SimSeq> still;
  std::vector<size_t> finished;
  const bool decode_step = worker.step_prefill_request == SimWorker::kDecodeStep;
  for (SimSeq& s : worker.running) {
    bool done = false;
    if (model_.separate_prefill) {
      // Sequences admitted during the step still have their prefill ahead.
      if (!decode_step && s.request == worker.step_prefill_request) {
        done = AdvancePrefill(worker, s, worker.step_prefill_tokens, now);
      } else if (decode_step && s.prefill_left == 0) {
        done = --s.decode_left == 0;
      }
    } else if (s.prefill_left == 0) {
      done = --s.decode_left == 0;
    } else if (budget > 0) {
      const int64_t take = std::min(budget, s.prefill_left);
      budget -= take;
      done = AdvancePrefill(worker, s, take, now);
    }
    if (done) {
      finished.push_back(s.request);
      worker.used_blocks -= s.blocks;
      continue;
    }
    still.push_back(s);
  }
  worker.running = std::move(still);
  // The worker's state reaches the router, then its finished calls end:
  // each freed slot takes the queued request the dispatcher finds best.
  Publish(w, now);
  for (size_t r : finished) {
    dispatcher_.Release(members_[w]);
    Finish(r, now);
  }
  Admit(w, now);
  BindPending(now);
}

void FleetSimulation::Finish(size_t r, double now) {
  ++completed_;
  const SimRequest& req = requests_[r];
  output_tokens_ += req.output_len;
  last_finish_ = std::max(last_finish_, now);
  if (req.output_len > 1) tpot_ms_.push_back((now - req.first_token) * 1e3 / (req.output_len - 1));
  if (req.conversation < 0 || req.turn + 1 >= workload_.turns) return;
  // The next turn: the whole history, the answer, and a new question.
  std::vector<int32_t> tokens = req.tokens;
  const std::vector<int32_t> answer = RandomTokens(req.output_len);
  const std::vector<int32_t> question = RandomTokens(workload_.question_len);
  tokens.insert(tokens.end(), answer.begin(), answer.end());
  tokens.insert(tokens.end(), question.begin(), question.end());
  AddRequest(std::move(tokens), now, req.conversation, req.turn + 1);
}

SimResult FleetSimulation::Run() {
  const int32_t workers = static_cast<int32_t>(workers_.size());
  const int64_t total = workload_.requests > 0 ? workload_.requests : int64_t{32} * workers;
  const int32_t turns = workload_.dataset == SimDataset::kMultiTurn ? workload_.turns : 1;
  const int32_t first_len = workload_.dataset == SimDataset::kMultiTurn
                                ? workload_.question_len
                                : workload_.prefix_len + workload_.question_len;
  // Capacity without cache hits: a full batch, every prompt computed.
  const double mean_prompt =
      workload_.dataset == SimDataset::kMultiTurn
          ? first_len + (turns - 1) / 2.0 * (workload_.output_len + workload_.question_len)
          : first_len;
  const double per_request =
      mean_prompt / model_.prefill_tokens_per_s +
      workload_.output_len * model_.DecodeStepSeconds(model_.max_num_seqs) / model_.max_num_seqs;
  const double rate = workload_.requests_per_s > 0 ? workload_.requests_per_s
                                                   : workload_.load * workers / per_request;
  std::exponential_distribution<double> gap(rate / turns);
  const int32_t groups = workload_.groups > 0 ? workload_.groups : 4 * workers;
  std::vector<std::vector<int32_t>> prefixes;
  if (workload_.dataset == SimDataset::kSharedPrefix) {
    for (int32_t g = 0; g < groups; ++g) prefixes.push_back(RandomTokens(workload_.prefix_len));
  }
  std::uniform_int_distribution<int32_t> pick_group(0, groups - 1);
  double t = 0;
  const int64_t sessions = (total + turns - 1) / turns;
  for (int64_t i = 0; i < sessions; ++i) {
    t += gap(rng_);
    if (workload_.dataset == SimDataset::kSharedPrefix) {
      std::vector<int32_t> tokens = prefixes[pick_group(rng_)];
      const std::vector<int32_t> question = RandomTokens(workload_.question_len);
      tokens.insert(tokens.end(), question.begin(), question.end());
      AddRequest(std::move(tokens), t, -1, 0);
    } else {
      AddRequest(RandomTokens(workload_.question_len), t, static_cast<int32_t>(i), 0);
    }
  }
  const auto wall_start = std::chrono::steady_clock::now();
  double first_arrival = requests_.empty() ? 0 : requests_.front().arrival;
  while (!events_.empty()) {
    const Event e = events_.top();
    events_.pop();
    if (e.kind == 0) {
      Arrive(e.index, e.time);
    } else {
      EndStep(e.index, e.time);
    }
  }
  SimResult result;
  result.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  result.completed = completed_;
  result.sim_seconds = last_finish_ - first_arrival;
  result.ttft_ms = Summarize(ttft_ms_);
  result.tpot_ms = Summarize(tpot_ms_);
  result.batch_wait_ms = Summarize(batch_wait_ms_);
  result.full_prefills = full_prefills_;
  if (result.sim_seconds > 0) {
    result.requests_per_s = completed_ / result.sim_seconds;
    result.output_tokens_per_s = output_tokens_ / result.sim_seconds;
  }
  if (prompt_tokens_ > 0) {
    result.predicted_hit_rate = static_cast<double>(predicted_tokens_) / prompt_tokens_;
    result.actual_hit_rate = static_cast<double>(actual_tokens_) / prompt_tokens_;
  }
  if (imbalance_samples_ > 0) result.imbalance = imbalance_sum_ / imbalance_samples_;
  result.index_resyncs = state_.index_stats().resyncs;
  result.rejected = rejected_;
  return result;
}

}  // namespace

std::vector<FleetMember*> AddSimulatedWorkers(router::FleetState& state, int32_t workers,
                                              const SimCostModel& model, absl::Time now) {
  std::vector<std::string> addresses;
  for (int32_t w = 0; w < workers; ++w) addresses.push_back(absl::StrCat("sim-worker-", w, ":1"));
  std::vector<FleetMember*> members = state.Reconcile(addresses).added;
  router::HealthReport serving;
  serving.serving = true;
  serving.info.model_id = kSimModel;
  serving.info.max_model_len = 1 << 20;
  serving.info.kv_block_size = model.block_size;
  serving.info.max_num_seqs = model.max_num_seqs;
  serving.info.kv_blocks_total = model.cache_blocks;
  router::WorkerLoad idle;
  idle.free_kv_blocks = model.cache_blocks;
  for (FleetMember* member : members) {
    state.OnHealthReport(*member, serving, now);
    state.StartStream(*member);
    state.OnStateMessage(*member, idle, {}, now);
  }
  return members;
}

router::DispatcherOptions SimDispatcherOptions(router::PolicyKind policy, int32_t slack) {
  router::DispatcherOptions options;
  options.policy.kind = policy;
  options.slack = slack;
  options.queue.max_length = int64_t{1} << 40;
  options.queue.max_wait = absl::InfiniteDuration();
  return options;
}

namespace {

// The first bucket that holds `n`; `n` itself past the last or with none.
int64_t Padded(int64_t n, const std::vector<int32_t>& buckets) {
  for (int32_t b : buckets) {
    if (b >= n) return b;
  }
  return n;
}

}  // namespace

double SimCostModel::DecodeStepSeconds(int32_t batch) const {
  const int64_t padded = Padded(batch, decode_buckets);
  return (decode_step_ms + decode_step_growth_ms * std::max<int64_t>(0, padded - 1)) / 1e3;
}

double SimCostModel::PrefillSeconds(int64_t tokens) const {
  return static_cast<double>(Padded(tokens, prefill_buckets)) / prefill_tokens_per_s;
}

SimCostModel CpuPreset() {
  SimCostModel m;
  m.name = "cpu";
  m.prefill_tokens_per_s = 2000;
  m.decode_step_ms = 11;
  m.decode_step_growth_ms = 0.4;
  m.max_num_seqs = 16;
  m.cache_blocks = 2048;
  return m;
}

std::string DescribeCostModel(const SimCostModel& m) {
  auto list = [](const std::vector<int32_t>& v) {
    return v.empty() ? std::string("none") : absl::StrJoin(v, "/");
  };
  return absl::StrFormat(
      "preset %s: %d engine(s) per instance; prefill %.0f tok/s (uncached tokens, chunks of %d, "
      "buckets %s%s), decode step %.2f ms at batch 1 + %.3f ms per extra sequence (batch "
      "buckets %s), max_num_seqs %d (+%d router slack), %s",
      m.name, m.engines_per_instance, m.prefill_tokens_per_s, m.prefill_chunk,
      list(m.prefill_buckets), m.separate_prefill ? "; one prefill per step, decodes wait" : "",
      m.decode_step_ms, m.decode_step_growth_ms, list(m.decode_buckets), m.max_num_seqs,
      m.router_slack,
      m.prefix_caching ? absl::StrFormat("prefix cache %d blocks of %d tokens per engine (LRU)",
                                         m.cache_blocks, m.block_size)
                       : std::string("no prefix cache"));
}

absl::StatusOr<SimResult> SimulateFleet(const SimCostModel& model, int32_t workers,
                                        router::PolicyKind policy, const SimWorkload& workload) {
  if (workers < 1) return absl::InvalidArgumentError("workers must be positive");
  if (workload.prefix_len < 0 || workload.question_len < 1 || workload.output_len < 1 ||
      workload.turns < 1 || workload.load <= 0 || workload.requests < 0) {
    return absl::InvalidArgumentError("bad simulated workload sizes");
  }
  FleetSimulation simulation(model, workers, policy, workload);
  return simulation.Run();
}

}  // namespace tern::cli
