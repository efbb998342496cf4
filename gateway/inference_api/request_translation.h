// tern.v1.Inference requests as the REST bodies they mirror: a
// CompleteRequest becomes the JSON body of POST /v1/completions, a
// ChatRequest that of POST /v1/chat/completions (streamed), and both are then
// read by the REST parser (openai/openai_request.h), so the gRPC API
// validates exactly as REST does and fails with the same messages.
//
// Errors: INVALID_ARGUMENT from the REST parser, or naming the field whose
// JSON text (a schema, a tool's parameters) does not parse.
//
// Pure functions; thread-safe.
#ifndef TERN_GATEWAY_INFERENCE_API_REQUEST_TRANSLATION_H_
#define TERN_GATEWAY_INFERENCE_API_REQUEST_TRANSLATION_H_

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "gateway/openai/openai_request.h"
#include "tern/v1/inference.pb.h"

namespace tern::gateway {

// The /v1/completions body `request` stands for.
absl::StatusOr<nlohmann::ordered_json> RestBody(const tern::v1::CompleteRequest& request);
// The /v1/chat/completions body `request` stands for.
absl::StatusOr<nlohmann::ordered_json> RestBody(const tern::v1::ChatRequest& request);

// The body above, parsed and validated as REST parses it.
absl::StatusOr<OpenAiRequest> ParseRequest(const tern::v1::CompleteRequest& request);
absl::StatusOr<OpenAiRequest> ParseRequest(const tern::v1::ChatRequest& request);

}  // namespace tern::gateway

#endif  // TERN_GATEWAY_INFERENCE_API_REQUEST_TRANSLATION_H_
