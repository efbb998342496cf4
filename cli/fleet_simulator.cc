#include "cli/fleet_simulator.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <list>
#include <queue>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "common/block_hash.h"
#include "router/admission_queue.h"
#include "router/prefix_index.h"

namespace tern::cli {
namespace {

using router::WorkerId;

struct SimRequest {
  double arrival = 0;
  std::vector<int32_t> tokens;  // the prompt
  std::vector<uint64_t> hashes;
  int32_t output_len = 0;
  int32_t conversation = -1;  // multi-turn
  int32_t turn = 0;
  double first_token = -1;
};

struct SimSeq {
  size_t request;
  int64_t prefill_left = 0;
  int32_t decode_left = 0;
};

// One worker: batch, waiting line and an LRU prefix cache that reports its
// changes to the router's index as KV events.
class SimWorker {
 public:
  SimWorker(const SimCostModel& model, WorkerId id, router::PrefixIndex* index)
      : model_(model), id_(id), index_(index) {
    index_->BeginStream(id_);
  }

  std::deque<size_t> waiting;
  std::vector<SimSeq> running;
  bool stepping = false;
  int64_t prefill_pending = 0;  // uncached prompt tokens not yet computed
  int32_t inflight() const { return static_cast<int32_t>(running.size() + waiting.size()); }

  // Leading blocks of `hashes` in the cache, touched as used.
  int64_t Match(const std::vector<uint64_t>& hashes) {
    int64_t n = 0;
    for (uint64_t h : hashes) {
      auto it = where_.find(h);
      if (it == where_.end()) break;
      lru_.splice(lru_.end(), lru_, it->second);
      ++n;
    }
    return n;
  }

  void Store(const std::vector<uint64_t>& hashes) {
    tern::v1::KvEvent stored;
    tern::v1::KvEvent removed;
    uint64_t parent = kNoParentBlockHash;
    bool has_parent = false;
    for (uint64_t h : hashes) {
      auto it = where_.find(h);
      if (it != where_.end()) {
        lru_.splice(lru_.end(), lru_, it->second);
      } else {
        if (stored.stored().block_hashes_size() == 0) {
          stored.mutable_stored()->set_parent_block_hash(parent);
          stored.mutable_stored()->set_has_parent(has_parent);
        }
        stored.mutable_stored()->add_block_hashes(h);
        where_[h] = lru_.insert(lru_.end(), h);
      }
      parent = h;
      has_parent = true;
    }
    while (static_cast<int64_t>(lru_.size()) > model_.cache_blocks) {
      removed.mutable_removed()->add_block_hashes(lru_.front());
      where_.erase(lru_.front());
      lru_.pop_front();
    }
    std::vector<tern::v1::KvEvent> events;
    if (stored.has_stored()) events.push_back(std::move(stored));
    if (removed.has_removed()) events.push_back(std::move(removed));
    for (auto& e : events) e.set_sequence_number(++sequence_);
    if (!events.empty()) index_->ApplyEvents(id_, events);
  }

 private:
  const SimCostModel& model_;
  const WorkerId id_;
  router::PrefixIndex* index_;
  std::list<uint64_t> lru_;  // least recently used first
  absl::flat_hash_map<uint64_t, std::list<uint64_t>::iterator> where_;
  uint64_t sequence_ = 0;
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
      : model_(model), workload_(workload), rng_(workload.seed) {
    policy_.kind = policy;
    policy_.block_size = model.block_size;
    for (int32_t w = 0; w < workers; ++w) workers_.emplace_back(model_, w, &index_);
    matched_.resize(workers);
  }

  SimResult Run();

 private:
  absl::Time At(double t) const { return absl::UnixEpoch() + absl::Seconds(t); }
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
    events_.push({arrival, 0, requests_.size() - 1});
    return requests_.size() - 1;
  }
  bool HasSlot(const SimWorker& w) const {
    return w.inflight() < model_.max_num_seqs + model_.router_slack;
  }
  router::WorkerLoadView View(size_t w, double now) const {
    const SimWorker& worker = workers_[w];
    router::WorkerLoadView v;
    v.running = static_cast<int32_t>(worker.running.size());
    v.waiting = static_cast<int32_t>(worker.waiting.size());
    v.queued_prefill_tokens = worker.prefill_pending;
    v.inflight = worker.inflight();
    v.matched_blocks = matched_[w];
    return v;
  }
  void Arrive(size_t r, double now);
  void Dispatch(size_t r, size_t w, double now);
  void Admit(size_t w, double now);
  void StartStep(size_t w, double now);
  void EndStep(size_t w, double now);
  void Finish(size_t r, double now);

