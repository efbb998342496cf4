#include "structured/json_schema_compiler.h"

#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "structured/constraint.h"
#include "structured/json_schema_compiler_internal.h"

namespace tern::structured {
namespace internal {
namespace {

const absl::flat_hash_set<std::string>& ConstraintKeywords() {
  static const auto* const kKeywords = new absl::flat_hash_set<std::string>{"type",
                                                                            "properties",
                                                                            "required",
                                                                            "additionalProperties",
                                                                            "items",
                                                                            "prefixItems",
                                                                            "minItems",
                                                                            "maxItems",
                                                                            "minLength",
                                                                            "maxLength",
                                                                            "pattern",
                                                                            "format",
                                                                            "enum",
                                                                            "const",
                                                                            "minimum",
                                                                            "maximum",
                                                                            "exclusiveMinimum",
                                                                            "exclusiveMaximum",
                                                                            "anyOf",
                                                                            "oneOf",
                                                                            "allOf",
                                                                            "$ref"};
  return *kKeywords;
}

// Keywords that do not constrain the value here.
const absl::flat_hash_set<std::string>& IgnoredKeywords() {
  static const auto* const kKeywords = new absl::flat_hash_set<std::string>{
      "title",  "description", "default",   "examples",   "$schema", "$id",        "$comment",
      "strict", "readOnly",    "writeOnly", "deprecated", "$defs",   "definitions"};
  return *kKeywords;
}

// `schema` without `dropped` and without keywords that constrain nothing.
Json ConstraintsOf(const Json& schema, std::string_view dropped) {
  Json out = Json::object();
  for (const auto& [key, value] : schema.items()) {
    if (key != dropped && !IgnoredKeywords().contains(key)) out[key] = value;
  }
  return out;
}

// `base` with the keys of `over` added (replacing equal keys).
Json Merge(const Json& base, const Json& over) {
  if (!base.is_object()) return over;
  Json out = base;
  if (over.is_object()) {
    for (const auto& [key, value] : over.items()) out[key] = value;
  }
  return out;
}

bool HasType(const Json& value, const std::string& type) {
  if (type == "string") return value.is_string();
  if (type == "number") return value.is_number();
  if (type == "integer") {
    return value.is_number_integer() ||
           (value.is_number_float() &&
            value.get<double>() == static_cast<int64_t>(value.get<double>()));
  }
  if (type == "boolean") return value.is_boolean();
  if (type == "null") return value.is_null();
  if (type == "object") return value.is_object();
  if (type == "array") return value.is_array();
  return false;
}

}  // namespace

std::string ChildPointer(const std::string& pointer, const std::string& key) {
  return absl::StrCat(pointer, "/", absl::StrReplaceAll(key, {{"~", "~0"}, {"/", "~1"}}));
}

std::string Where(const std::string& pointer) { return pointer.empty() ? "/" : pointer; }

absl::Status SchemaError(const std::string& what, const std::string& pointer) {
  return absl::InvalidArgumentError(absl::StrCat(what, " at ", Where(pointer)));
}

absl::StatusOr<int32_t> SchemaCompiler::CompileSchema(const Json& schema,
                                                      const std::string& pointer, int depth) {
  if (depth > kMaxSchemaDepth) {
    return SchemaError(absl::StrCat("schema nested deeper than ", kMaxSchemaDepth), pointer);
  }
  if (schema.is_boolean()) {
    if (schema.get<bool>()) return json_.AnyValue();
    return SchemaError("schema 'false' admits no value", pointer);
  }
  if (!schema.is_object()) return SchemaError("schema is not an object", pointer);
  for (const auto& [key, value] : schema.items()) {
    if (!ConstraintKeywords().contains(key) && !IgnoredKeywords().contains(key)) {
      return SchemaError(absl::StrCat("unsupported JSON schema keyword '", key, "'"), pointer);
    }
  }
  if (schema.contains("$ref")) {
    const Json& ref = schema["$ref"];
    if (!ref.is_string()) return SchemaError("$ref is not a string", pointer);
    const Json siblings = ConstraintsOf(schema, "$ref");
    if (siblings.empty()) return CompileRef(ref.get<std::string>(), pointer, depth);
    // Keywords beside a $ref apply too: compile the target with them merged in.
    const std::string ref_text = ref.get<std::string>();
    if (ref_text != "#" && ref_text.rfind("#/", 0) != 0) {
      return SchemaError(absl::StrCat("unsupported $ref '", ref_text, "' (only local ones)"),
                         pointer);
    }
    const Json* target = root_;
    try {
      if (ref_text != "#") target = &root_->at(Json::json_pointer(ref_text.substr(1)));
    } catch (const std::exception&) {
      return SchemaError(absl::StrCat("unresolvable $ref '", ref_text, "'"), pointer);
    }
    return CompileSchema(Merge(*target, siblings), pointer, depth + 1);
  }
  if (schema.contains("allOf")) {
    const Json& all = schema["allOf"];
    if (!all.is_array() || all.size() != 1) {
      return SchemaError("allOf is supported with exactly one schema", pointer);
    }
    return CompileSchema(Merge(ConstraintsOf(schema, "allOf"), all[0]),
                         ChildPointer(pointer, "allOf") + "/0", depth + 1);
  }
  if (schema.contains("anyOf") && schema.contains("oneOf")) {
    return SchemaError("anyOf together with oneOf is not supported", pointer);
  }
  if (schema.contains("anyOf")) return CompileAnyOf(schema, "anyOf", pointer, depth);
  if (schema.contains("oneOf")) return CompileAnyOf(schema, "oneOf", pointer, depth);
  if (schema.contains("const")) {
    return CompileValues(Json::array({schema["const"]}), schema, ChildPointer(pointer, "const"));
  }
  if (schema.contains("enum")) {
    if (!schema["enum"].is_array()) return SchemaError("enum is not an array", pointer);
    return CompileValues(schema["enum"], schema, ChildPointer(pointer, "enum"));
  }

  std::vector<std::string> types;
  if (schema.contains("type")) {
    const Json& type = schema["type"];
    if (type.is_string()) {
      types.push_back(type.get<std::string>());
    } else if (type.is_array() && !type.empty()) {
      for (const Json& t : type) {
        if (!t.is_string()) return SchemaError("type list holds a non-string", pointer);
        types.push_back(t.get<std::string>());
      }
    } else {
      return SchemaError("type is neither a string nor a list of strings", pointer);
    }
  } else {
    // No type: the type-specific keywords present say which types are meant.
    const auto any = [&](std::initializer_list<const char*> keys) {
      for (const char* k : keys) {
        if (schema.contains(k)) return true;
      }
      return false;
    };
    if (any({"properties", "required", "additionalProperties"})) types.push_back("object");
    if (any({"items", "prefixItems", "minItems", "maxItems"})) types.push_back("array");
    if (any({"minLength", "maxLength", "pattern", "format"})) types.push_back("string");
    if (any({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})) {
      types.push_back("number");
    }
    if (types.empty()) return json_.AnyValue();
  }
  if (types.size() == 1) return CompileType(types[0], schema, pointer, depth);
  const int32_t rule = builder_.AddRule(absl::StrCat("types ", Where(pointer)));
  for (const std::string& type : types) {
    auto alt = CompileType(type, schema, pointer, depth);
    if (!alt.ok()) return alt.status();
    builder_.AddAlternative(rule, {Symbol::Rule(*alt)});
  }
  return rule;
}

absl::StatusOr<int32_t> SchemaCompiler::CompileRef(const std::string& ref,
                                                   const std::string& pointer, int depth) {
  auto it = refs_.find(ref);
  if (it != refs_.end()) return it->second;
  if (ref != "#" && ref.rfind("#/", 0) != 0) {
    return SchemaError(
        absl::StrCat("unsupported $ref '", ref, "' (only local ones such as #/$defs/name)"),
        ChildPointer(pointer, "$ref"));
  }
  const Json* target = root_;
  try {
    if (ref != "#") target = &root_->at(Json::json_pointer(ref.substr(1)));
  } catch (const std::exception&) {
    return SchemaError(absl::StrCat("unresolvable $ref '", ref, "'"),
                       ChildPointer(pointer, "$ref"));
  }
  // Registered before compiling the target, so recursion refers to the rule.
  const int32_t rule = builder_.AddRule(absl::StrCat("ref ", ref));
  refs_[ref] = rule;
  auto body = CompileSchema(*target, ref.substr(1), depth + 1);
  if (!body.ok()) return body.status();
  builder_.AddAlternative(rule, {Symbol::Rule(*body)});
  return rule;
}

absl::StatusOr<int32_t> SchemaCompiler::CompileAnyOf(const Json& schema, const std::string& key,
                                                     const std::string& pointer, int depth) {
  const Json& branches = schema[key];
  if (!branches.is_array() || branches.empty()) {
    return SchemaError(absl::StrCat(key, " is not a non-empty array"), pointer);
  }
  // Keywords beside anyOf apply to every branch.
  const Json rest = ConstraintsOf(schema, key);
  const int32_t rule = builder_.AddRule(absl::StrCat(key, " ", Where(pointer)));
  for (size_t i = 0; i < branches.size(); ++i) {
    const Json branch = rest.empty() ? branches[i] : Merge(rest, branches[i]);
    auto alt = CompileSchema(branch, absl::StrCat(ChildPointer(pointer, key), "/", i), depth + 1);
    if (!alt.ok()) return alt.status();
    builder_.AddAlternative(rule, {Symbol::Rule(*alt)});
  }
  return rule;
}

absl::StatusOr<int32_t> SchemaCompiler::CompileValues(const Json& values, const Json& schema,
                                                      const std::string& pointer) {
  std::vector<std::string> types;
  if (schema.contains("type")) {
    const Json& type = schema["type"];
    if (type.is_string()) types.push_back(type.get<std::string>());
    if (type.is_array()) {
      for (const Json& t : type) {
        if (t.is_string()) types.push_back(t.get<std::string>());
      }
    }
  }
  const int32_t rule = builder_.AddRule(absl::StrCat("values ", Where(pointer)));
  for (const Json& value : values) {
    bool typed = types.empty();
    for (const std::string& t : types) typed = typed || HasType(value, t);
    if (!typed) continue;
    std::string text;
    try {
      text = value.dump();
    } catch (const std::exception& e) {
      return SchemaError(absl::StrCat("value cannot be written as JSON: ", e.what()), pointer);
    }
    builder_.AddAlternative(rule, LiteralSequence(text));
  }
  return rule;  // without alternatives when nothing fits: Build reports it
}

absl::StatusOr<int32_t> SchemaCompiler::CompileType(const std::string& type, const Json& schema,
                                                    const std::string& pointer, int depth) {
  if (type == "object") return CompileObject(schema, pointer, depth);
  if (type == "array") return CompileArray(schema, pointer, depth);
  if (type == "string") return CompileString(schema, pointer);
  if (type == "number") return CompileNumber(schema, pointer, /*integer=*/false);
  if (type == "integer") return CompileNumber(schema, pointer, /*integer=*/true);
  if (type == "boolean") {
    return builder_.AddRule("boolean", {LiteralSequence("true"), LiteralSequence("false")});
  }
  if (type == "null") return json_.Literal("null");
  return SchemaError(absl::StrCat("unknown type '", type, "'"), ChildPointer(pointer, "type"));
}

}  // namespace internal

absl::StatusOr<Grammar> CompileJsonSchema(const std::string& schema_text) {
  internal::Json root;
  try {
    root = internal::Json::parse(schema_text);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("JSON schema is not valid JSON: ", e.what()));
  }
  internal::SchemaCompiler compiler(&root);
  auto rule = compiler.CompileSchema(root, "", 0);
  if (!rule.ok()) return rule.status();
  auto grammar = compiler.builder().Build(*rule);
  if (!grammar.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("JSON schema: ", grammar.status().message()));
  }
  return grammar;
}

absl::StatusOr<Grammar> CompileAnyJsonObject() {
  GrammarBuilder builder;
  JsonGrammar json(&builder);
  return builder.Build(json.AnyObject());
}

}  // namespace tern::structured
