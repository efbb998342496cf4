// Helpers shared by the filters (jinja_filters.cc) and tests
// (jinja_tests.cc) of the chat-template engine. Pure functions.
#ifndef TERN_GATEWAY_CHAT_TEMPLATE_JINJA_FILTERS_H_
#define TERN_GATEWAY_CHAT_TEMPLATE_JINJA_FILTERS_H_

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/chat_template/jinja_interpreter.h"
#include "gateway/chat_template/jinja_value.h"

namespace tern::gateway::jinja {

// Ordering used by sort and dictsort: numbers (and booleans) with numbers,
// strings with strings (case-insensitive unless asked), none with none.
// InvalidArgument for other pairs.
absl::StatusOr<int> CompareValues(const Value& a, const Value& b, bool case_sensitive);

// Stable sort of `items` by `keys` (same length) with CompareValues.
absl::StatusOr<std::vector<Value>> SortByKeys(std::vector<Value> items,
                                              const std::vector<Value>& keys, bool case_sensitive,
                                              bool reverse);

// `item.a.b.0`: a dotted path through dicts and lists; undefined if absent.
Value GetAttributePath(const Value& item, std::string_view path);

// `dict | dictsort(case_sensitive=false, by='key', reverse=false)`.
absl::StatusOr<Value> DictSort(Interpreter& interp, const Value& object, CallArgs& args);

// A filter by name with evaluated arguments (has_args: called with parens).
absl::StatusOr<Value> ApplyNamedFilter(Interpreter& interp, const Value& operand,
                                       std::string_view name, bool has_args, CallArgs& args,
                                       const std::shared_ptr<Env>& env);

}  // namespace tern::gateway::jinja

#endif  // TERN_GATEWAY_CHAT_TEMPLATE_JINJA_FILTERS_H_