  const SimCostModel& model_;
  const SimWorkload& workload_;
  std::mt19937_64 rng_;
  router::PolicyOptions policy_;
  router::PrefixIndex index_;
  router::AdmissionQueue queue_{router::AdmissionQueueOptions{
      .max_length = int64_t{1} << 40, .max_wait = absl::InfiniteDuration()}};
  std::vector<SimWorker> workers_;
  std::vector<int32_t> matched_;
  std::vector<SimRequest> requests_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  uint64_t round_robin_ = 0;
  int64_t prompt_tokens_ = 0, predicted_tokens_ = 0, actual_tokens_ = 0, output_tokens_ = 0;
  int64_t completed_ = 0;
  double last_finish_ = 0;
  double imbalance_sum_ = 0;
  int64_t imbalance_samples_ = 0;
  std::vector<double> ttft_ms_;
};

void FleetSimulation::Arrive(size_t r, double now) {
  const SimRequest& req = requests_[r];
  // Load imbalance as the router would see it at this moment.
  int32_t max_inflight = 0;
  int64_t sum = 0;
  for (const SimWorker& w : workers_) {
    max_inflight = std::max(max_inflight, w.inflight());
    sum += w.inflight();
  }
  if (sum > 0) {
    imbalance_sum_ += max_inflight * static_cast<double>(workers_.size()) / sum;
    ++imbalance_samples_;
  }
  std::fill(matched_.begin(), matched_.end(), 0);
  index_.MatchPrefix(req.hashes, At(now), &matched_);
  std::vector<router::WorkerLoadView> views;
  std::vector<size_t> ids;
  for (size_t w = 0; w < workers_.size(); ++w) {
    if (!HasSlot(workers_[w])) continue;
    views.push_back(View(w, now));
    ids.push_back(w);
  }
  if (views.empty()) {
    (void)queue_.Push(r, 0, At(now));
    return;
  }
  const router::Decision d = router::ChooseWorker(
      policy_, views, static_cast<int32_t>(req.hashes.size()), rng_(), round_robin_++);
  Dispatch(r, ids[d.index], now);
}

void FleetSimulation::Dispatch(size_t r, size_t w, double now) {
  const SimRequest& req = requests_[r];
  std::fill(matched_.begin(), matched_.end(), 0);
  index_.MatchPrefix(req.hashes, At(now), &matched_);
  predicted_tokens_ += int64_t{matched_[w]} * model_.block_size;
  index_.RecordRouted(static_cast<WorkerId>(w), req.hashes, At(now));
  workers_[w].waiting.push_back(r);
  Admit(w, now);
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
    // As vLLM does, a fully cached prompt still computes its last token.
    SimSeq seq{r, std::max<int64_t>(1, prompt - cached), req.output_len};
    worker.prefill_pending += seq.prefill_left;
    worker.running.push_back(seq);
  }
  if (!worker.stepping && !worker.running.empty()) StartStep(w, now);
}

void FleetSimulation::StartStep(size_t w, double now) {
  SimWorker& worker = workers_[w];
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
  double seconds = static_cast<double>(prefill) / model_.prefill_tokens_per_s;
  if (decoding > 0) seconds += model_.DecodeStepSeconds(decoding);
  worker.stepping = true;
  events_.push({now + seconds, 1, w});
}

