// Engine features of the chat-template interpreter, each checked against an
// expectation written by hand from Jinja's (and @huggingface/jinja's)
// documented behaviour.
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "gateway/chat_template/chat_template.h"
#include "gateway/chat_template/jinja_interpreter.h"
#include "gateway/chat_template/jinja_lexer.h"
#include "gateway/chat_template/jinja_parser.h"
#include "gateway/chat_template/jinja_value.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tern::gateway {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Json = nlohmann::ordered_json;

absl::StatusOr<std::string> Try(std::string_view source, const Json& context = Json::object()) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Compile(source);
  if (!t.ok()) return t.status();
  return t->Render(context);
}

// Renders or returns "ERROR: <message>".
std::string R(std::string_view source, std::string_view context = "{}") {
  absl::StatusOr<std::string> out = Try(source, Json::parse(context));
  if (!out.ok()) return "ERROR: " + std::string(out.status().message());
  return *out;
}

TEST(JinjaTest, RendersTextExpressionsAndComments) {
  EXPECT_EQ(R("plain text"), "plain text");
  EXPECT_EQ(R("a{# comment #}b"), "ab");
  EXPECT_EQ(R("{{ 'a' ~ 1 }}"), "a1");
  EXPECT_EQ(R("{{ \"x\" + 'y' }}"), "xy");
  EXPECT_EQ(R("{{ 'a' 'b' }}"), "ab");
  EXPECT_EQ(R("{{ 'tab\\there\\n' }}"), "tab\there\n");
  EXPECT_EQ(R("{{ '\\u00e9\\x41' }}"),
            "\xC3\xA9"
            "A");
  EXPECT_EQ(R("one trailing newline is dropped\n"), "one trailing newline is dropped");
}

TEST(JinjaTest, ArithmeticFollowsJavaScriptNumbers) {
  EXPECT_EQ(R("{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 2 ** 10 }}|{{ -2 ** 2 }}"), "7|9|1024|4");
  EXPECT_EQ(R("{{ 7 / 2 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ 6 / 3 }}"), "3.5|3|-4|1|2.0");
  EXPECT_EQ(R("{{ 1.5 + 1 }}|{{ 2.0 }}|{{ 0.1 + 0.2 }}|{{ 1 / 3 }}"),
            "2.5|2.0|0.30000000000000004|0.3333333333333333");
  EXPECT_EQ(R("{{ 2 ** -1 }}|{{ 10 - 2.5 }}|{{ -(3) }}|{{ +4 }}"), "0.5|7.5|-3|4");
  EXPECT_EQ(R("{{ 'n=' ~ 2.0 }}"), "n=2");  // concatenation prints the JavaScript number
}

TEST(JinjaTest, LiteralsPrintLikeTheReference) {
  EXPECT_EQ(R("{{ [1, 'a', none, true, 2.5] }}"), "[1, \"a\", null, true, 2.5]");
  EXPECT_EQ(R("{{ {'k': 'v', 'n': {'x': []}} }}"), "{\"k\": \"v\", \"n\": {\"x\": []}}");
  EXPECT_EQ(R("[{{ none }}][{{ true }}][{{ false }}][{{ True }}]"), "[][true][false][true]");
  EXPECT_EQ(R("{{ (1, 2) }}"), "[1, 2]");
}

TEST(JinjaTest, ComparisonsAndLogic) {
  EXPECT_EQ(R("{{ 1 < 2 }}{{ 2 <= 1 }}{{ 3 == 3.0 }}{{ 'a' != 'b' }}"), "truefalsetruetrue");
  EXPECT_EQ(R("{{ 1 and 'x' }}|{{ 0 or 'y' }}|{{ [] or 'empty' }}|{{ not none }}"),
            "x|y|empty|true");
  EXPECT_EQ(R("{{ 'ab' in 'cabd' }}{{ 'z' not in ['a'] }}{{ 'k' in {'k': 1} }}{{ 2 in [1, 2] }}"),
            "truetruetruetrue");
  EXPECT_EQ(R("{{ 'y' if 1 > 2 else 'n' }}|{{ 'only' if false }}|"), "n||");
}

TEST(JinjaTest, IfElifElse) {
  constexpr std::string_view kT =
      "{% if x == 1 %}one{% elif x == 2 %}two{% elif x is none %}none{% else %}other{% endif %}";
  EXPECT_EQ(R(kT, R"({"x": 1})"), "one");
  EXPECT_EQ(R(kT, R"({"x": 2})"), "two");
  EXPECT_EQ(R(kT, R"({"x": null})"), "none");
  EXPECT_EQ(R(kT, R"({"x": "z"})"), "other");
}

