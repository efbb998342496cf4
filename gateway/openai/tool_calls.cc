#include "gateway/openai/tool_calls.h"

#include <random>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace tern::gateway {
namespace {

constexpr absl::string_view kPythonTag = "<|python_tag|>";

absl::string_view View(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// One {"name", "parameters"|"arguments"} object as a call.
std::optional<ToolCall> CallFromJson(const Json& value) {
  if (!value.is_object() || !value.contains("name") || !value["name"].is_string()) {
    return std::nullopt;
  }
  const Json* arguments = nullptr;
  for (const char* key : {"parameters", "arguments"}) {
    if (value.contains(key)) arguments = &value[key];
  }
  if (arguments == nullptr) return std::nullopt;
  ToolCall call;
  call.id = NewToolCallId();
  call.name = value["name"].get<std::string>();
  if (arguments->is_string()) {
    call.arguments = arguments->get<std::string>();
  } else if (arguments->is_object()) {
    call.arguments = arguments->dump();
  } else {
    return std::nullopt;
  }
  return call;
}

Json Parse(absl::string_view text) {
  return Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
}

}  // namespace

std::string NewToolCallId() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string id = "call_";
  for (int i = 0; i < 24; ++i) id += kAlphabet[rng() % (sizeof(kAlphabet) - 1)];
  return id;
}

std::optional<std::vector<ToolCall>> ParseToolCalls(std::string_view output) {
  absl::string_view text = absl::StripAsciiWhitespace(View(output));
  absl::ConsumePrefix(&text, kPythonTag);
  text = absl::StripAsciiWhitespace(text);
  if (text.empty()) return std::nullopt;
  std::vector<ToolCall> calls;
  const Json whole = Parse(text);
  if (whole.is_array()) {
    for (const Json& item : whole) {
      std::optional<ToolCall> call = CallFromJson(item);
      if (!call) return std::nullopt;
      calls.push_back(*std::move(call));
    }
    if (calls.empty()) return std::nullopt;
    return calls;
  }
  if (!whole.is_discarded()) {
    std::optional<ToolCall> call = CallFromJson(whole);
    if (!call) return std::nullopt;
    calls.push_back(*std::move(call));
    return calls;
  }
  // Several objects separated by ';' (a ';' inside a string splits wrongly
  // and fails to parse, so try the pieces joined back as needed).
  std::string piece;
  for (absl::string_view part : absl::StrSplit(text, ';')) {
    if (!piece.empty()) piece += ';';
    absl::StrAppend(&piece, part);
    const Json value = Parse(piece);
    if (value.is_discarded()) continue;
    std::optional<ToolCall> call = CallFromJson(value);
    if (!call) return std::nullopt;
    calls.push_back(*std::move(call));
    piece.clear();
  }
  if (!absl::StripAsciiWhitespace(piece).empty() || calls.empty()) return std::nullopt;
  return calls;
}

Json ToolCallsJson(const std::vector<ToolCall>& calls) {
  Json out = Json::array();
  for (const ToolCall& call : calls) {
    out.push_back({{"id", call.id},
                   {"type", "function"},
                   {"function", {{"name", call.name}, {"arguments", call.arguments}}}});
  }
  return out;
}

ToolCallStream::ToolCallStream(ToolChoice choice, std::string tool_name)
    : choice_(choice), tool_name_(std::move(tool_name)) {
  switch (choice_) {
    case ToolChoice::kNone:
      state_ = State::kContent;
      break;
    case ToolChoice::kAuto:
      state_ = State::kUndecided;
      break;
    case ToolChoice::kRequired:
      state_ = State::kHolding;
      break;
    case ToolChoice::kNamed:
      state_ = State::kNamed;
      break;
  }
}

ToolCallStream::Delta ToolCallStream::Push(std::string_view text) {
  Delta delta;
  switch (state_) {
    case State::kContent:
      delta.content = std::string(text);
      return delta;
    case State::kHolding:
      held_ += text;
      return delta;
    case State::kNamed: {
      if (text.empty()) return delta;
      Json entry = {{"index", 0}};
      if (calls_.empty()) {
        calls_.push_back(ToolCall{NewToolCallId(), tool_name_, ""});
        entry["id"] = calls_[0].id;
        entry["type"] = "function";
        entry["function"] = {{"name", tool_name_}, {"arguments", std::string(text)}};
      } else {
        entry["function"] = {{"arguments", std::string(text)}};
      }
      calls_[0].arguments += text;
      delta.tool_calls = Json::array({std::move(entry)});
      return delta;
    }
    case State::kUndecided: {
      held_ += text;
      const absl::string_view rest = absl::StripLeadingAsciiWhitespace(held_);
      if (rest.empty()) return delta;
      // The python tag may arrive in pieces; wait until it can be told apart.
      if (kPythonTag.size() > rest.size() && absl::StartsWith(kPythonTag, rest)) return delta;
      if (rest[0] == '{' || rest[0] == '[' || absl::StartsWith(rest, kPythonTag)) {
        state_ = State::kHolding;
        return delta;
      }
      state_ = State::kContent;
      delta.content = std::move(held_);
      held_.clear();
      return delta;
    }
  }
  return delta;
}

ToolCallStream::Delta ToolCallStream::Finish() {
  Delta delta;
  if (state_ == State::kNamed) {
    if (calls_.empty()) {
      // No text at all (cut off at once): still the one call, without arguments.
      calls_.push_back(ToolCall{NewToolCallId(), tool_name_, ""});
      delta.tool_calls = Json::array({{{"index", 0},
                                       {"id", calls_[0].id},
                                       {"type", "function"},
                                       {"function", {{"name", tool_name_}, {"arguments", ""}}}}});
    }
    return delta;
  }
  if (state_ == State::kContent) return delta;
  std::optional<std::vector<ToolCall>> calls = ParseToolCalls(held_);
  if (!calls) {
    state_ = State::kContent;
    delta.content = std::move(held_);
    held_.clear();
    return delta;
  }
  calls_ = *std::move(calls);
  delta.tool_calls = Json::array();
  for (size_t i = 0; i < calls_.size(); ++i) {
    delta.tool_calls.push_back(
        {{"index", i},
         {"id", calls_[i].id},
         {"type", "function"},
         {"function", {{"name", calls_[i].name}, {"arguments", calls_[i].arguments}}}});
  }
  held_.clear();
  return delta;
}

}  // namespace tern::gateway
