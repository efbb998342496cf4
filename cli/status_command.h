// `tern status`: the fleet as the router sees it (Router.ClusterState), one
// row per worker: address, health, model, running/waiting sequences, requests
// in flight, KV blocks free/total, cached prefix blocks, prefix hit rate and
// the reason a worker is unhealthy.
#ifndef TERN_CLI_STATUS_COMMAND_H_
#define TERN_CLI_STATUS_COMMAND_H_

#include <string>

#include "tern/v1/router.pb.h"

namespace tern::cli {

// argv[0] is the command ("status"); flags follow. Exit status 0 when the
// router answered, 1 when it did not, 2 for bad flags.
int RunStatus(int argc, char** argv);

// The table for one ClusterState answer. Fields a router may not report
// (KV blocks total, hit rate) print as "-".
std::string FormatClusterState(const tern::v1::ClusterStateResponse& state);

}  // namespace tern::cli

#endif  // TERN_CLI_STATUS_COMMAND_H_
