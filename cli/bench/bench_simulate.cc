#include "cli/bench/bench_simulate.h"

#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cli/bench/decision_cost.h"
#include "cli/bench/fleet_simulator.h"
#include "cli/bench/trn2_fleet.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace tern::cli {
namespace {

constexpr char kUsage[] =
    "usage: tern bench simulate [--workers 8,32,128,256] [--preset cpu|trn2]\n"
    "         [--dataset shared-prefix|multi-turn] [--requests N] [--load F]\n"
    "         [--policies prefix,round-robin,least-loaded,random] [--seed S]\n"
    "         [--prefix-len P] [--question-len Q] [--output-len N] [--groups G] [--turns T]\n"
    "         [--prefill-tok-s X] [--decode-step-ms X] [--decode-growth-ms X]\n"
    "         [--max-num-seqs N] [--cache-blocks N] [--prefill-buckets B1,B2,...]\n"
    "         [--router-slack N]\n"
    "         [--instances N] [--loads 1,5,10,12,15] [--tp16-prefill-factor F]\n"
    "         [--tp16-decode-factor F]\n"
    "         [--decision-workers 2000] [--decision-queue 10000] [--decisions 2000]\n"
    "  Simulated workers and a simulated clock behind the router's own dispatcher,\n"
    "  admission queue, policies and fleet state. --requests defaults to 32 per worker,\n"
    "  --groups to 4 per worker; --load is the arrival rate as a fraction of the fleet's\n"
    "  capacity without cache hits.\n"
    "  --preset trn2 compares, on one arrival trace, the seed's trn2.48xlarge setup (one\n"
    "  TP64 server, batch 1) with tern's (4 TP16 vLLM Neuron engines per instance, AWS's\n"
    "  FP8 recipe limits, prefix caching at block 128, the router's prefix policy) on\n"
    "  --instances instances (default 1) at each of --loads (output tok/s offered per\n"
    "  instance, in multiples of the seed's 36.56), prints every assumption with its source\n"
    "  and whether the target holds; its workload defaults to the seed's lengths (9,000\n"
    "  shared + 1,000 question tokens in, 1,500 out, 2,000 requests and 16 prefixes per\n"
    "  instance). --prefill-tok-s and the like replace tern's engine figures; --workers adds\n"
    "  the policy table over that engine.\n";

constexpr double kDecisionTargetUs = 1000;

absl::StatusOr<double> Number(const Flags& flags, const std::string& name, double fallback) {
  const std::optional<std::string> text = flags.Get(name);
  if (!text) return fallback;
  double value = 0;
  if (!absl::SimpleAtod(*text, &value)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be a number"));
  }
  return value;
}

struct SimulatePlan {
  SimCostModel model;
  std::optional<Trn2Options> trn2;  // --preset trn2
  bool policy_table = true;
  SimWorkload workload;
  std::vector<int32_t> fleet_sizes;
  std::vector<router::PolicyKind> policies;
  int32_t decision_workers = 2000;
  int64_t decision_queue = 10000;
  int64_t decisions = 2000;
};

absl::StatusOr<SimulatePlan> ParsePlan(const Flags& flags) {
  SimulatePlan plan;
  const std::string preset = flags.GetOr("preset", "cpu");
  Trn2Options trn2;
  if (preset == "cpu") {
    plan.model = CpuPreset();
  } else if (preset == "trn2") {
    TERN_ASSIGN_OR_RETURN(trn2.factors.prefill,
                          Number(flags, "tp16-prefill-factor", trn2.factors.prefill));
    TERN_ASSIGN_OR_RETURN(trn2.factors.decode,
                          Number(flags, "tp16-decode-factor", trn2.factors.decode));
    if (trn2.factors.prefill <= 0 || trn2.factors.decode <= 0) {
      return absl::InvalidArgumentError("TP16 cost factors must be positive");
    }
    plan.model = Trn2EngineModel(trn2.factors);
  } else {
    return absl::InvalidArgumentError("--preset must be cpu or trn2");
  }
  SimCostModel& m = plan.model;
  TERN_ASSIGN_OR_RETURN(m.prefill_tokens_per_s,
                        Number(flags, "prefill-tok-s", m.prefill_tokens_per_s));
  TERN_ASSIGN_OR_RETURN(m.decode_step_ms, Number(flags, "decode-step-ms", m.decode_step_ms));
  TERN_ASSIGN_OR_RETURN(m.decode_step_growth_ms,
                        Number(flags, "decode-growth-ms", m.decode_step_growth_ms));
  TERN_ASSIGN_OR_RETURN(double seqs, Number(flags, "max-num-seqs", m.max_num_seqs));
  TERN_ASSIGN_OR_RETURN(double blocks,
                        Number(flags, "cache-blocks", static_cast<double>(m.cache_blocks)));
  TERN_ASSIGN_OR_RETURN(double slack, Number(flags, "router-slack", m.router_slack));
  m.max_num_seqs = static_cast<int32_t>(seqs);
  m.cache_blocks = static_cast<int64_t>(blocks);
  m.router_slack = static_cast<int32_t>(slack);
  if (const std::optional<std::string> buckets = flags.Get("prefill-buckets")) {
    m.prefill_buckets.clear();
    for (absl::string_view b : absl::StrSplit(*buckets, ',', absl::SkipEmpty())) {
      int32_t n = 0;
      if (!absl::SimpleAtoi(b, &n) || n < 1 ||
          (!m.prefill_buckets.empty() && n <= m.prefill_buckets.back())) {
        return absl::InvalidArgumentError("--prefill-buckets must be ascending positive sizes");
      }
      m.prefill_buckets.push_back(n);
    }
    if (!m.prefill_buckets.empty()) m.prefill_chunk = m.prefill_buckets.back();
  }
  if (m.prefill_tokens_per_s <= 0 || m.decode_step_ms <= 0 || m.decode_step_growth_ms < 0 ||
      m.max_num_seqs < 1 || m.cache_blocks < 1 || m.router_slack < 0) {
    return absl::InvalidArgumentError("cost model figures must be positive");
  }
  SimWorkload& w = plan.workload;
  if (preset == "trn2") {
    w.prefix_len = trn2.prefix_len;
    w.question_len = trn2.question_len;
    w.output_len = trn2.output_len;
  }
  const std::string dataset = flags.GetOr("dataset", "shared-prefix");
  if (dataset == "shared-prefix") {
    w.dataset = SimDataset::kSharedPrefix;
  } else if (dataset == "multi-turn") {
    w.dataset = SimDataset::kMultiTurn;
  } else {
    return absl::InvalidArgumentError("--dataset must be shared-prefix or multi-turn");
  }
  const std::pair<const char*, int32_t*> ints[] = {
      {"prefix-len", &w.prefix_len}, {"question-len", &w.question_len},
      {"output-len", &w.output_len}, {"groups", &w.groups},
      {"turns", &w.turns},           {"decision-workers", &plan.decision_workers}};
  for (const auto& [name, field] : ints) {
    TERN_ASSIGN_OR_RETURN(double value, Number(flags, name, *field));
    *field = static_cast<int32_t>(value);
  }
  TERN_ASSIGN_OR_RETURN(double requests, Number(flags, "requests", 0));
  TERN_ASSIGN_OR_RETURN(double queue, Number(flags, "decision-queue", plan.decision_queue));
  TERN_ASSIGN_OR_RETURN(double decisions, Number(flags, "decisions", plan.decisions));
  TERN_ASSIGN_OR_RETURN(double seed, Number(flags, "seed", 1));
  TERN_ASSIGN_OR_RETURN(w.load, Number(flags, "load", w.load));
  w.requests = static_cast<int64_t>(requests);
  w.seed = static_cast<uint64_t>(seed);
  plan.decision_queue = static_cast<int64_t>(queue);
  plan.decisions = static_cast<int64_t>(decisions);
  if (plan.decision_workers < 1 || plan.decision_queue < 0 || plan.decisions < 0) {
    return absl::InvalidArgumentError("decision-cost sizes must be positive");
  }
  if (preset == "trn2") {
    TERN_ASSIGN_OR_RETURN(double instances, Number(flags, "instances", trn2.instances));
    trn2.instances = static_cast<int32_t>(instances);
    trn2.requests = w.requests;
    trn2.groups = w.groups;
    trn2.prefix_len = w.prefix_len;
    trn2.question_len = w.question_len;
    trn2.output_len = w.output_len;
    trn2.seed = w.seed;
    if (const std::optional<std::string> loads = flags.Get("loads")) {
      trn2.loads.clear();
      for (absl::string_view text : absl::StrSplit(*loads, ',', absl::SkipEmpty())) {
        double load = 0;
        if (!absl::SimpleAtod(text, &load) || !(load > 0)) {
          return absl::InvalidArgumentError(absl::StrCat("bad --loads entry '", text, "'"));
        }
        trn2.loads.push_back(load);
      }
    }
    if (trn2.instances < 1 || trn2.loads.empty() || w.prefix_len < 0 || w.question_len < 1 ||
        w.output_len < 1) {
      return absl::InvalidArgumentError("bad trn2 fleet sizes");
    }
    plan.trn2 = trn2;
    plan.policy_table = flags.Has("workers");
  }
  for (absl::string_view size :
       absl::StrSplit(flags.GetOr("workers", "8,32,128,256"), ',', absl::SkipEmpty())) {
    int32_t n = 0;
    if (!absl::SimpleAtoi(size, &n) || n < 1) {
      return absl::InvalidArgumentError(absl::StrCat("bad --workers entry '", size, "'"));
    }
    plan.fleet_sizes.push_back(n);
  }
  for (absl::string_view name :
       absl::StrSplit(flags.GetOr("policies", "prefix,round-robin,least-loaded,random"), ',',
                      absl::SkipEmpty())) {
    TERN_ASSIGN_OR_RETURN(router::PolicyKind kind, router::ParsePolicyKind(name));
    plan.policies.push_back(kind);
  }
  return plan;
}

void Say(const std::string& line) { std::cout << "[tern bench] " << line << std::endl; }

// One row per fleet size and policy over the plan's engine model.
int RunPolicyTable(const SimulatePlan& plan) {
  const SimWorkload& w = plan.workload;
  Say("simulate: the router's own Dispatcher, admission queue, policies and FleetState (prefix "
      "index fed by KV events) on a simulated clock; workers and time are simulated");
  Say(DescribeCostModel(plan.model));
  Say(w.dataset == SimDataset::kSharedPrefix
          ? absl::StrFormat("workload shared-prefix: prompt = one of G prefixes of %d tokens + "
                            "a %d-token question, %d output tokens, Poisson arrivals at %.0f%% "
                            "of capacity without cache hits",
                            w.prefix_len, w.question_len, w.output_len, 100 * w.load)
          : absl::StrFormat("workload multi-turn: %d turns, %d-token user messages, %d output "
                            "tokens, history resent each turn, conversations at Poisson "
                            "arrivals (%.0f%% of capacity without cache hits)",
                            w.turns, w.question_len, w.output_len, 100 * w.load));
  std::cout << absl::StrFormat("%7s  %-12s  %8s  %9s  %9s  %9s  %7s  %10s  %9s  %9s  %9s  %6s\n",
                               "workers", "policy", "requests", "TTFT p50", "TTFT p90", "TTFT p99",
                               "req/s", "out tok/s", "hit pred", "hit real", "imbalance", "wall s");
  for (int32_t workers : plan.fleet_sizes) {
    for (router::PolicyKind policy : plan.policies) {
      absl::StatusOr<SimResult> r = SimulateFleet(plan.model, workers, policy, w);
      if (!r.ok()) {
        std::cerr << "tern bench simulate: " << r.status().message() << "\n";
        return 2;
      }
      std::cout << absl::StrFormat(
                       "%7d  %-12s  %8d  %7.0fms  %7.0fms  %7.0fms  %7.2f  %10.0f  %8.1f%%  "
                       "%8.1f%%  %9.2f  %6.2f\n",
                       workers, router::PolicyKindName(policy), r->completed, r->ttft_ms.median,
                       r->ttft_ms.p90, r->ttft_ms.p99, r->requests_per_s, r->output_tokens_per_s,
                       100 * r->predicted_hit_rate, 100 * r->actual_hit_rate, r->imbalance,
                       r->wall_seconds)
                << std::flush;
    }
  }
  return 0;
}

}  // namespace

