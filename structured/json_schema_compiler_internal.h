// The JSON-schema compiler's state, shared by json_schema_compiler.cc
// (dispatch, $ref, combinators) and json_schema_types.cc (one function per
// JSON type). Not part of the library's interface.
//
// Thread safety: one compilation, one thread.
#ifndef TERN_STRUCTURED_JSON_SCHEMA_COMPILER_INTERNAL_H_
#define TERN_STRUCTURED_JSON_SCHEMA_COMPILER_INTERNAL_H_

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "structured/grammar.h"
#include "structured/json_grammar.h"

namespace tern::structured::internal {

using Json = nlohmann::ordered_json;

// `pointer` with `key` appended as one JSON-pointer token.
std::string ChildPointer(const std::string& pointer, const std::string& key);
// How a pointer reads in messages ("/" for the root).
std::string Where(const std::string& pointer);
absl::Status SchemaError(const std::string& what, const std::string& pointer);

class SchemaCompiler {
 public:
  explicit SchemaCompiler(const Json* root) : root_(root), json_(&builder_) {}

  // The rule matching values valid under `schema`, found at `pointer`,
  // nested `depth` deep.
  absl::StatusOr<int32_t> CompileSchema(const Json& schema, const std::string& pointer, int depth);
  GrammarBuilder& builder() { return builder_; }

 private:
  absl::StatusOr<int32_t> CompileRef(const std::string& ref, const std::string& pointer, int depth);
  absl::StatusOr<int32_t> CompileAnyOf(const Json& schema, const std::string& key,
                                       const std::string& pointer, int depth);
  absl::StatusOr<int32_t> CompileValues(const Json& values, const Json& schema,
                                        const std::string& pointer);
  absl::StatusOr<int32_t> CompileType(const std::string& type, const Json& schema,
                                      const std::string& pointer, int depth);
  // json_schema_types.cc
  absl::StatusOr<int32_t> CompileObject(const Json& schema, const std::string& pointer, int depth);
  absl::StatusOr<int32_t> CompileArray(const Json& schema, const std::string& pointer, int depth);
  absl::StatusOr<int32_t> CompileString(const Json& schema, const std::string& pointer);
  absl::StatusOr<int32_t> CompileNumber(const Json& schema, const std::string& pointer,
                                        bool integer);
  absl::StatusOr<int32_t> ExtraKeyString(const Json& properties);

  const Json* root_;
  GrammarBuilder builder_;
  JsonGrammar json_;
  absl::flat_hash_map<std::string, int32_t> refs_;
};

}  // namespace tern::structured::internal

#endif  // TERN_STRUCTURED_JSON_SCHEMA_COMPILER_INTERNAL_H_
