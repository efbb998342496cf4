#include "cli/bench/bench_serve.h"

#include <iostream>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cli/bench/bench_datasets.h"
#include "cli/bench/bench_load.h"
#include "cli/bench/bench_relative.h"
#include "cli/bench/bench_repeat.h"
#include "cli/cpu_set.h"
#include "cli/runtime_files.h"
#include "common/flags.h"
#include "common/status_macros.h"

namespace tern::cli {
namespace {

// The served model's tokenizer, which prompts are made of.
RuntimeFile ServedTokenizerDir() {
  return {"the served model's tokenizer",
          "tokenizer",
          "DIR",
          "TERN_TOKENIZER_DIR",
          "",
          "a folder with the served model's tokenizer.json (its model folder will do)"};
}

constexpr char kUsage[] =
    "usage: tern bench serve --model NAME [--url http://127.0.0.1:8000]\n"
    "         [--dataset random|shared-prefix|multi-turn] [--num-prompts N]\n"
    "         [--concurrency C | --request-rate R] [--input-len N] [--output-len N]\n"
    "         [--groups G --users U --prefix-len P --question-len Q] [--turns T]\n"
    "         [--endpoint completions|chat] [--policies a,b,...] [--seed S]\n"
    "         [--tokenizer DIR] [--request-timeout S] [--timeout S] [--no-progress]\n"
    "  --tokenizer DIR: the served model's tokenizer.json is DIR/tokenizer.json (default:\n"
    "  $TERN_TOKENIZER_DIR; the model's own folder will do).\n"
    "  random: N prompts of input-len tokens; shared-prefix: G groups x U users, prompt =\n"
    "  the group's P-token prefix + the user's Q-token question; multi-turn: U chats of T\n"
    "  turns (input-len tokens per user message, history resent each turn).\n"
    "  --concurrency C (default 8) keeps C sessions in flight; --request-rate R starts\n"
    "  sessions at Poisson arrivals instead. --policies runs the workload once per\n"
    "  routing policy (x-tern-routing-policy header) and prints the runs side by side.\n"
    "\n"
    "engine-relative figures (instead of a dataset run):\n"
    "       tern bench serve --model NAME [--url URL] --engine-model DIR [--engine-threads N]\n"
    "         [--compare-url URL [--compare-model NAME] [--compare-label L]]\n"
    "         [--rounds R] [--decode-tokens N] [--prefill-tokens N] [--quick]\n"
    "  Decode batch 1 (1 / TPOT of one streaming request) and prefill N (N / TTFT of a\n"
    "  fresh N-token prompt) through the API at --url and on the engine of DIR loaded in\n"
    "  this process with one rank per CPU (--engine-threads, default all), in R rounds\n"
    "  (default 3), printed as medians with each server's share of the in-process figure.\n"
    "  --compare-url adds any OpenAI-compatible server (e.g. llama-server) as a column;\n"
    "  without --engine-model it is compared with --url. --quick: 1 round, 8 tokens,\n"
    "  128-token prefill.\n";

struct ServePlan {
  DatasetOptions dataset;
  LoadOptions load;
  std::string tokenizer_dir;
  std::vector<std::string> policies;  // empty: one run with the server's policy
};

absl::StatusOr<int64_t> IntFlag(const Flags& flags, const std::string& name, int64_t fallback) {
  TERN_ASSIGN_OR_RETURN(std::optional<int64_t> value, flags.GetInt(name));
  return value.value_or(fallback);
}

absl::StatusOr<double> DoubleFlag(const Flags& flags, const std::string& name, double fallback) {
  const std::optional<std::string> text = flags.Get(name);
  if (!text) return fallback;
  double value = 0;
  if (!absl::SimpleAtod(*text, &value)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be a number"));
  }
  return value;
}

absl::StatusOr<ServePlan> ParsePlan(const Flags& flags) {
  ServePlan plan;
  plan.load.model = flags.GetOr("model", "");
  if (plan.load.model.empty()) return absl::InvalidArgumentError("--model NAME is required");
  TERN_ASSIGN_OR_RETURN(plan.load.endpoint,
                        ParseHttpUrl(flags.GetOr("url", "http://127.0.0.1:8000")));
  DatasetOptions& d = plan.dataset;
  TERN_ASSIGN_OR_RETURN(d.kind, ParseDatasetKind(flags.GetOr("dataset", "random")));
  TERN_ASSIGN_OR_RETURN(d.num_prompts, IntFlag(flags, "num-prompts", d.num_prompts));
  TERN_ASSIGN_OR_RETURN(d.input_len, IntFlag(flags, "input-len", d.input_len));
  TERN_ASSIGN_OR_RETURN(d.output_len, IntFlag(flags, "output-len", d.output_len));
  TERN_ASSIGN_OR_RETURN(d.groups, IntFlag(flags, "groups", d.groups));
  TERN_ASSIGN_OR_RETURN(d.users, IntFlag(flags, "users", d.users));
  TERN_ASSIGN_OR_RETURN(d.prefix_len, IntFlag(flags, "prefix-len", d.prefix_len));
  TERN_ASSIGN_OR_RETURN(d.question_len, IntFlag(flags, "question-len", d.question_len));
  TERN_ASSIGN_OR_RETURN(d.turns, IntFlag(flags, "turns", d.turns));
  TERN_ASSIGN_OR_RETURN(int64_t seed, IntFlag(flags, "seed", 0));
  d.seed = static_cast<uint64_t>(seed);
  plan.load.seed = d.seed;
  if (flags.Has("concurrency") && flags.Has("request-rate")) {
    return absl::InvalidArgumentError("give --concurrency or --request-rate, not both");
  }
  TERN_ASSIGN_OR_RETURN(plan.load.concurrency, IntFlag(flags, "concurrency", 8));
  TERN_ASSIGN_OR_RETURN(plan.load.request_rate, DoubleFlag(flags, "request-rate", 0));
  TERN_ASSIGN_OR_RETURN(double request_timeout, DoubleFlag(flags, "request-timeout", 300));
  TERN_ASSIGN_OR_RETURN(double timeout, DoubleFlag(flags, "timeout", 1800));
  if (request_timeout <= 0 || timeout <= 0) {
    return absl::InvalidArgumentError("--request-timeout and --timeout must be positive");
  }
  plan.load.request_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(request_timeout * 1e3));
  plan.load.run_timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout * 1e3));
  const std::string endpoint = flags.GetOr("endpoint", "completions");
  if (endpoint != "completions" && endpoint != "chat") {
    return absl::InvalidArgumentError("--endpoint must be completions or chat");
  }
  // A conversation's history is a list of messages: multi-turn always chats.
  plan.load.chat = endpoint == "chat" || d.kind == DatasetKind::kMultiTurn;
  plan.load.progress = !flags.Has("no-progress");
  TERN_ASSIGN_OR_RETURN(plan.tokenizer_dir, FindRuntimeFile(ServedTokenizerDir(), flags));
  if (const std::optional<std::string> policies = flags.Get("policies")) {
    plan.policies = absl::StrSplit(*policies, ',', absl::SkipEmpty());
  }
  return plan;
}

