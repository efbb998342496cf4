// `tern keys add NAME | list | remove NAME --file keys.yaml`: the gateway's
// API keys (gateway/auth/api_keys.h). `add` prints the new key once, on
// stdout, and stores only its name and salted hash. Call from main only.
#ifndef TERN_CLI_KEYS_COMMAND_H_
#define TERN_CLI_KEYS_COMMAND_H_

namespace tern::cli {

// Flags start at argv[first] (the verb). Returns the exit status: 0, 1 when
// the file cannot be read or written, 2 for bad flags or names.
int RunKeysCommand(int argc, char** argv, int first);

}  // namespace tern::cli

#endif  // TERN_CLI_KEYS_COMMAND_H_