TEST(JinjaTest, ForLoopVariables) {
  EXPECT_EQ(R("{% for x in ['a','b','c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}"
              "{{ loop.last }}{{ loop.length }}{{ x }} {% endfor %}"),
            "10truefalse3a 21falsefalse3b 32falsetrue3c ");
  EXPECT_EQ(R("{% for x in [1, 2] %}{{ loop.revindex }}{{ loop.previtem }}|{% endfor %}"), "2|11|");
  EXPECT_EQ(R("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(R("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}{{ loop.length }}{% endfor %}"),
            "2242");
  EXPECT_EQ(
      R("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", R"({"d": {"b": 1, "a": 2}})"),
      "b=1;a=2;");
  EXPECT_EQ(R("{% for k in d %}{{ k }}{% endfor %}", R"({"d": {"x": 1, "y": 2}})"), "xy");
  EXPECT_EQ(R("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}"), "37");
  EXPECT_EQ(
      R("{% for x in [1, 2, 3] %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% endfor %}"),
      "13");
  EXPECT_EQ(R("{% for x in [1, 2, 3] %}{{ x }}{% if x == 2 %}{% break %}{% endif %}{% endfor %}"),
            "12");
}

TEST(JinjaTest, WhitespaceControlAndBlockTrimming) {
  EXPECT_EQ(R("a  {{- 'b' -}}  c"), "abc");
  EXPECT_EQ(R("a \n {%- if true -%} \n x \n {%- endif -%} \n b"), "axb");
  EXPECT_EQ(R("a {#- c -#} b"), "ab");
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: the
  // indentation before a block tag goes; expression tags keep both.
  EXPECT_EQ(R("{% if true %}\nX\n{% endif %}\nY"), "X\nY");
  EXPECT_EQ(R("  {% if true %}X{% endif %}"), "X");
  EXPECT_EQ(R("  {{ 'x' }}\nz"), "  x\nz");
  EXPECT_EQ(R("<{% for i in [1, 2] %}\n  {{ i }}\n{% endfor %}>"), "<  1\n  2\n>");
}

TEST(JinjaTest, SetScopesAndNamespaces) {
  EXPECT_EQ(R("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(R("{% set ns = namespace(total=0) %}{% for i in range(5) %}"
              "{% set ns.total = ns.total + i %}{% endfor %}{{ ns.total }}"),
            "10");
  EXPECT_EQ(R("{% set a, b = 1, 'two' %}{{ b }}{{ a }}"), "two1");
  EXPECT_EQ(R("{% set block %}[{{ 1 + 1 }}]{% endset %}{{ block }}{{ block }}"), "[2][2]");
  EXPECT_EQ(R("{% if true %}{% set y = 'set in if' %}{% endif %}{{ y }}"), "set in if");
  EXPECT_THAT(R("{% set d = {} %}{% set d.x = 1 %}"), HasSubstr("non-namespace"));
}

TEST(JinjaTest, Macros) {
  EXPECT_EQ(R("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
              "{{ greet('Ann') }} {{ greet('Bob', '?') }} {{ greet(punct='.', name='Cy') }}"),
            "Hi Ann! Hi Bob? Hi Cy.");
  EXPECT_EQ(R("{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}"
              "{% endmacro %}{{ fact(5) }}"),
            "120");
  EXPECT_EQ(R("{% macro m() %}[{{ caller() }}]{% endmacro %}{% call m() %}inside{% endcall %}"),
            "[inside]");
  EXPECT_THAT(R("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}"), HasSubstr("takes not more than"));
}

TEST(JinjaTest, AttributeSubscriptAndSlices) {
  constexpr std::string_view kCtx =
      R"({"m": {"role": "user", "content": "hi"}, "xs": [1, 2, 3, 4], "s": "hello"})";
  EXPECT_EQ(R("{{ m.role }}{{ m['content'] }}{{ xs[0] }}{{ xs[-1] }}{{ xs.1 }}", kCtx),
            "userhi142");
  EXPECT_EQ(R("{{ xs[::-1] }}|{{ xs[1:] }}|{{ xs[:2] }}|{{ xs[::2] }}|{{ xs[-2:] }}", kCtx),
            "[4, 3, 2, 1]|[2, 3, 4]|[1, 2]|[1, 3]|[3, 4]");
  EXPECT_EQ(R("{{ s[::-1] }}|{{ s[1:3] }}|{{ s[0] }}|{{ s|length }}", kCtx), "olleh|el|h|5");
  EXPECT_EQ(R("{{ xs[10] }}|{{ m.missing }}|{{ m.missing.deeper }}", kCtx), "||");
}