std::string Fixed(double value, int digits) { return absl::StrFormat("%.*f", digits, value); }

void Say(const std::string& line) { std::cout << "[tern bench] " << line << std::endl; }

// The engine-relative mode (bench_relative.h).
int RunRelative(const Flags& flags, const ServePlan& plan, const PromptSynthesizer& prompts) {
  const bool quick = flags.Has("quick");
  RelativeOptions options;
  options.rounds = quick ? 1 : 3;
  options.decode_tokens = quick ? 8 : 64;
  options.prefill_tokens = quick ? 128 : 512;
  options.seed = plan.dataset.seed;
  auto rounds = IntFlag(flags, "rounds", options.rounds);
  auto decode = IntFlag(flags, "decode-tokens", options.decode_tokens);
  auto prefill = IntFlag(flags, "prefill-tokens", options.prefill_tokens);
  const std::vector<int32_t> all_cpus = ProcessCpus();
  auto threads = IntFlag(flags, "engine-threads", static_cast<int64_t>(all_cpus.size()));
  absl::Status status;
  for (const auto* s : {&rounds, &decode, &prefill, &threads}) status.Update(s->status());
  if (status.ok() && (*threads < 1 || *threads > static_cast<int64_t>(all_cpus.size()))) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "--engine-threads must be in [1, ", all_cpus.size(), "] (the CPUs this process may use)"));
  }
  if (status.ok() && (*rounds < 1 || *rounds > 100 || *decode < 3 || *decode > 100000 ||
                      *prefill < 2 || *prefill > 1000000)) {
    status = absl::InvalidArgumentError(
        "--rounds must be in [1, 100], --decode-tokens >= 3, --prefill-tokens >= 2");
  }
  if (!status.ok()) {
    std::cerr << "tern bench serve: " << status.message() << "\n" << kUsage;
    return 2;
  }
  options.rounds = static_cast<int32_t>(*rounds);
  options.decode_tokens = static_cast<int32_t>(*decode);
  options.prefill_tokens = static_cast<int32_t>(*prefill);
  options.engine_model_dir = flags.GetOr("engine-model", "");
  options.cpus.assign(all_cpus.begin(), all_cpus.begin() + *threads);
  options.servers.push_back({"API", plan.load});
  options.servers.back().load.chat = false;
  if (const std::optional<std::string> url = flags.Get("compare-url")) {
    auto endpoint = ParseHttpUrl(*url);
    if (!endpoint.ok()) {
      std::cerr << "tern bench serve: --compare-url: " << endpoint.status().message() << "\n";
      return 2;
    }
    RelativeTarget compare{flags.GetOr("compare-label", "compare"), plan.load};
    compare.load.endpoint = *endpoint;
    compare.load.model = flags.GetOr("compare-model", plan.load.model);
    compare.load.chat = false;
    compare.load.policy.clear();
    options.servers.push_back(std::move(compare));
  }
  options.progress = [](const std::string& line) { Say(line); };
  Say(absl::StrCat("engine-relative figures: ", options.rounds, " round(s); decode batch 1 (",
                   options.decode_prompt, "-token prompt, ", options.decode_tokens,
                   " tokens), prefill ", options.prefill_tokens, "; API at ",
                   plan.load.endpoint.host, ":", plan.load.endpoint.port, " model ",
                   plan.load.model));
  auto figures = MeasureRelative(options, prompts);
  if (!figures.ok()) {
    std::cerr << "tern bench serve: " << figures.status().message() << "\n";
    return 1;
  }
  std::vector<std::string> labels;
  for (const RelativeTarget& target : options.servers) labels.push_back(target.label);
  std::cout << "\n[tern bench] engine-relative figures, medians of " << options.rounds
            << " round(s) (min..max):\n\n"
            << FormatRelativeTable(*figures, labels) << std::flush;
  if (!options.engine_model_dir.empty()) {
    const double api = SpreadOf((*figures)[0].servers[0]).median;
    const double engine = SpreadOf((*figures)[0].engine).median;
    std::cout << "\n[tern bench] target:\n"
              << absl::StrFormat("%s  API decode batch 1 >= 95%% of in-process: %.1f%%\n",
                                 api >= 0.95 * engine ? "met    " : "NOT met", 100.0 * api / engine)
              << std::flush;
  }
  return 0;
}

}  // namespace