int RunBenchSimulate(int argc, char** argv) {
  absl::StatusOr<Flags> flags = Flags::Parse(argc, argv, 1,
                                             {"workers",
                                              "preset",
                                              "requests",
                                              "dataset",
                                              "policies",
                                              "load",
                                              "seed",
                                              "prefix-len",
                                              "question-len",
                                              "output-len",
                                              "groups",
                                              "turns",
                                              "prefill-tok-s",
                                              "decode-step-ms",
                                              "decode-growth-ms",
                                              "max-num-seqs",
                                              "cache-blocks",
                                              "decision-workers",
                                              "decision-queue",
                                              "decisions",
                                              "prefill-buckets",
                                              "instances",
                                              "loads",
                                              "tp16-prefill-factor",
                                              "tp16-decode-factor",
                                              "router-slack"},
                                             {"help"});
  if (flags.ok() && flags->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  absl::StatusOr<SimulatePlan> plan =
      flags.ok() ? ParsePlan(*flags) : absl::StatusOr<SimulatePlan>(flags.status());
  if (!plan.ok()) {
    std::cerr << "tern bench simulate: " << plan.status().message() << "\n" << kUsage;
    return 2;
  }
  // The router code logs every simulated worker turning healthy: keep
  // warnings only.
  InitLogging("tern bench", LogLevel::kWarning);
  if (plan->trn2) {
    if (absl::Status s = PrintTrn2Report(*plan->trn2, plan->model, std::cout); !s.ok()) {
      std::cerr << "tern bench simulate: " << s.message() << "\n";
      return 2;
    }
  }
  if (plan->policy_table && RunPolicyTable(*plan) != 0) return 2;
  if (plan->decisions > 0) {
    const DecisionCost cost = MeasureDecisionCost(plan->decision_workers, plan->decision_queue,
                                                  plan->decisions, plan->workload.seed);
    Say(absl::StrFormat(
        "routing decision (dispatcher: a call ends and its slot takes the best queued request, "
        "a new request is admitted; %d workers, %d queued): "
        "p50 %.1f us, p99 %.1f us, max %.1f us over %d decisions; target p99 <= %.0f us: %s",
        cost.workers, cost.queued, cost.p50_us, cost.p99_us, cost.max_us, cost.decisions,
        kDecisionTargetUs, cost.p99_us <= kDecisionTargetUs ? "met" : "NOT met"));
  }
  return 0;
}

}  // namespace tern::cli