TEST(JinjaTest, UndefinedBehavesLikeJinjaDefault) {
  EXPECT_EQ(R("[{{ nope }}]"), "[]");
  EXPECT_EQ(R("{% if nope %}y{% else %}n{% endif %}"), "n");
  EXPECT_EQ(R("{{ nope is defined }}{{ nope is undefined }}{{ nope is not defined }}"),
            "falsetruetrue");
  EXPECT_EQ(R("{{ 'x' in nope }}"), "false");
}

TEST(JinjaTest, Tests) {
  constexpr std::string_view kCtx = R"({"s": "str", "d": {"a": 1}, "l": [1], "n": null})";
  EXPECT_EQ(R("{{ s is string }}{{ d is mapping }}{{ l is mapping }}{{ l is iterable }}"
              "{{ s is iterable }}{{ d is sequence }}{{ n is none }}{{ s is not none }}",
              kCtx),
            "truetruefalsetruetruetruetruetrue");
  EXPECT_EQ(R("{{ 3 is odd }}{{ 3 is even }}{{ 3 is number }}{{ 3 is integer }}{{ 3.5 is float }}"
              "{{ true is boolean }}{{ 9 is divisibleby(3) }}{{ 9 is divisibleby 4 }}"
              "{{ 'a' is equalto('a') }}{{ 'ABC' is upper }}"),
            "truefalsetruetruetruetruetruefalsetruetrue");
  EXPECT_THAT(R("{{ 1 is nosuchtest }}"), HasSubstr("Unknown test: nosuchtest"));
}

TEST(JinjaTest, StringFilters) {
  EXPECT_EQ(
      R("[{{ '  pad \n'|trim }}]|{{ 'abc'|upper }}|{{ 'ABC'|lower }}|{{ 'hello world'|capitalize }}"
        "|{{ 'hello world'|title }}"),
      "[pad]|ABC|abc|Hello world|Hello World");
  EXPECT_EQ(R("{{ 'a-b-c'|replace('-', '+') }}|{{ 'aaa'|replace('a', 'b', 2) }}|{{ 42|string }}"
              "|{{ 2.0|string }}|{{ '7x'|int }}|{{ 'x'|int }}|{{ 3.9|int }}|{{ '2.5'|float }}"),
            "a+b+c|bba|42|2.0|7|0|3|2.5");
  EXPECT_EQ(R("{{ 'a\nb\n\nc'|indent }}|{{ 'a\nb'|indent(2, true) }}"),
            "a\n    b\n\n    c|  a\n  b");
  EXPECT_EQ(R("{{ 2.567|round(2) }}|{{ 2.5|round }}|{{ 3|round }}|{{ -4|abs }}"), "2.57|2.0|3|4");
  EXPECT_EQ(R("{{ ''|trim('x') }}{{ 'xxaxx'|trim('x') }}"), "a");
}

TEST(JinjaTest, ListAndDictFilters) {
  constexpr std::string_view kCtx =
      R"({"xs": [{"t": "a", "v": 1}, {"t": "b", "v": 2}, {"t": "a", "v": 3}], "d": {"b": 2, "a": 1}})";
  EXPECT_EQ(
      R("{{ [3, 1, 2]|length }}|{{ [3, 1, 2]|first }}|{{ [3, 1, 2]|last }}|{{ [3, 1, 2]|sort }}"
        "|{{ [1, 2]|reverse|list }}|{{ [1, 1, 2]|unique|list }}|{{ ['b', 'A', 'c']|sort }}"),
      "3|3|2|[1, 2, 3]|[2, 1]|[1, 2]|[\"A\", \"b\", \"c\"]");
  EXPECT_EQ(R("{{ [1, 2, 3]|join(', ') }}|{{ ['a', none, 'b']|join }}"), "1, 2, 3|ab");
  EXPECT_EQ(R("{{ xs|selectattr('t', 'equalto', 'a')|map(attribute='v')|join(',') }}|"
              "{{ xs|rejectattr('t', 'equalto', 'a')|map(attribute='v')|list }}|"
              "{{ xs|map(attribute='missing', default=0)|list }}",
              kCtx),
            "1,3|[2]|[0, 0, 0]");
  EXPECT_EQ(R("{{ [1, 2, 3, 4]|select('odd')|list }}|{{ [0, 1, '']|reject|list }}"
              "|{{ ['a', 'b']|map('upper')|join }}"),
            "[1, 3]|[0, \"\"]|AB");
  EXPECT_EQ(R("{{ d|items }}|{{ d|dictsort }}|{{ d|length }}", kCtx),
            "[[\"b\", 2], [\"a\", 1]]|[[\"a\", 1], [\"b\", 2]]|2");
  EXPECT_EQ(
      R("{{ missing|default('dflt') }}|{{ ''|default('dflt', true) }}|{{ 'x'|default('d') }}"),
      "dflt|dflt|x");
}

