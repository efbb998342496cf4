// `tern model synth|inspect`: writes synthetic Llama-3-architecture
// checkpoints in the Hugging Face layout (plus GGUF for llama.cpp), and
// describes a checkpoint directory.
#ifndef TERN_CLI_MODEL_MODEL_COMMAND_H_
#define TERN_CLI_MODEL_MODEL_COMMAND_H_

namespace tern::cli {

int RunModelCommand(int argc, char** argv, int first);

}  // namespace tern::cli

#endif  // TERN_CLI_MODEL_MODEL_COMMAND_H_
