#include "cli/bench/constraint_bench.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <memory>
#include <random>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "structured/constraint.h"
#include "structured/constraint_impl.h"

namespace tern::cli {
namespace {

using structured::CompiledConstraint;
using structured::ConstraintMatcher;
using structured::ConstraintSpec;
using structured::TokenMask;
using structured::TokenVocabulary;
using Clock = std::chrono::steady_clock;

struct NamedSchema {
  const char* name;
  const char* schema;
};

constexpr NamedSchema kSchemas[] = {
    {"person", R"({"type":"object","properties":{
        "name":{"type":"string"},"age":{"type":"integer","minimum":0,"maximum":120},
        "email":{"type":"string","format":"email"},
        "tags":{"type":"array","items":{"type":"string"},"maxItems":5},
        "address":{"type":"object","properties":{"street":{"type":"string"},
          "city":{"type":"string"},"zip":{"type":"string","pattern":"[0-9]{5}"}},
          "required":["street","city","zip"]}},
        "required":["name","age","address"]})"},
    {"classification", R"({"type":"object","properties":{
        "sentiment":{"enum":["positive","negative","neutral"]},
        "confidence":{"type":"number","minimum":0,"maximum":1},
        "reasons":{"type":"array","items":{"type":"string","maxLength":80},"maxItems":3}},
        "required":["sentiment","confidence","reasons"]})"},
    {"tool_call", R"({"type":"object","properties":{
        "name":{"const":"get_weather"},
        "arguments":{"type":"object","properties":{"location":{"type":"string"},
          "unit":{"enum":["celsius","fahrenheit"]},
          "days":{"type":"integer","minimum":1,"maximum":14}},
          "required":["location","unit"]}},"required":["name","arguments"]})"},
    {"thread", R"({"$defs":{"comment":{"type":"object","properties":{
        "author":{"type":"string","maxLength":20},"text":{"type":"string"},
        "replies":{"type":"array","items":{"$ref":"#/$defs/comment"},"maxItems":2}},
        "required":["author","text"]}},"$ref":"#/$defs/comment"})"},
    {"products", R"({"type":"array","minItems":1,"maxItems":4,"items":{"type":"object",
        "properties":{"id":{"type":"integer"},"title":{"type":"string","maxLength":40},
        "price":{"type":"number","minimum":0},"in_stock":{"type":"boolean"},
        "sku":{"type":"string","pattern":"[A-Z]{3}-\\d{4}"}},
        "required":["id","title","price","in_stock","sku"]}})"},
};

// The index of the k-th allowed token (k counted from 0).
int32_t NthAllowed(const TokenMask& mask, int64_t k) {
  const std::vector<uint64_t>& words = mask.words();
  for (size_t w = 0; w < words.size(); ++w) {
    const int64_t count = std::popcount(words[w]);
    if (k < count) {
      uint64_t bits = words[w];
      for (int64_t i = 0; i < k; ++i) bits &= bits - 1;
      return static_cast<int32_t>(w * 64 + std::countr_zero(bits));
    }
    k -= count;
  }
  return -1;
}

struct Timings {
  std::vector<double> step_us;
  std::vector<double> batch_step_us;
};

// Runs `options.sequences` batches of `batch` sequences to their end.
void Simulate(const std::shared_ptr<const CompiledConstraint>& constraint, int32_t vocab_size,
              int32_t batch, const ConstraintBenchOptions& options, std::mt19937_64& rng,
              Timings* timings) {
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  TokenMask mask(vocab_size);
  for (int32_t round = 0; round < options.sequences; ++round) {
    std::vector<ConstraintMatcher> matchers(batch, ConstraintMatcher(constraint));
    std::vector<bool> done(batch, false);
    for (int32_t step = 0; step < options.max_tokens; ++step) {
      double batch_us = 0;
      bool any = false;
      for (int32_t s = 0; s < batch; ++s) {
        if (done[s]) continue;
        any = true;
        const auto start = Clock::now();
        matchers[s].FillAllowedTokens(&mask);
        const double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
        timings->step_us.push_back(us);
        batch_us += us;
        const int32_t allowed = mask.CountAllowed();
        if (allowed == 0 || (matchers[s].CanEnd() && coin(rng) < options.end_probability)) {
          done[s] = true;
          continue;
        }
        const int32_t token = NthAllowed(mask, static_cast<int64_t>(rng() % allowed));
        if (!matchers[s].AcceptToken(token).ok()) done[s] = true;  // cannot happen
      }
      if (!any) break;
      timings->batch_step_us.push_back(batch_us);
    }
  }
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

double Mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? 0 : sum / static_cast<double>(v.size());
}

