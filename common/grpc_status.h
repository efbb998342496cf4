// The one conversion point between absl::Status and grpc::Status.
// Pure functions; thread-safe.
#ifndef TERN_COMMON_GRPC_STATUS_H_
#define TERN_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace tern {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace tern

#endif  // TERN_COMMON_GRPC_STATUS_H_