std::string FormatServeTable(const std::vector<std::pair<std::string, ServeMetrics>>& runs) {
  std::vector<std::pair<std::string, std::vector<std::string>>> rows;
  auto row = [&](const std::string& name, auto cell) {
    std::vector<std::string> cells;
    for (const auto& run : runs) cells.push_back(cell(run.second));
    rows.emplace_back(name, std::move(cells));
  };
  row("Successful requests", [](const ServeMetrics& m) { return absl::StrCat(m.completed); });
  row("Failed requests", [](const ServeMetrics& m) { return absl::StrCat(m.failed); });
  row("Benchmark duration (s)", [](const ServeMetrics& m) { return Fixed(m.duration_s, 2); });
  row("Total input tokens", [](const ServeMetrics& m) { return absl::StrCat(m.input_tokens); });
  row("Total generated tokens",
      [](const ServeMetrics& m) { return absl::StrCat(m.output_tokens); });
  row("Request throughput (req/s)",
      [](const ServeMetrics& m) { return Fixed(m.request_throughput, 2); });
  row("Output token throughput (tok/s)",
      [](const ServeMetrics& m) { return Fixed(m.output_throughput, 2); });
  row("Total token throughput (tok/s)",
      [](const ServeMetrics& m) { return Fixed(m.total_throughput, 2); });
  row("Prefix hit rate (cached/prompt)",
      [](const ServeMetrics& m) { return absl::StrFormat("%.1f%%", 100 * m.prefix_hit_rate); });
  const std::pair<const char*, Distribution ServeMetrics::*> distributions[] = {
      {"TTFT", &ServeMetrics::ttft_ms},
      {"TPOT", &ServeMetrics::tpot_ms},
      {"ITL", &ServeMetrics::itl_ms},
      {"E2E latency", &ServeMetrics::e2e_ms}};
  for (const auto& [name, member] : distributions) {
    const std::pair<const char*, double Distribution::*> stats[] = {
        {"Mean", &Distribution::mean},
        {"Median", &Distribution::median},
        {"P90", &Distribution::p90},
        {"P99", &Distribution::p99}};
    for (const auto& [stat, field] : stats) {
      row(absl::StrCat(stat, " ", name, " (ms)"),
          [member = member, field = field](const ServeMetrics& m) {
            return Fixed((m.*member).*field, 2);
          });
    }
  }
  size_t name_width = 0;
  for (const auto& r : rows) name_width = std::max(name_width, r.first.size());
  std::vector<size_t> widths;
  for (size_t c = 0; c < runs.size(); ++c) {
    size_t w = runs[c].first.size();
    for (const auto& r : rows) w = std::max(w, r.second[c].size());
    widths.push_back(w);
  }
  std::string out = absl::StrFormat("%-*s", name_width, "");
  for (size_t c = 0; c < runs.size(); ++c) {
    absl::StrAppendFormat(&out, "  %*s", widths[c], runs[c].first);
  }
  out += "\n";
  for (const auto& r : rows) {
    absl::StrAppendFormat(&out, "%-*s", name_width, r.first);
    for (size_t c = 0; c < runs.size(); ++c) {
      absl::StrAppendFormat(&out, "  %*s", widths[c], r.second[c]);
    }
    out += "\n";
  }
  for (const auto& run : runs) {
    for (const auto& [kind, count] : run.second.errors) {
      absl::StrAppend(&out, "Errors [", run.first, "] ", kind, ": ", count, "\n");
    }
  }
  return out;
}

