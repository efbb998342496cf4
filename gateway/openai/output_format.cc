#include "gateway/openai/output_format.h"

#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gateway/http/api_error.h"

namespace tern::gateway {
namespace {

using Kind = structured::ConstraintSpec::Kind;

// A tool's parameters schema; a function without one takes no arguments.
Json ParametersOf(const Json& tool) {
  const Json& function = tool["function"];
  const Json* parameters = Find(function, "parameters");
  if (parameters != nullptr) return *parameters;
  return Json{{"type", "object"}, {"properties", Json::object()}};
}

// A 400 naming `param`, with the constraint compiler's message.
absl::Status SchemaError(const std::string& param, const absl::Status& status) {
  return InvalidRequestError(
      param, absl::StrCat("Invalid schema for '", param, "': ", status.message()), "invalid_value");
}

absl::Status Validate(const structured::ConstraintSpec& spec, const std::string& param) {
  if (absl::Status valid = structured::ValidateConstraint(spec); !valid.ok()) {
    return SchemaError(param, valid);
  }
  return absl::OkStatus();
}

structured::ConstraintSpec SchemaConstraint(const Json& schema) {
  structured::ConstraintSpec spec;
  spec.kind = Kind::kJsonSchema;
  spec.json_schema = schema.dump();
  return spec;
}

// response_format: text | json_object | json_schema.
absl::StatusOr<structured::ConstraintSpec> ParseResponseFormat(const Json& format) {
  if (!format.is_object()) return TypeError("response_format", "an object");
  TERN_ASSIGN_OR_RETURN(const std::optional<std::string> type, GetString(format, "type"));
  if (!type) return InvalidRequestError("response_format", "'response_format.type' is required.");
  structured::ConstraintSpec spec;
  if (*type == "text") return spec;
  if (*type == "json_object") {
    spec.kind = Kind::kJsonObject;
    return spec;
  }
  if (*type != "json_schema") {
    return ValueError("response_format.type",
                      absl::StrCat("'response_format.type' must be 'text', 'json_object' or "
                                   "'json_schema', got '",
                                   *type, "'."));
  }
  const Json* json_schema = Find(format, "json_schema");
  if (json_schema == nullptr) {
    return InvalidRequestError("response_format.json_schema",
                               "'response_format.json_schema' is required for type 'json_schema'.");
  }
  if (!json_schema->is_object()) return TypeError("response_format.json_schema", "an object");
  const Json* schema = Find(*json_schema, "schema");
  if (schema != nullptr && !schema->is_object() && !schema->is_boolean()) {
    return TypeError("response_format.json_schema.schema", "an object");
  }
  return SchemaConstraint(schema == nullptr ? Json::object() : *schema);
}

// vLLM's structured_outputs: exactly one of json, json_object, regex, choice.
absl::StatusOr<structured::ConstraintSpec> ParseStructuredOutputs(const Json& outputs,
                                                                  const std::string& param) {
  if (!outputs.is_object()) return TypeError(param, "an object");
  structured::ConstraintSpec spec;
  int kinds = 0;
  for (const auto& [key, value] : outputs.items()) {
    if (value.is_null()) continue;
    const std::string where = absl::StrCat(param, ".", key);
    if (key == "json") {
      ++kinds;
      Json schema = value;
      if (value.is_string()) {
        schema = Json::parse(value.get<std::string>(), nullptr, false);
        if (schema.is_discarded()) return ValueError(where, "'" + where + "' is not valid JSON.");
      }
      if (!schema.is_object() && !schema.is_boolean()) return TypeError(where, "a JSON schema");
      spec = SchemaConstraint(schema);
    } else if (key == "json_object") {
      if (!value.is_boolean()) return TypeError(where, "a boolean");
      if (!value.get<bool>()) continue;
      ++kinds;
      spec.kind = Kind::kJsonObject;
    } else if (key == "regex") {
      if (!value.is_string()) return TypeError(where, "a string");
      ++kinds;
      spec.kind = Kind::kRegex;
      spec.regex = value.get<std::string>();
    } else if (key == "choice") {
      if (!value.is_array() || value.empty())
        return TypeError(where, "a non-empty array of strings");
      ++kinds;
      spec.kind = Kind::kChoice;
      for (const Json& choice : value) {
        if (!choice.is_string()) return TypeError(where, "a non-empty array of strings");
        spec.choices.push_back(choice.get<std::string>());
      }
    } else if (key == "grammar" || key == "structural_tag") {
      return Unsupported(where, absl::StrCat("'", where,
                                             "' is not supported; use json, regex or "
                                             "choice."));
    } else if (key != "disable_fallback" && key != "disable_any_whitespace" &&
               key != "disable_additional_properties" && key != "whitespace_pattern") {
      return Unsupported(where, absl::StrCat("Unknown field '", where, "'."));
    }
  }
  if (kinds > 1) {
    return ValueError(param, absl::StrCat("'", param,
                                          "' may hold only one of json, json_object, "
                                          "regex and choice."));
  }
  return spec;
}

// Every structured-output field of the body, as (param, constraint).
absl::StatusOr<std::vector<std::pair<std::string, structured::ConstraintSpec>>> Constraints(
    const Json& body) {
  std::vector<std::pair<std::string, structured::ConstraintSpec>> found;
  if (const Json* format = Find(body, "response_format")) {
    TERN_ASSIGN_OR_RETURN(structured::ConstraintSpec spec, ParseResponseFormat(*format));
    if (spec.kind != Kind::kNone) found.emplace_back("response_format", std::move(spec));
  }
  if (const Json* outputs = Find(body, "structured_outputs")) {
    TERN_ASSIGN_OR_RETURN(structured::ConstraintSpec spec,
                          ParseStructuredOutputs(*outputs, "structured_outputs"));
    if (spec.kind != Kind::kNone) found.emplace_back("structured_outputs", std::move(spec));
  }
  // vLLM's fields before 0.12, still sent by older clients.
  for (const char* legacy : {"guided_json", "guided_regex", "guided_choice"}) {
    const Json* value = Find(body, legacy);
    if (value == nullptr) continue;
    const std::string key = std::string(legacy).substr(std::string("guided_").size());
    TERN_ASSIGN_OR_RETURN(structured::ConstraintSpec spec,
                          ParseStructuredOutputs(Json{{key, *value}}, "guided"));
    if (spec.kind != Kind::kNone) found.emplace_back(legacy, std::move(spec));
  }
  return found;
}

absl::StatusOr<ToolChoice> ParseToolChoice(const Json& body, const Json& tools, std::string* name) {
  const Json* choice = Find(body, "tool_choice");
  if (choice == nullptr) return tools.is_null() ? ToolChoice::kNone : ToolChoice::kAuto;
  if (choice->is_string()) {
    const std::string value = choice->get<std::string>();
    if (value == "none") return ToolChoice::kNone;
    if (value != "auto" && value != "required") {
      return ValueError("tool_choice", absl::StrCat("'tool_choice' must be 'none', 'auto', "
                                                    "'required' or a function, got '",
                                                    value, "'."));
    }
    if (tools.is_null()) {
      if (value == "auto") return ToolChoice::kNone;
      return InvalidRequestError("tool_choice",
                                 "'tool_choice' is 'required' but no tools are given.");
    }
    return value == "auto" ? ToolChoice::kAuto : ToolChoice::kRequired;
  }
  if (!choice->is_object()) return TypeError("tool_choice", "a string or an object");
  const Json* function = Find(*choice, "function");
  const Json* type = Find(*choice, "type");
  if (type == nullptr || *type != "function" || function == nullptr || !function->is_object() ||
      Find(*function, "name") == nullptr || !(*function)["name"].is_string()) {
    return InvalidRequestError(
        "tool_choice",
        "A named 'tool_choice' is {\"type\": \"function\", \"function\": {\"name\": ...}}.");
  }
  *name = (*function)["name"].get<std::string>();
  if (!tools.is_null()) {
    for (const Json& tool : tools) {
      if (tool["function"]["name"] == *name) return ToolChoice::kNamed;
    }
  }
  return InvalidRequestError("tool_choice", absl::StrCat("'tool_choice' names the function '",
                                                         *name, "', which is not in 'tools'."));
}

// Rewrites every "$ref" under `schema` that points into the root's $defs or
// definitions (or at the root itself) to the hoisted names.
void RewriteRefs(Json& schema, const std::string& prefix) {
  if (schema.is_object()) {
    for (auto& [key, value] : schema.items()) {
      if (key == "$ref" && value.is_string()) {
        const std::string ref = value.get<std::string>();
        if (ref == "#") {
          value = absl::StrCat("#/$defs/", prefix);
        } else if (absl::StartsWith(ref, "#/$defs/")) {
          value = absl::StrCat("#/$defs/", prefix, "_", ref.substr(8));
        } else if (absl::StartsWith(ref, "#/definitions/")) {
          value = absl::StrCat("#/$defs/", prefix, "_", ref.substr(14));
        }
      } else {
        RewriteRefs(value, prefix);
      }
    }
  } else if (schema.is_array()) {
    for (Json& item : schema) RewriteRefs(item, prefix);
  }
}

}  // namespace

std::string RequiredToolCallsSchema(const Json& tools, bool parallel) {
  Json defs = Json::object();
  Json calls = Json::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    const std::string prefix = absl::StrCat("tool", i);
    Json parameters = ParametersOf(tools[i]);
    if (parameters.is_object()) {
      for (const char* key : {"$defs", "definitions"}) {
        if (!parameters.contains(key) || !parameters[key].is_object()) continue;
        for (auto& [name, def] : parameters[key].items()) {
          Json hoisted = def;
          RewriteRefs(hoisted, prefix);
          defs[absl::StrCat(prefix, "_", name)] = std::move(hoisted);
        }
        parameters.erase(key);
      }
      RewriteRefs(parameters, prefix);
      defs[prefix] = parameters;
    }
    Json call = {
        {"type", "object"},
        {"properties",
         {{"name", {{"const", tools[i]["function"]["name"]}}}, {"parameters", parameters}}},
        {"required", {"name", "parameters"}}};
    calls.push_back(std::move(call));
  }
  Json schema = parallel ? Json{{"type", "array"}, {"minItems", 1}, {"items", {{"anyOf", calls}}}}
                         : Json{{"anyOf", calls}};
  if (!defs.empty()) schema["$defs"] = std::move(defs);
  return schema.dump();
}

