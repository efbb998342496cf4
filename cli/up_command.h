// `tern up`: a whole local cluster (workers, one router, the gateway) started
// and supervised in the foreground; Ctrl-C stops every process cleanly.
#ifndef TERN_CLI_UP_COMMAND_H_
#define TERN_CLI_UP_COMMAND_H_

namespace tern::cli {

// argv[0] is "up"'s first flag's predecessor: flags start at argv[first].
int RunUpCommand(int argc, char** argv, int first);

}  // namespace tern::cli

#endif  // TERN_CLI_UP_COMMAND_H_