int RunBenchServe(int argc, char** argv) {
  absl::StatusOr<Flags> flags =
      Flags::Parse(argc, argv, 1, {"url",         "model",         "dataset",
                                   "num-prompts", "concurrency",   "request-rate",
                                   "input-len",   "output-len",    "groups",
                                   "users",       "prefix-len",    "question-len",
                                   "turns",       "seed",          "tokenizer",
                                   "policies",    "endpoint",      "request-timeout",
                                   "timeout",     "engine-model",  "engine-threads",
                                   "compare-url", "compare-model", "compare-label",
                                   "rounds",      "decode-tokens", "prefill-tokens"},
                   {"help", "no-progress", "quick"});
  if (flags.ok() && flags->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  absl::StatusOr<ServePlan> plan =
      flags.ok() ? ParsePlan(*flags) : absl::StatusOr<ServePlan>(flags.status());
  if (!plan.ok()) {
    std::cerr << "tern bench serve: " << plan.status().message() << "\n" << kUsage;
    return 2;
  }
  auto synthesizer = PromptSynthesizer::FromTokenizerFile(plan->tokenizer_dir + "/tokenizer.json");
  if (!synthesizer.ok()) {
    std::cerr << "tern bench serve: tokenizer: " << synthesizer.status().message() << "\n";
    return 2;
  }
  if (flags->Has("engine-model") || flags->Has("compare-url")) {
    return RunRelative(*flags, *plan, **synthesizer);
  }
  const std::vector<std::string> policies =
      plan->policies.empty() ? std::vector<std::string>{""} : plan->policies;
  const LoadOptions& load = plan->load;
  Say(absl::StrCat(
      "serve: ", load.endpoint.host, ":", load.endpoint.port, " model ", load.model, ", dataset ",
      DatasetKindName(plan->dataset.kind), ", ", load.chat ? "chat" : "completions",
      " streaming, output ", plan->dataset.output_len, " tokens, ",
      load.request_rate > 0 ? absl::StrCat("Poisson ", load.request_rate, " sessions/s")
                            : absl::StrCat("concurrency ", load.concurrency),
      plan->policies.empty() ? ""
                             : "; policy via x-tern-routing-policy (servers that do not "
                               "honour the header use their configured policy)"));
  std::vector<std::pair<std::string, ServeMetrics>> runs;
  bool all_ok = true;
  for (size_t i = 0; i < policies.size(); ++i) {
    // A fresh draw of the same dataset per policy, so a cache warmed by one
    // run does not flatter the next.
    DatasetOptions dataset = plan->dataset;
    dataset.seed += i;
    absl::StatusOr<Workload> workload = BuildWorkload(dataset, **synthesizer);
    if (!workload.ok()) {
      std::cerr << "tern bench serve: " << workload.status().message() << "\n";
      return 2;
    }
    LoadOptions options = load;
    options.policy = policies[i];
    const std::string label = policies[i].empty() ? "result" : policies[i];
    Say(absl::StrCat("run ", label, ": ", workload->num_requests(), " requests in ",
                     workload->sessions.size(), " sessions, seed ", dataset.seed));
    absl::StatusOr<LoadResult> result = RunLoad(*workload, options);
    if (!result.ok()) {
      std::cerr << "tern bench serve: " << result.status().message() << "\n";
      return 2;
    }
    ServeMetrics metrics = ComputeServeMetrics(result->records, result->duration_s);
    all_ok = all_ok && metrics.failed == 0;
    runs.emplace_back(label, std::move(metrics));
  }
  std::cout << FormatServeTable(runs) << std::flush;
  return all_ok ? 0 : 1;
}

}  // namespace tern::cli