void FleetSimulation::EndStep(size_t w, double now) {
  SimWorker& worker = workers_[w];
  worker.stepping = false;
  int64_t budget = model_.prefill_chunk;
  std::vector<SimSeq> still;
  std::vector<size_t> finished;
  for (SimSeq& s : worker.running) {
    if (s.prefill_left == 0) {
      if (--s.decode_left == 0) {
        finished.push_back(s.request);
        continue;
      }
    } else if (budget > 0) {
      const int64_t take = std::min(budget, s.prefill_left);
      budget -= take;
      s.prefill_left -= take;
      worker.prefill_pending -= take;
      if (s.prefill_left == 0) {
        // The prefill step samples the first token.
        SimRequest& req = requests_[s.request];
        req.first_token = now;
        ttft_ms_.push_back((now - req.arrival) * 1e3);
        worker.Store(req.hashes);
        if (--s.decode_left == 0) {
          finished.push_back(s.request);
          continue;
        }
      }
    }
    still.push_back(s);
  }
  worker.running = std::move(still);
  for (size_t r : finished) Finish(r, now);
  // Freed slots take queued requests, best for this worker first.
  while (HasSlot(worker) && !queue_.empty()) {
    auto cost = [&](router::AdmissionQueue::RequestId id) {
      if (policy_.kind != router::PolicyKind::kPrefix) return 0.0;
      std::fill(matched_.begin(), matched_.end(), 0);
      index_.MatchPrefix(requests_[id].hashes, At(now), &matched_);
      return static_cast<double>(requests_[id].hashes.size() - matched_[w]);
    };
    const std::optional<router::AdmissionQueue::RequestId> next = queue_.TakeFor(cost, At(now));
    if (!next) break;
    Dispatch(*next, w, now);
  }
  Admit(w, now);
}

void FleetSimulation::Finish(size_t r, double now) {
  ++completed_;
  output_tokens_ += requests_[r].output_len;
  last_finish_ = std::max(last_finish_, now);
  const SimRequest& req = requests_[r];
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
  const double rate = workload_.load * workers / per_request;  // requests per second
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
  if (result.sim_seconds > 0) {
    result.requests_per_s = completed_ / result.sim_seconds;
    result.output_tokens_per_s = output_tokens_ / result.sim_seconds;
  }
  if (prompt_tokens_ > 0) {
    result.predicted_hit_rate = static_cast<double>(predicted_tokens_) / prompt_tokens_;
    result.actual_hit_rate = static_cast<double>(actual_tokens_) / prompt_tokens_;
  }
  if (imbalance_samples_ > 0) result.imbalance = imbalance_sum_ / imbalance_samples_;
  result.index_resyncs = index_.stats().resyncs;
  return result;
}

}  // namespace