TEST(JinjaTest, ToJsonMatchesPythonJsonDumps) {
  constexpr std::string_view kCtx =
      R"({"v": {"s": "é\"\\\n\u0001", "n": [1, 2.5, -3, 1e21, 1e-7], "b": [true, false, null], "e": {}}})";
  EXPECT_EQ(R("{{ v|tojson }}", kCtx),
            "{\"s\": \"\xC3\xA9\\\"\\\\\\n\\u0001\", \"n\": [1, 2.5, -3, 1e+21, 1e-7], "
            "\"b\": [true, false, null], \"e\": {}}");
  EXPECT_EQ(R("{{ {'a': [1, {'b': []}]}|tojson(indent=2) }}"),
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": []\n    }\n  ]\n}");
  EXPECT_EQ(R("{{ 'é😀'|tojson(ensure_ascii=true) }}"), "\"\\u00e9\\ud83d\\ude00\"");
  EXPECT_EQ(R("{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}"), "{\"a\": 2, \"b\": 1}");
  EXPECT_EQ(R("{{ [1, 2]|tojson(separators=(',', ':')) }}"), "[1,2]");
  EXPECT_EQ(R("{{ missing|tojson }}"), "null");
}

TEST(JinjaTest, StringAndDictMethods) {
  EXPECT_EQ(R("[{{ '  x  '.strip() }}][{{ '  x  '.lstrip() }}][{{ '  x  '.rstrip() }}]"
              "[{{ '--x--'.strip('-') }}]"),
            "[x][x  ][  x][x]");
  EXPECT_EQ(R("{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}"),
            "[\"a\", \"b\", \"\", \"c\"]|[\"a\", \"b\"]|[\"a\", \"b c\"]");
  EXPECT_EQ(R("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'Ab'.upper() }}"
              "{{ 'Ab'.lower() }}{{ 'ab cd'.title() }}{{ 'a.b'.replace('.', '/') }}"),
            "truetrueABabAb Cda/b");
  constexpr std::string_view kCtx = R"({"d": {"a": 1, "b": [2]}})";
  EXPECT_EQ(R("{{ d.get('a') }}|{{ d.get('z', 'dflt') }}|[{{ d.get('z') }}]|{{ d.keys() }}"
              "|{{ d.values() }}|{{ d.items() }}",
              kCtx),
            "1|dflt|[]|[\"a\", \"b\"]|[1, [2]]|[[\"a\", 1], [\"b\", [2]]]");
}

TEST(JinjaTest, RaiseExceptionBecomesInvalidArgument) {
  absl::StatusOr<std::string> out =
      Try("before{{ raise_exception('Bad role: ' ~ r) }}", {{"r", "x"}});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(), "Bad role: x");
}

TEST(JinjaTest, StrftimeNowFormatsTheCurrentDate) {
  const std::string out = R("{{ strftime_now('%Y-%m-%d %%') }}");
  ASSERT_EQ(out.size(), 12u) << out;
  EXPECT_EQ(out[4], '-');
  EXPECT_EQ(out.substr(10), " %");
  EXPECT_THAT(R("{{ strftime_now('%d %b %Y') }}"),
              ::testing::MatchesRegex("[0-9]{2} [A-Z][a-z]{2} [0-9]{4}"));
}

TEST(JinjaTest, SyntaxErrorsCarryLineNumbers) {
  const absl::StatusOr<ChatTemplate> t = ChatTemplate::Compile("line one\nline two\n{% if %}");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), StartsWith("line 3: "));
  EXPECT_THAT(R("{% for x in xs %}no end"), HasSubstr("Unexpected end of template"));
  EXPECT_THAT(R("{% frobnicate %}"), HasSubstr("Unknown statement type: frobnicate"));
  EXPECT_THAT(R("{{ 'unterminated }}"), HasSubstr("Unexpected end of input"));
  EXPECT_THAT(R("{# no end"), HasSubstr("Missing end of comment tag"));
  EXPECT_THAT(R("{{ 1 $ 2 }}"), HasSubstr("Unexpected character: $"));
  EXPECT_THAT(R("{% endif %}"), HasSubstr("Unknown statement type: endif"));
}

