// The cost of one routing decision by the router's own dispatcher at scale.
//
// Thread contract: runs on the calling thread and shares nothing.
#ifndef TERN_CLI_BENCH_DECISION_COST_H_
#define TERN_CLI_BENCH_DECISION_COST_H_

#include <cstdint>

namespace tern::cli {

struct DecisionCost {
  int32_t workers = 0;
  int64_t queued = 0;
  int64_t decisions = 0;
  double p50_us = 0;
  double p99_us = 0;
  double max_us = 0;
};

// Times the router's dispatcher with `workers` busy workers (one slot each,
// holding prefixes in the index by their events) and `queued` requests
// waiting: one decision is a call ending (Release: the freed worker takes
// its best queued request, TakeFor over the scan window) plus a request
// arriving (Admit: it queues behind the others, and the queue is pumped:
// candidates over every worker).
DecisionCost MeasureDecisionCost(int32_t workers, int64_t queued, int64_t decisions, uint64_t seed);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_DECISION_COST_H_
