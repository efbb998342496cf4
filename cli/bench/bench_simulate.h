// `tern bench simulate`: the router's decision code (prefix index, routing
// policies, admission queue) driven by simulated fleets of 8 to 256 workers
// (fleet_simulator.h), one row per fleet size and policy, and the cost of one
// routing decision with 2,000 workers and 10,000 queued requests checked
// against its target (p99 <= 1 ms). With --preset trn2, first the seed's
// trn2.48xlarge setup against tern's on one trace (trn2_fleet.h).
#ifndef TERN_CLI_BENCH_BENCH_SIMULATE_H_
#define TERN_CLI_BENCH_BENCH_SIMULATE_H_

namespace tern::cli {

// argv[0] is the verb ("simulate"); flags follow. Exit status 0 when the run
// completed (whether or not the decision-cost target was met), 2 for bad flags.
int RunBenchSimulate(int argc, char** argv);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_BENCH_SIMULATE_H_
