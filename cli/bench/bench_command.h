// `tern bench engine`: the worker's engine measured in-process against
// llama.cpp in the same run, with machine probes for roofline fractions and
// the performance targets checked at the end (see README "Benchmarks").
#ifndef TERN_CLI_BENCH_BENCH_COMMAND_H_
#define TERN_CLI_BENCH_BENCH_COMMAND_H_

namespace tern::cli {

// Flags start at argv[first] (the verb: "engine").
int RunBenchCommand(int argc, char** argv, int first);

}  // namespace tern::cli

#endif  // TERN_CLI_BENCH_BENCH_COMMAND_H_