TEST(JinjaTest, RuntimeErrorsCarryLineNumbers) {
  EXPECT_EQ(R("a\n\n{{ none + 1 }}"), "ERROR: line 3: Cannot perform operation on null values");
  EXPECT_EQ(R("{{ 'a' + nope }}"), "ERROR: line 1: Cannot perform operation + on undefined values");
  EXPECT_THAT(R("{{ 'x'|nosuchfilter }}"), HasSubstr("Cannot apply filter \"nosuchfilter\""));
  EXPECT_THAT(R("{{ 5() }}"), HasSubstr("Cannot call something that is not a function"));
}

absl::StatusCode RenderWithLimits(std::string_view source, const jinja::RenderLimits& limits) {
  absl::StatusOr<std::vector<jinja::Token>> tokens = jinja::Tokenize(source);
  if (!tokens.ok()) return tokens.status().code();
  absl::StatusOr<jinja::StmtList> program = jinja::Parse(*tokens);
  if (!program.ok()) return program.status().code();
  auto globals = std::make_shared<jinja::Env>(nullptr);
  jinja::InstallGlobals(*globals);
  jinja::Interpreter interpreter(limits);
  return interpreter.Render(*program, globals).status().code();
}

TEST(JinjaTest, RenderBudgetsStopRunawayTemplates) {
  constexpr auto kOk = absl::StatusCode::kOk;
  constexpr auto kExhausted = absl::StatusCode::kResourceExhausted;
  constexpr std::string_view kLoops =
      "{% for i in range(100) %}{% for j in range(100) %}{{ j }}{% endfor %}{% endfor %}";
  jinja::RenderLimits limits;
  EXPECT_EQ(RenderWithLimits(kLoops, limits), kOk);
  limits.max_steps = 5000;
  EXPECT_EQ(RenderWithLimits(kLoops, limits), kExhausted);
  limits = {};
  limits.max_output_bytes = 1000;
  EXPECT_EQ(RenderWithLimits(kLoops, limits), kExhausted);
  limits = {};
  limits.max_list_items = 5000;
  EXPECT_EQ(RenderWithLimits(kLoops, limits), kExhausted);
  limits = {};
  limits.max_allocated_bytes = 10000;
  EXPECT_EQ(RenderWithLimits(kLoops, limits), kExhausted);
  limits = {};
  limits.max_call_depth = 10;
  constexpr std::string_view kRecurse =
      "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(20) }}";
  EXPECT_EQ(RenderWithLimits(kRecurse, limits), kExhausted);
  limits.max_call_depth = 30;
  EXPECT_EQ(RenderWithLimits(kRecurse, limits), kOk);
  limits = {};
  limits.max_namespaces = 3;
  EXPECT_EQ(
      RenderWithLimits("{% for i in range(5) %}{% set n = namespace() %}{% endfor %}", limits),
      kExhausted);
}

TEST(JinjaTest, NumbersPrintAsJavaScriptDoes) {
  using jinja::FormatFloat;
  using jinja::FormatJsNumber;
  EXPECT_EQ(FormatJsNumber(0), "0");
  EXPECT_EQ(FormatJsNumber(-0.0), "0");
  EXPECT_EQ(FormatJsNumber(123456789012345680000.0), "123456789012345680000");
  EXPECT_EQ(FormatJsNumber(1e21), "1e+21");
  EXPECT_EQ(FormatJsNumber(1.5e-7), "1.5e-7");
  EXPECT_EQ(FormatJsNumber(0.000001), "0.000001");
  EXPECT_EQ(FormatJsNumber(-2.5), "-2.5");
  EXPECT_EQ(FormatFloat(3), "3.0");
  EXPECT_EQ(FormatFloat(-0.0), "-0.0");
  EXPECT_EQ(FormatFloat(0.5), "0.5");
}

TEST(JinjaTest, LexerAppliesHuggingFaceBlockOptions) {
  absl::StatusOr<std::vector<jinja::Token>> tokens = jinja::Tokenize("  {% if x %}\nA{{ y }}");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->size(), 8u);
  EXPECT_EQ((*tokens)[0].type, jinja::TokenType::kOpenStatement);  // indentation stripped
  EXPECT_EQ((*tokens)[4].type, jinja::TokenType::kText);
  EXPECT_EQ((*tokens)[4].value, "A");  // newline after %} trimmed
  EXPECT_EQ((*tokens)[4].line, 2);
}

}  // namespace
}  // namespace tern::gateway
