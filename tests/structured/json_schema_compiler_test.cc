#include "structured/json_schema_compiler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "structured/constraint.h"
#include "tests/structured/constraint_testing.h"

namespace tern::structured {
namespace {

using ::tern::structured::testing::IsPrefix;
using ::tern::structured::testing::Matches;
using ::tern::structured::testing::SchemaSpec;
using ::testing::HasSubstr;

absl::Status Validate(const std::string& schema) { return ValidateConstraint(SchemaSpec(schema)); }

TEST(JsonSchemaCompilerTest, UnsupportedKeywordNamesKeywordAndPointer) {
  const absl::Status status =
      Validate(R"({"type":"object","properties":{"a":{"type":"object","patternProperties":{}}}})");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("unsupported JSON schema keyword 'patternProperties' at /properties/a"));
  for (const char* keyword : {"if", "not", "dependentRequired", "uniqueItems", "minProperties",
                              "multipleOf", "contains"}) {
    const absl::Status s =
        Validate(absl::StrCat(R"({"type":"array","items":{")", keyword, R"(":1}})"));
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("'", keyword, "' at /items"))) << keyword;
  }
  EXPECT_THAT(Validate(R"({"anyOf":[{"type":"string"},{"not":{}}]})").message(),
              HasSubstr("'not' at /anyOf/1"));
  EXPECT_THAT(Validate(R"({"$defs":{"a~b/c":{"if":{}}},"$ref":"#/$defs/a~0b~1c"})").message(),
              HasSubstr("'if' at /$defs/a~0b~1c"));
}

TEST(JsonSchemaCompilerTest, OtherErrorsAreInvalidArgument) {
  for (const char* schema : {
           "{not json",
           R"({"type":"strin"})",
           R"({"$ref":"#/$defs/missing"})",
           R"({"$ref":"http://example.com/s.json"})",
           R"({"allOf":[{"type":"string"},{"type":"number"}]})",
           R"({"type":"string","format":"uri"})",
           R"j({"type":"string","pattern":"(?=a)"})j",
           R"({"type":"integer","minimum":5,"maximum":3})",
           R"({"type":"array","minItems":3,"maxItems":2})",
           R"({"enum":[]})",
           R"({"type":"object","properties":{"a":{}},"required":["b"]})",
           R"({"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"}]}},"$ref":"#/$defs/a"})",
           "false",
       }) {
    EXPECT_EQ(Validate(schema).code(), absl::StatusCode::kInvalidArgument) << schema;
  }
}

TEST(JsonSchemaCompilerTest, NestingBeyondMaxDepthIsRejected) {
  std::string deep = R"({"type":"string"})";
  for (int i = 0; i < kMaxSchemaDepth + 2; ++i) deep = R"({"type":"array","items":)" + deep + "}";
  EXPECT_THAT(Validate(deep).message(), HasSubstr("deeper than"));
  std::string shallow = R"({"type":"string"})";
  for (int i = 0; i < 10; ++i) shallow = R"({"type":"array","items":)" + shallow + "}";
  EXPECT_TRUE(Validate(shallow).ok());
}

TEST(JsonSchemaCompilerTest, AnnotationsAreIgnored) {
  EXPECT_TRUE(Validate(R"({"$schema":"x","$id":"y","title":"t","description":"d","default":1,
      "examples":[1],"$comment":"c","strict":true,"type":"integer"})")
                  .ok());
}

TEST(JsonSchemaCompilerTest, ObjectPropertiesInSchemaOrder) {
  const auto spec = SchemaSpec(R"({"type":"object","properties":{
      "b":{"type":"integer"},"a":{"type":"string"}},"required":["b","a"]})");
  EXPECT_TRUE(Matches(spec, R"({"b":1,"a":"x"})"));
  EXPECT_TRUE(Matches(spec, R"({"b": 1, "a": "x"})"));
  EXPECT_FALSE(IsPrefix(spec, R"({"a")"));
  EXPECT_FALSE(Matches(spec, R"({"b":1})"));
  EXPECT_FALSE(IsPrefix(spec, R"({ "b")"));
  EXPECT_FALSE(IsPrefix(spec, R"({"b":  1)"));
  EXPECT_FALSE(IsPrefix(spec, "{\"b\":1,\n"));
}