absl::StatusOr<OutputFormat> ParseOutputFormat(const Json& body, bool chat, const Json& tools) {
  OutputFormat format;
  TERN_ASSIGN_OR_RETURN(auto constraints, Constraints(body));
  if (constraints.size() > 1) {
    return InvalidRequestError(
        constraints[1].first,
        absl::StrCat("Only one of 'response_format', 'structured_outputs' "
                     "and 'guided_*' may constrain the output; got '",
                     constraints[0].first, "' and '", constraints[1].first, "'."));
  }
  if (!constraints.empty()) {
    TERN_RETURN_IF_ERROR(Validate(constraints[0].second, constraints[0].first));
    format.constraint = std::move(constraints[0].second);
  }
  if (!chat) return format;

  TERN_ASSIGN_OR_RETURN(const std::optional<bool> parallel, GetBool(body, "parallel_tool_calls"));
  format.parallel_tool_calls = parallel.value_or(true);
  TERN_ASSIGN_OR_RETURN(format.tool_choice, ParseToolChoice(body, tools, &format.tool_name));
  if (format.tool_choice == ToolChoice::kNone) return format;
  if (format.constraint.kind != Kind::kNone) {
    if (format.tool_choice == ToolChoice::kAuto) {
      // The output is held to the format, so it is never a tool call.
      format.tool_choice = ToolChoice::kNone;
      return format;
    }
    return InvalidRequestError(
        "tool_choice", absl::StrCat("'tool_choice' \"required\" or a named function cannot be "
                                    "combined with '",
                                    constraints[0].first, "'."));
  }
  // Each tool's own schema first, so an error names the tool.
  for (size_t i = 0; i < tools.size(); ++i) {
    const Json& function = tools[i]["function"];
    if (format.tool_choice == ToolChoice::kNamed && function["name"] != format.tool_name) continue;
    TERN_RETURN_IF_ERROR(Validate(SchemaConstraint(ParametersOf(tools[i])),
                                  absl::StrCat("tools[", i, "].function.parameters")));
  }
  if (format.tool_choice == ToolChoice::kNamed) {
    for (const Json& tool : tools) {
      if (tool["function"]["name"] == format.tool_name) {
        format.constraint = SchemaConstraint(ParametersOf(tool));
      }
    }
  } else if (format.tool_choice == ToolChoice::kRequired) {
    format.constraint.kind = Kind::kJsonSchema;
    format.constraint.json_schema = RequiredToolCallsSchema(tools, format.parallel_tool_calls);
    TERN_RETURN_IF_ERROR(Validate(format.constraint, "tools"));
  }
  return format;
}

}  // namespace tern::gateway
