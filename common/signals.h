// Waiting for SIGINT/SIGTERM (and SIGHUP where a process reloads on it) in
// main(): blocks those signals in every thread (call before starting any
// thread) and returns the one that arrived.
#ifndef TERN_COMMON_SIGNALS_H_
#define TERN_COMMON_SIGNALS_H_

namespace tern {

// Blocks SIGINT, SIGTERM and SIGPIPE for this thread and the threads it starts later.
void BlockTerminationSignals();
// Waits for SIGINT or SIGTERM and returns its number.
int WaitForTerminationSignal();

// For a process that reloads on SIGHUP (the gateway): blocks SIGHUP too
// (call with BlockTerminationSignals), then waits for SIGINT, SIGTERM or
// SIGHUP and returns its number.
void BlockReloadSignal();
int WaitForTerminationOrReloadSignal();

}  // namespace tern

#endif  // TERN_COMMON_SIGNALS_H_