TEST(JsonSchemaCompilerTest, OptionalPropertiesMayBeLeftOut) {
  const auto spec = SchemaSpec(R"({"type":"object","properties":{
      "a":{"type":"integer"},"b":{"type":"integer"},"c":{"type":"integer"}},"required":["b"]})");
  EXPECT_TRUE(Matches(spec, R"({"b":2})"));
  EXPECT_TRUE(Matches(spec, R"({"a":1,"b":2})"));
  EXPECT_TRUE(Matches(spec, R"({"a":1,"b":2,"c":3})"));
  EXPECT_TRUE(Matches(spec, R"({"b":2,"c":3})"));
  EXPECT_FALSE(Matches(spec, R"({"a":1,"c":3})"));
  EXPECT_FALSE(Matches(spec, R"({})"));
  EXPECT_FALSE(IsPrefix(spec, R"({"b":2,"b")"));
  EXPECT_FALSE(IsPrefix(spec, R"({"b":2,"d")"));
}

TEST(JsonSchemaCompilerTest, AdditionalProperties) {
  const auto closed = SchemaSpec(R"({"type":"object","properties":{"a":{"type":"null"}}})");
  EXPECT_TRUE(Matches(closed, R"({"a":null})"));
  EXPECT_TRUE(Matches(closed, R"({})"));
  EXPECT_FALSE(IsPrefix(closed, R"({"a":null,)"));
  const auto open = SchemaSpec(
      R"({"type":"object","properties":{"a":{"type":"null"}},"additionalProperties":true})");
  EXPECT_TRUE(Matches(open, R"({"a":null,"x":[1,{"y":"z"}],"ab":2})"));
  EXPECT_TRUE(Matches(open, R"({"x":1})"));
  EXPECT_FALSE(IsPrefix(open, R"({"a":null,"a":)"));  // a listed name is not an extra
  const auto typed = SchemaSpec(R"({"type":"object","additionalProperties":{"type":"integer"}})");
  EXPECT_TRUE(Matches(typed, R"({"x":1, "y":-2})"));
  EXPECT_FALSE(IsPrefix(typed, R"({"x":"s)"));
}

TEST(JsonSchemaCompilerTest, Arrays) {
  const auto spec = SchemaSpec(R"({"type":"array","items":{"type":"boolean"},
      "minItems":1,"maxItems":3})");
  EXPECT_TRUE(Matches(spec, "[true]"));
  EXPECT_TRUE(Matches(spec, "[true, false,true]"));
  EXPECT_FALSE(Matches(spec, "[]"));
  EXPECT_FALSE(IsPrefix(spec, "[true,true,true,"));
  const auto tuple = SchemaSpec(R"({"type":"array","prefixItems":[{"type":"integer"},
      {"type":"string"}],"items":false})");
  EXPECT_TRUE(Matches(tuple, R"([1,"a"])"));
  EXPECT_TRUE(Matches(tuple, R"([1])"));
  EXPECT_TRUE(Matches(tuple, R"([])"));
  EXPECT_FALSE(IsPrefix(tuple, R"(["a")"));
  EXPECT_FALSE(IsPrefix(tuple, R"([1,"a",)"));
  const auto any = SchemaSpec(R"({"type":"array"})");
  EXPECT_TRUE(Matches(any, R"([1,"a",{"b":[null]},[],{}])"));
}

