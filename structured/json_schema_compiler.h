// JSON Schema to byte grammar.
//
// Supported: type (a name or a list), properties (in schema order),
// required, additionalProperties (absent = false; true; or a schema for keys
// after the listed ones, which may not repeat a listed name), items,
// prefixItems, minItems, maxItems, minLength/maxLength (code points),
// pattern (the regex subset of regex_parser.h, matched against the whole
// string), format (date, time, date-time, uuid, email; others rejected),
// minimum/maximum/exclusiveMinimum/exclusiveMaximum (exact for integers;
// for numbers exact when the bounds are integers, otherwise rounded inward;
// bounded numbers have no exponent, others at most two exponent digits), enum, const, anyOf, oneOf
// (as anyOf), allOf with one schema, $ref to "#" or "#/..." (recursion allowed), $defs,
// definitions, and the annotations title, description, default, examples,
// $schema, $id, $comment, strict, readOnly, writeOnly, deprecated. `{}` and
// `true` are any JSON value.
//
// Any other keyword is INVALID_ARGUMENT: "unsupported JSON schema keyword
// 'patternProperties' at /properties/a". So are schemas that admit no value,
// nesting past kMaxSchemaDepth, and $ref cycles that produce no output.
//
// Thread safety: pure function.
#ifndef TERN_STRUCTURED_JSON_SCHEMA_COMPILER_H_
#define TERN_STRUCTURED_JSON_SCHEMA_COMPILER_H_

#include <string>

#include "absl/status/statusor.h"
#include "structured/grammar.h"

namespace tern::structured {

absl::StatusOr<Grammar> CompileJsonSchema(const std::string& schema_text);

// Any JSON object (the json_object response format).
absl::StatusOr<Grammar> CompileAnyJsonObject();

}  // namespace tern::structured

#endif  // TERN_STRUCTURED_JSON_SCHEMA_COMPILER_H_