double SimCostModel::DecodeStepSeconds(int32_t batch) const {
  return (decode_step_ms + decode_step_growth_ms * std::max(0, batch - 1)) / 1e3;
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

SimCostModel Trn2Preset() {
  SimCostModel m;
  m.name = "trn2";
  // NxDI: TTFT 814 ms for 10k input tokens; TPOT 19.6 ms at batch 1.
  m.prefill_tokens_per_s = 10000 / 0.814;
  m.decode_step_ms = 19.6;
  m.decode_step_growth_ms = 19.6 * 0.02;  // TPOT(b) = 19.6 ms x (1 + 0.02 (b - 1))
  m.max_num_seqs = 32;
  m.cache_blocks = 65536;  // 1M tokens of KV (~320 GiB for 70B in bf16)
  return m;
}

std::string DescribeCostModel(const SimCostModel& m) {
  return absl::StrFormat(
      "preset %s: prefill %.0f tok/s (uncached tokens, chunks of %d), decode step %.2f ms at "
      "batch 1 + %.3f ms per extra sequence, max_num_seqs %d (+%d router slack), prefix cache "
      "%d blocks of %d tokens per worker (LRU)",
      m.name, m.prefill_tokens_per_s, m.prefill_chunk, m.decode_step_ms, m.decode_step_growth_ms,
      m.max_num_seqs, m.router_slack, m.cache_blocks, m.block_size);
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

DecisionCost MeasureDecisionCost(int32_t workers, int64_t queued, int64_t decisions,
                                 uint64_t seed) {
  constexpr int32_t kBlockSize = 16;
  constexpr int32_t kPrefixBlocks = 128;
  constexpr int32_t kQuestionBlocks = 8;
  constexpr int32_t kGroupsPerWorker = 4;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> token(0, 127999);
  auto random_tokens = [&](int32_t n) {
    std::vector<int32_t> out(n);
    for (auto& t : out) t = token(rng);
    return out;
  };
  const int32_t groups = std::max(1, workers / 4);
  std::vector<std::vector<int32_t>> prefixes;
  for (int32_t g = 0; g < groups; ++g)
    prefixes.push_back(random_tokens(kPrefixBlocks * kBlockSize));
  std::uniform_int_distribution<int32_t> pick_group(0, groups - 1);
  auto new_prompt = [&]() {
    std::vector<int32_t> tokens = prefixes[pick_group(rng)];
    const std::vector<int32_t> q = random_tokens(kQuestionBlocks * kBlockSize);
    tokens.insert(tokens.end(), q.begin(), q.end());
    return HashPrefixBlocks(tokens, kBlockSize);
  };
  // Every worker holds the prefixes of a few groups, by its events.
  router::PrefixIndex index;
  std::vector<std::vector<uint64_t>> group_hashes;
  for (const auto& p : prefixes) group_hashes.push_back(HashPrefixBlocks(p, kBlockSize));
  for (WorkerId w = 0; w < workers; ++w) {
    index.BeginStream(w);
    std::vector<tern::v1::KvEvent> events;
    for (int32_t k = 0; k < kGroupsPerWorker; ++k) {
      tern::v1::KvEvent e;
      e.set_sequence_number(k + 1);
      for (uint64_t h : group_hashes[pick_group(rng)]) e.mutable_stored()->add_block_hashes(h);
      events.push_back(std::move(e));
    }
    index.ApplyEvents(w, events);
  }
  router::AdmissionQueue queue(router::AdmissionQueueOptions{.max_length = queued + 1,
                                                             .max_wait = absl::InfiniteDuration()});
  absl::flat_hash_map<uint64_t, std::vector<uint64_t>> waiting;
  uint64_t next_id = 0;
  const absl::Time now = absl::UnixEpoch() + absl::Hours(1);
  for (int64_t i = 0; i < queued; ++i) {
    waiting[next_id] = new_prompt();
    (void)queue.Push(next_id, 0, now - absl::Milliseconds(i % 1000));
    ++next_id;
  }
  std::uniform_int_distribution<int32_t> load(0, 32);
  std::vector<router::WorkerLoadView> views(workers);
  for (auto& v : views) v.running = load(rng);
  router::PolicyOptions options;
  std::vector<int32_t> matched(workers);
  std::vector<double> micros;
  for (int64_t i = 0; i < decisions; ++i) {
    const std::vector<uint64_t> prompt = new_prompt();
    const auto start = std::chrono::steady_clock::now();
    std::fill(matched.begin(), matched.end(), 0);
    index.MatchPrefix(prompt, now, &matched);
    for (int32_t w = 0; w < workers; ++w) views[w].matched_blocks = matched[w];
    const router::Decision d = router::ChooseWorker(
        options, views, static_cast<int32_t>(prompt.size()), rng(), static_cast<uint64_t>(i));
    std::vector<int32_t> on_worker(workers);
    const auto taken = queue.TakeFor(
        [&](router::AdmissionQueue::RequestId id) {
          const std::vector<uint64_t>& hashes = waiting[id];
          std::fill(on_worker.begin(), on_worker.end(), 0);
          index.MatchPrefix(hashes, now, &on_worker);
          return static_cast<double>(hashes.size() - on_worker[d.index]);
        },
        now);
    micros.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
            .count());
    // Keep the queue at its size: the new request takes the place of the one taken.
    if (taken) waiting.erase(*taken);
    waiting[next_id] = prompt;
    (void)queue.Push(next_id++, 0, now);
  }
  DecisionCost cost;
  cost.workers = workers;
  cost.queued = queued;
  cost.decisions = decisions;
  cost.p50_us = Percentile(micros, 50);
  cost.p99_us = Percentile(micros, 99);
  cost.max_us = micros.empty() ? 0 : *std::max_element(micros.begin(), micros.end());
  return cost;
}

}  // namespace tern::cli