ConstraintBenchRow Summarize(std::string schema, int32_t batch, bool warm, const Timings& t,
                             double hit_rate) {
  ConstraintBenchRow row;
  row.schema = std::move(schema);
  row.batch = batch;
  row.warm = warm;
  row.steps = static_cast<int64_t>(t.step_us.size());
  row.p50_us = Percentile(t.step_us, 0.5);
  row.p99_us = Percentile(t.step_us, 0.99);
  row.mean_us = Mean(t.step_us);
  row.batch_step_mean_us = Mean(t.batch_step_us);
  row.hit_rate = hit_rate;
  return row;
}

}  // namespace

absl::StatusOr<ConstraintBenchReport> RunConstraintBench(const ConstraintBenchOptions& options) {
  ConstraintBenchReport report;
  const auto load_start = Clock::now();
  auto vocabulary = TokenVocabulary::FromTokenizerJson(options.tokenizer_json, options.vocab_size);
  if (!vocabulary.ok()) return vocabulary.status();
  report.vocabulary_load_ms =
      std::chrono::duration<double, std::milli>(Clock::now() - load_start).count();
  report.vocab_size = (*vocabulary)->size();
  std::mt19937_64 rng(options.seed);
  double compile_ms = 0;
  int compiles = 0;
  for (int32_t batch : options.batch_sizes) {
    Timings all[2];
    for (const NamedSchema& named : kSchemas) {
      ConstraintSpec spec;
      spec.kind = ConstraintSpec::Kind::kJsonSchema;
      spec.json_schema = named.schema;
      const auto compile_start = Clock::now();
      auto constraint = CompiledConstraint::Compile(spec, *vocabulary);
      if (!constraint.ok()) {
        return absl::InternalError(
            absl::StrCat("schema ", named.name, ": ", constraint.status().message()));
      }
      compile_ms += std::chrono::duration<double, std::milli>(Clock::now() - compile_start).count();
      ++compiles;
      const auto& cache = (*constraint)->impl().cache;
      for (int warm = 0; warm < 2; ++warm) {
        const int64_t hits = cache.hits();
        const int64_t misses = cache.misses();
        Timings t;
        Simulate(*constraint, report.vocab_size, batch, options, rng, &t);
        const double lookups = static_cast<double>(cache.hits() - hits + cache.misses() - misses);
        report.rows.push_back(Summarize(named.name, batch, warm == 1, t,
                                        lookups > 0 ? (cache.hits() - hits) / lookups : 0));
        all[warm].step_us.insert(all[warm].step_us.end(), t.step_us.begin(), t.step_us.end());
        all[warm].batch_step_us.insert(all[warm].batch_step_us.end(), t.batch_step_us.begin(),
                                       t.batch_step_us.end());
      }
    }
    for (int warm = 0; warm < 2; ++warm) {
      report.rows.push_back(Summarize("all", batch, warm == 1, all[warm], -1));
    }
  }
  report.compile_ms_mean = compiles > 0 ? compile_ms / compiles : 0;
  return report;
}

void PrintConstraintBench(const ConstraintBenchReport& report, std::ostream& out) {
  out << absl::StrFormat(
      "constraint masks over %d tokens (vocabulary loaded in %.0f ms, compile %.1f ms/schema)\n",
      report.vocab_size, report.vocabulary_load_ms, report.compile_ms_mean);
  out << absl::StrFormat("%-15s %5s %5s %7s %10s %10s %10s %13s %6s\n", "schema", "batch", "cache",
                         "steps", "p50_us", "p99_us", "mean_us", "batch_step_us", "hits");
  for (const ConstraintBenchRow& row : report.rows) {
    const std::string hits = row.hit_rate < 0 ? "-" : absl::StrFormat("%.0f%%", row.hit_rate * 100);
    out << absl::StrFormat("%-15s %5d %5s %7d %10.1f %10.1f %10.1f %13.1f %6s\n", row.schema,
                           row.batch, row.warm ? "warm" : "cold", row.steps, row.p50_us, row.p99_us,
                           row.mean_us, row.batch_step_mean_us, hits);
  }
}

}  // namespace tern::cli
