#include "gateway/openai/output_format.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "gateway/http/api_error.h"

namespace tern::gateway {
namespace {

using ::testing::HasSubstr;
using Kind = structured::ConstraintSpec::Kind;

const char kTools[] = R"([
  {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
  {"type": "function", "function": {"name": "now"}}
])";

absl::StatusOr<OutputFormat> Parse(const std::string& body, bool chat = true,
                                   const char* tools = nullptr) {
  return ParseOutputFormat(Json::parse(body), chat, tools ? Json::parse(tools) : Json());
}

// The 400's param and message.
std::pair<std::string, std::string> Rejection(const absl::StatusOr<OutputFormat>& parsed) {
  EXPECT_FALSE(parsed.ok());
  if (parsed.ok()) return {};
  const ApiError error = ToApiError(parsed.status());
  EXPECT_EQ(error.http_status, 400);
  const auto& inner = error.body["error"];
  return {inner["param"].is_null() ? "" : inner["param"].get<std::string>(),
          inner["message"].get<std::string>()};
}

TEST(OutputFormatTest, NoFieldsMeanFreeText) {
  const auto format = Parse("{}");
  ASSERT_TRUE(format.ok()) << format.status();
  EXPECT_EQ(format->constraint.kind, Kind::kNone);
  EXPECT_EQ(format->tool_choice, ToolChoice::kNone);
}

TEST(OutputFormatTest, ResponseFormatKinds) {
  auto text = Parse(R"({"response_format": {"type": "text"}})");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->constraint.kind, Kind::kNone);
  auto object = Parse(R"({"response_format": {"type": "json_object"}})");
  ASSERT_TRUE(object.ok());
  EXPECT_EQ(object->constraint.kind, Kind::kJsonObject);
  auto schema = Parse(R"({"response_format": {"type": "json_schema", "json_schema":
      {"name": "x", "strict": true, "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}})");
  ASSERT_TRUE(schema.ok()) << schema.status();
  EXPECT_EQ(schema->constraint.kind, Kind::kJsonSchema);
  EXPECT_EQ(Json::parse(schema->constraint.json_schema)["properties"]["a"]["type"], "integer");
  // Completions take response_format too.
  EXPECT_TRUE(Parse(R"({"response_format": {"type": "json_object"}})", /*chat=*/false).ok());
}

TEST(OutputFormatTest, UnsupportedKeywordIsNamed) {
  const auto [param, message] = Rejection(Parse(R"({"response_format": {"type": "json_schema",
      "json_schema": {"name": "x", "schema": {"type": "object", "patternProperties": {}}}}})"));
  EXPECT_EQ(param, "response_format");
  EXPECT_THAT(message, HasSubstr("patternProperties"));
}

TEST(OutputFormatTest, MalformedResponseFormats) {
  EXPECT_EQ(Rejection(Parse(R"({"response_format": "json"})")).first, "response_format");
  EXPECT_EQ(Rejection(Parse(R"({"response_format": {}})")).first, "response_format");
  EXPECT_EQ(Rejection(Parse(R"({"response_format": {"type": "yaml"}})")).first,
            "response_format.type");
  EXPECT_EQ(Rejection(Parse(R"({"response_format": {"type": "json_schema"}})")).first,
            "response_format.json_schema");
}

TEST(OutputFormatTest, VllmStructuredOutputsAndLegacyFields) {
  auto regex = Parse(R"({"structured_outputs": {"regex": "[a-z]+"}})", false);
  ASSERT_TRUE(regex.ok()) << regex.status();
  EXPECT_EQ(regex->constraint.kind, Kind::kRegex);
  EXPECT_EQ(regex->constraint.regex, "[a-z]+");
  auto choice = Parse(R"({"guided_choice": ["yes", "no"]})", false);
  ASSERT_TRUE(choice.ok()) << choice.status();
  EXPECT_EQ(choice->constraint.kind, Kind::kChoice);
  EXPECT_THAT(choice->constraint.choices, ::testing::ElementsAre("yes", "no"));
  auto json = Parse(R"({"guided_json": "{\"type\": \"boolean\"}"})", false);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(json->constraint.kind, Kind::kJsonSchema);
  EXPECT_EQ(Rejection(Parse(R"({"structured_outputs": {"regex": "a", "choice": ["b"]}})")).first,
            "structured_outputs");
  EXPECT_EQ(Rejection(Parse(R"({"structured_outputs": {"grammar": "root ::= x"}})")).first,
            "structured_outputs.grammar");
  // Two sources of a constraint are ambiguous.
  EXPECT_EQ(Rejection(Parse(R"({"response_format": {"type": "json_object"},
                               "guided_regex": "a"})"))
                .first,
            "guided_regex");
}