TEST(JsonSchemaCompilerTest, StringsAreValidJsonStrings) {
  const auto spec = SchemaSpec(R"({"type":"string"})");
  EXPECT_TRUE(Matches(spec, R"("")"));
  EXPECT_TRUE(Matches(spec, R"("a\"b\\c\/\b\f\n\r\t\u00e9\uABCD")"));
  EXPECT_TRUE(Matches(spec, "\"h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80\""));
  EXPECT_FALSE(IsPrefix(spec, "\"a\nb"));          // raw control character
  EXPECT_FALSE(IsPrefix(spec, R"("\x)"));          // bad escape
  EXPECT_FALSE(IsPrefix(spec, R"("\uD800)"));      // surrogate escape
  EXPECT_FALSE(IsPrefix(spec, "\"\xC0\xAF"));      // overlong
  EXPECT_FALSE(IsPrefix(spec, "\"\xED\xA0\x80"));  // surrogate
  EXPECT_FALSE(IsPrefix(spec, "\"\xF5"));          // beyond U+10FFFF
  EXPECT_FALSE(IsPrefix(spec, "\"\x80"));          // stray continuation
  EXPECT_TRUE(IsPrefix(spec, "\"\xE2\x82"));       // character split across tokens
}

TEST(JsonSchemaCompilerTest, StringLengthsCountCodePoints) {
  const auto spec = SchemaSpec(R"({"type":"string","minLength":2,"maxLength":3})");
  EXPECT_FALSE(Matches(spec, R"("a")"));
  EXPECT_TRUE(Matches(spec, R"("ab")"));
  EXPECT_TRUE(Matches(spec, "\"\xC3\xA9\xE2\x82\xAC\\n\""));
  EXPECT_FALSE(IsPrefix(spec, R"("abcd)"));
}

TEST(JsonSchemaCompilerTest, StringPatternAndFormats) {
  const auto spec = SchemaSpec(R"({"type":"string","pattern":"^[a-z]+-\\d{2}$"})");
  EXPECT_TRUE(Matches(spec, R"("ab-12")"));
  EXPECT_FALSE(Matches(spec, R"("ab-1")"));
  EXPECT_FALSE(IsPrefix(spec, R"("A)"));
  const auto quote = SchemaSpec(R"({"type":"string","pattern":"a\"b\\\\c\n"})");
  EXPECT_TRUE(Matches(quote, R"("a\"b\\c\n")"));
  const auto date = SchemaSpec(R"({"type":"string","format":"date"})");
  EXPECT_TRUE(Matches(date, R"("2024-02-29")"));
  EXPECT_FALSE(IsPrefix(date, R"("2024-13)"));
  const auto uuid = SchemaSpec(R"({"type":"string","format":"uuid"})");
  EXPECT_TRUE(Matches(uuid, R"("123e4567-e89b-12d3-a456-426614174000")"));
  const auto date_time = SchemaSpec(R"({"type":"string","format":"date-time"})");
  EXPECT_TRUE(Matches(date_time, R"("2024-01-02T03:04:05.5+01:00")"));
  const auto email = SchemaSpec(R"({"type":"string","format":"email"})");
  EXPECT_TRUE(Matches(email, R"("a.b@example.com")"));
  EXPECT_FALSE(Matches(email, R"("a.b@example")"));
  const auto sized = SchemaSpec(R"({"type":"string","pattern":"[ab]*","maxLength":2})");
  EXPECT_TRUE(Matches(sized, R"("ab")"));
  EXPECT_FALSE(IsPrefix(sized, R"("aba)"));
}

TEST(JsonSchemaCompilerTest, Numbers) {
  const auto number = SchemaSpec(R"({"type":"number"})");
  for (const char* ok : {"0", "-0", "12", "-3.25", "1e10", "2.5E-3", "1e+2"}) {
    EXPECT_TRUE(Matches(number, ok)) << ok;
  }
  for (const char* bad : {"01", "1.", ".5", "+1", "1e", "--1"}) {
    EXPECT_FALSE(Matches(number, bad)) << bad;
  }
  const auto integer = SchemaSpec(R"({"type":"integer"})");
  EXPECT_TRUE(Matches(integer, "-123"));
  EXPECT_FALSE(IsPrefix(integer, "1."));
}

TEST(JsonSchemaCompilerTest, IntegerBoundsAreExact) {
  const auto spec = SchemaSpec(R"({"type":"integer","minimum":0,"maximum":100})");
  for (int v = -20; v <= 130; ++v) {
    EXPECT_EQ(Matches(spec, std::to_string(v)), v >= 0 && v <= 100) << v;
  }
  EXPECT_FALSE(IsPrefix(spec, "1000"));
  EXPECT_FALSE(IsPrefix(spec, "00"));
  const auto odd =
      SchemaSpec(R"({"type":"integer","exclusiveMinimum":-37,"exclusiveMaximum":1234})");
  for (int v = -100; v <= 1300; ++v) {
    EXPECT_EQ(Matches(odd, std::to_string(v)), v > -37 && v < 1234) << v;
  }
  const auto lower = SchemaSpec(R"({"type":"integer","minimum":15})");
  EXPECT_TRUE(Matches(lower, "15"));
  EXPECT_TRUE(Matches(lower, "123456789"));
  EXPECT_FALSE(Matches(lower, "14"));
  EXPECT_FALSE(Matches(lower, "-15"));
}

TEST(JsonSchemaCompilerTest, NumberBoundsWithIntegralValuesAreExact) {
  const auto spec = SchemaSpec(R"({"type":"number","minimum":0,"exclusiveMaximum":1})");
  EXPECT_TRUE(Matches(spec, "0"));
  EXPECT_TRUE(Matches(spec, "0.999"));
  EXPECT_FALSE(Matches(spec, "1"));
  EXPECT_FALSE(Matches(spec, "1.0"));
  EXPECT_FALSE(Matches(spec, "-0.5"));
  const auto around = SchemaSpec(R"({"type":"number","exclusiveMinimum":-2,"maximum":3})");
  EXPECT_TRUE(Matches(around, "-1.5"));
  EXPECT_FALSE(Matches(around, "-2.0001"));
  EXPECT_FALSE(Matches(around, "-2"));
  EXPECT_FALSE(Matches(around, "-2.000"));
  EXPECT_TRUE(Matches(around, "-1.999"));
  EXPECT_TRUE(Matches(around, "3.000"));
  EXPECT_FALSE(Matches(around, "3.001"));
  EXPECT_FALSE(Matches(around, "1e2"));
}

TEST(JsonSchemaCompilerTest, EnumConstAndTypeLists) {
  const auto spec = SchemaSpec(R"({"enum":["red","gr\"een",3,null,{"a":[1]}]})");
  for (const char* ok : {R"("red")", R"("gr\"een")", "3", "null", R"({"a":[1]})"}) {
    EXPECT_TRUE(Matches(spec, ok)) << ok;
  }
  EXPECT_FALSE(IsPrefix(spec, R"("blue)"));
  EXPECT_TRUE(Matches(SchemaSpec(R"({"const":"x"})"), R"("x")"));
  const auto nullable = SchemaSpec(R"({"type":["string","null"],"maxLength":1})");
  EXPECT_TRUE(Matches(nullable, "null"));
  EXPECT_TRUE(Matches(nullable, R"("a")"));
  EXPECT_FALSE(Matches(nullable, R"("ab")"));
  EXPECT_TRUE(Matches(SchemaSpec(R"({"type":"boolean"})"), "false"));
}

TEST(JsonSchemaCompilerTest, CombinatorsAndRefs) {
  const auto any_of = SchemaSpec(R"({"anyOf":[{"type":"integer"},{"type":"string"}]})");
  EXPECT_TRUE(Matches(any_of, "5"));
  EXPECT_TRUE(Matches(any_of, R"("5")"));
  EXPECT_FALSE(IsPrefix(any_of, "t"));
  const auto one_of = SchemaSpec(R"({"oneOf":[{"const":1},{"const":2}]})");
  EXPECT_TRUE(Matches(one_of, "2"));
  const auto all_of = SchemaSpec(R"({"allOf":[{"type":"integer","maximum":5}]})");
  EXPECT_TRUE(Matches(all_of, "5"));
  EXPECT_FALSE(Matches(all_of, "6"));
  const auto tree = SchemaSpec(R"({"$defs":{"node":{"type":"object","properties":{
      "v":{"type":"integer"},"kids":{"type":"array","items":{"$ref":"#/$defs/node"}}},
      "required":["v"]}},"$ref":"#/$defs/node"})");
  EXPECT_TRUE(Matches(tree, R"({"v":1,"kids":[{"v":2},{"v":3,"kids":[{"v":4,"kids":[]}]}]})"));
  EXPECT_FALSE(IsPrefix(tree, R"({"v":1,"kids":[{"kids")"));
  const auto legacy = SchemaSpec(R"({"definitions":{"s":{"type":"string"}},
      "type":"object","properties":{"x":{"$ref":"#/definitions/s"}},"required":["x"]})");
  EXPECT_TRUE(Matches(legacy, R"({"x":"y"})"));
  const auto root = SchemaSpec(R"({"type":"array","items":{"$ref":"#"},"maxItems":2})");
  EXPECT_TRUE(Matches(root, "[[],[[]]]"));
}

TEST(JsonSchemaCompilerTest, EmptySchemaIsAnyValue) {
  for (const char* schema : {"{}", "true"}) {
    const auto spec = SchemaSpec(schema);
    EXPECT_TRUE(Matches(spec, R"({"a":[1,2.5e3,"x",true,false,null]})")) << schema;
    EXPECT_TRUE(Matches(spec, "-7")) << schema;
  }
}

TEST(JsonSchemaCompilerTest, JsonObjectKindIsAnyObject) {
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::kJsonObject;
  EXPECT_TRUE(Matches(spec, R"({"a": {"b": [1, "c"]}, "d": null})"));
  EXPECT_TRUE(Matches(spec, "{}"));
  EXPECT_FALSE(IsPrefix(spec, "["));
  EXPECT_FALSE(IsPrefix(spec, "{ "));
}

}  // namespace
}  // namespace tern::structured