TEST(OutputFormatTest, ToolChoiceDefaultsToAutoWithTools) {
  auto with_tools = Parse("{}", true, kTools);
  ASSERT_TRUE(with_tools.ok());
  EXPECT_EQ(with_tools->tool_choice, ToolChoice::kAuto);
  EXPECT_EQ(with_tools->constraint.kind, Kind::kNone);
  auto none = Parse(R"({"tool_choice": "none"})", true, kTools);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->tool_choice, ToolChoice::kNone);
}

TEST(OutputFormatTest, RequiredConstrainsToCallsOfTheTools) {
  auto parallel = Parse(R"({"tool_choice": "required"})", true, kTools);
  ASSERT_TRUE(parallel.ok()) << parallel.status();
  EXPECT_EQ(parallel->tool_choice, ToolChoice::kRequired);
  const Json schema = Json::parse(parallel->constraint.json_schema);
  EXPECT_EQ(schema["type"], "array");
  EXPECT_EQ(schema["minItems"], 1);
  const Json& calls = schema["items"]["anyOf"];
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0]["properties"]["name"]["const"], "get_weather");
  EXPECT_EQ(calls[0]["properties"]["parameters"]["required"][0], "city");
  // A function without parameters takes an empty object.
  EXPECT_EQ(calls[1]["properties"]["parameters"]["type"], "object");

  auto single = Parse(R"({"tool_choice": "required", "parallel_tool_calls": false})", true, kTools);
  ASSERT_TRUE(single.ok());
  EXPECT_TRUE(Json::parse(single->constraint.json_schema).contains("anyOf"));
}

TEST(OutputFormatTest, NamedToolConstrainsToItsParameters) {
  auto named =
      Parse(R"({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}})", true,
            kTools);
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(named->tool_choice, ToolChoice::kNamed);
  EXPECT_EQ(named->tool_name, "get_weather");
  EXPECT_EQ(Json::parse(named->constraint.json_schema)["required"][0], "city");
  const auto [param, message] = Rejection(
      Parse(R"({"tool_choice": {"type": "function", "function": {"name": "fly"}}})", true, kTools));
  EXPECT_EQ(param, "tool_choice");
  EXPECT_THAT(message, HasSubstr("fly"));
}

TEST(OutputFormatTest, BadToolSchemaNamesTheTool) {
  const char tools[] = R"([{"type": "function", "function": {"name": "f", "parameters":
      {"type": "object", "if": {}}}}])";
  const auto [param, message] = Rejection(Parse(R"({"tool_choice": "required"})", true, tools));
  EXPECT_EQ(param, "tools[0].function.parameters");
  EXPECT_THAT(message, HasSubstr("'if'"));
}

TEST(OutputFormatTest, RequiredToolsAndAResponseFormatConflict) {
  EXPECT_EQ(Rejection(Parse(R"({"tool_choice": "required",
                               "response_format": {"type": "json_object"}})",
                            true, kTools))
                .first,
            "tool_choice");
  // auto gives way to the format.
  auto format = Parse(R"({"response_format": {"type": "json_object"}})", true, kTools);
  ASSERT_TRUE(format.ok());
  EXPECT_EQ(format->tool_choice, ToolChoice::kNone);
}

TEST(OutputFormatTest, RefsOfEachToolMoveToTheRoot) {
  const Json tools = Json::parse(R"([
    {"type": "function", "function": {"name": "a", "parameters": {"type": "object",
      "$defs": {"p": {"type": "integer"}}, "properties": {"x": {"$ref": "#/$defs/p"}}}}},
    {"type": "function", "function": {"name": "b", "parameters": {"type": "object",
      "definitions": {"p": {"type": "string"}}, "properties": {"y": {"$ref": "#/definitions/p"}}}}}
  ])");
  const Json schema = Json::parse(RequiredToolCallsSchema(tools, /*parallel=*/false));
  EXPECT_EQ(schema["$defs"]["tool0_p"]["type"], "integer");
  EXPECT_EQ(schema["$defs"]["tool1_p"]["type"], "string");
  EXPECT_EQ(schema["anyOf"][0]["properties"]["parameters"]["properties"]["x"]["$ref"],
            "#/$defs/tool0_p");
  EXPECT_EQ(schema["anyOf"][1]["properties"]["parameters"]["properties"]["y"]["$ref"],
            "#/$defs/tool1_p");
  structured::ConstraintSpec spec;
  spec.kind = Kind::kJsonSchema;
  spec.json_schema = schema.dump();
  EXPECT_TRUE(structured::ValidateConstraint(spec).ok());
}

}  // namespace
}  // namespace tern::gateway
