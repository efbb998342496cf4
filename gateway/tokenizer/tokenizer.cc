#include "gateway/tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "gateway/tokenizer/byte_level.h"
#include "nlohmann/json.hpp"

namespace tern::gateway {

using Json = nlohmann::json;

namespace {

// Bound on nested Sequence components, so hostile files cannot exhaust the stack.
constexpr int kMaxNesting = 8;

absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", what));
}

absl::Status Unsupported(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: unsupported ", what));
}

bool IsNullOrAbsent(const Json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() || it->is_null();
}

// object[key] as a string; `fallback` when absent or null.
absl::StatusOr<std::string> GetString(const Json& object, const char* key, const std::string& where,
                                      std::optional<std::string> fallback = std::nullopt) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    if (fallback.has_value()) return *fallback;
    return Invalid(absl::StrCat(where, ".", key, " is missing"));
  }
  if (!it->is_string()) return Invalid(absl::StrCat(where, ".", key, " must be a string"));
  return it->get<std::string>();
}

absl::StatusOr<bool> GetBool(const Json& object, const char* key, const std::string& where,
                             bool fallback) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return Invalid(absl::StrCat(where, ".", key, " must be true or false"));
  return it->get<bool>();
}

absl::StatusOr<int32_t> GetId(const Json& value, const std::string& where) {
  if (!value.is_number_integer()) return Invalid(absl::StrCat(where, " must be an integer id"));
  const int64_t id = value.get<int64_t>();
  if (id < 0 || id > BpeModel::kMaxId) {
    return Invalid(absl::StrCat(where, " = ", id, " is out of range"));
  }
  return static_cast<int32_t>(id);
}

absl::StatusOr<const Json*> GetObject(const Json& object, const char* key,
                                      const std::string& where) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_object()) {
    return Invalid(absl::StrCat(where, ".", key, " must be an object"));
  }
  return &*it;
}

absl::StatusOr<const Json*> GetArray(const Json& object, const char* key,
                                     const std::string& where) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_array()) {
    return Invalid(absl::StrCat(where, ".", key, " must be an array"));
  }
  return &*it;
}

absl::StatusOr<BpeConfig> ParseModel(const Json& model) {
  if (!model.is_object()) return Invalid("model must be an object");
  TERN_ASSIGN_OR_RETURN(const std::string type, GetString(model, "type", "model", "BPE"));
  if (type != "BPE") return Unsupported(absl::StrCat("model type \"", type, "\" (only BPE)"));
  TERN_ASSIGN_OR_RETURN(const bool byte_fallback, GetBool(model, "byte_fallback", "model", false));
  if (byte_fallback) return Unsupported("model.byte_fallback");
  if (!IsNullOrAbsent(model, "dropout")) {
    const Json& dropout = model["dropout"];
    if (!dropout.is_number() || dropout.get<double>() != 0.0) return Unsupported("model.dropout");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    TERN_ASSIGN_OR_RETURN(const std::string affix, GetString(model, key, "model", ""));
    if (!affix.empty()) return Unsupported(absl::StrCat("model.", key));
  }

  BpeConfig config;
  TERN_ASSIGN_OR_RETURN(config.ignore_merges, GetBool(model, "ignore_merges", "model", false));
  TERN_ASSIGN_OR_RETURN(config.fuse_unk, GetBool(model, "fuse_unk", "model", false));
  if (!IsNullOrAbsent(model, "unk_token")) {
    TERN_ASSIGN_OR_RETURN(config.unk_token, GetString(model, "unk_token", "model"));
  }

  TERN_ASSIGN_OR_RETURN(const Json* vocab, GetObject(model, "vocab", "model"));
  config.vocab.reserve(vocab->size());
  for (const auto& [token, id_json] : vocab->items()) {
    TERN_ASSIGN_OR_RETURN(const int32_t id,
                          GetId(id_json, absl::StrCat("model.vocab[\"", token, "\"]")));
    config.vocab.emplace_back(token, id);
  }

  TERN_ASSIGN_OR_RETURN(const Json* merges, GetArray(model, "merges", "model"));
  config.merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const Json& merge = (*merges)[i];
    if (merge.is_string()) {
      // Legacy form "left right": byte-level tokens never contain a space.
      const std::string& text = merge.get_ref<const std::string&>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        return Invalid(absl::StrCat("model.merges[", i, "] = \"", text,
                                    "\" must be two tokens separated by one space"));
      }
      config.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      config.merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      return Invalid(absl::StrCat("model.merges[", i, "] must be \"a b\" or [\"a\", \"b\"]"));
    }
  }
  return config;
}

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const Json& root) {
  std::vector<AddedToken> tokens;
  if (IsNullOrAbsent(root, "added_tokens")) return tokens;
  TERN_ASSIGN_OR_RETURN(const Json* list, GetArray(root, "added_tokens", "root"));
  for (size_t i = 0; i < list->size(); ++i) {
    const Json& item = (*list)[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!item.is_object()) return Invalid(absl::StrCat(where, " must be an object"));
    AddedToken token;
    if (!item.contains("id")) return Invalid(absl::StrCat(where, ".id is missing"));
    TERN_ASSIGN_OR_RETURN(token.id, GetId(item["id"], absl::StrCat(where, ".id")));
    TERN_ASSIGN_OR_RETURN(token.content, GetString(item, "content", where));
    if (!IsValidUtf8(token.content)) return Invalid(absl::StrCat(where, ".content is not UTF-8"));
    TERN_ASSIGN_OR_RETURN(token.special, GetBool(item, "special", where, false));
    TERN_ASSIGN_OR_RETURN(token.single_word, GetBool(item, "single_word", where, false));
    TERN_ASSIGN_OR_RETURN(token.lstrip, GetBool(item, "lstrip", where, false));
    TERN_ASSIGN_OR_RETURN(token.rstrip, GetBool(item, "rstrip", where, false));
    TERN_ASSIGN_OR_RETURN(token.normalized, GetBool(item, "normalized", where, !token.special));
    tokens.push_back(std::move(token));
  }
  return tokens;
}

// Appends the splitting steps of a pre_tokenizer. `byte_level_seen` tracks
// the ByteLevel step, which must come last: later steps would see the
// byte-level alphabet instead of text.
absl::Status ParsePreTokenizer(const Json& node, std::vector<std::unique_ptr<RegexSplitter>>& steps,
                               bool& byte_level_seen, int depth = 0) {
  if (!node.is_object()) return Invalid("pre_tokenizer must be an object");
  if (depth > kMaxNesting) return Unsupported("pre_tokenizer nesting depth");
  TERN_ASSIGN_OR_RETURN(const std::string type, GetString(node, "type", "pre_tokenizer"));
  if (byte_level_seen) return Unsupported("pre_tokenizer steps after ByteLevel");
  if (type == "Sequence") {
    TERN_ASSIGN_OR_RETURN(const Json* list, GetArray(node, "pretokenizers", "pre_tokenizer"));
    for (const Json& step : *list) {
      TERN_RETURN_IF_ERROR(ParsePreTokenizer(step, steps, byte_level_seen, depth + 1));
    }
    return absl::OkStatus();
  }
  if (type == "Split") {
    TERN_ASSIGN_OR_RETURN(const std::string behavior, GetString(node, "behavior", "Split"));
    if (behavior != "Isolated") {
      return Unsupported(absl::StrCat("Split behavior \"", behavior, "\" (only Isolated)"));
    }
    TERN_ASSIGN_OR_RETURN(const bool invert, GetBool(node, "invert", "Split", false));
    if (invert) return Unsupported("Split with invert: true");
    TERN_ASSIGN_OR_RETURN(const Json* pattern, GetObject(node, "pattern", "Split"));
    const bool literal = pattern->contains("String");
    if (!literal && !pattern->contains("Regex")) {
      return Invalid("Split.pattern must hold \"Regex\" or \"String\"");
    }
    TERN_ASSIGN_OR_RETURN(const std::string text,
                          GetString(*pattern, literal ? "String" : "Regex", "Split.pattern"));
    TERN_ASSIGN_OR_RETURN(auto splitter, RegexSplitter::Create(text, literal));
    steps.push_back(std::move(splitter));
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    TERN_ASSIGN_OR_RETURN(const bool prefix_space,
                          GetBool(node, "add_prefix_space", "ByteLevel", false));
    if (prefix_space) return Unsupported("ByteLevel pre_tokenizer with add_prefix_space: true");
    TERN_ASSIGN_OR_RETURN(const bool use_regex, GetBool(node, "use_regex", "ByteLevel", true));
    if (use_regex) {
      TERN_ASSIGN_OR_RETURN(auto splitter, RegexSplitter::Create(kGpt2SplitPattern, false));
      steps.push_back(std::move(splitter));
    }
    byte_level_seen = true;
    return absl::OkStatus();
  }
  return Unsupported(absl::StrCat("pre_tokenizer type \"", type, "\""));
}

struct Template {
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;
  bool seen = false;
};

absl::Status ParseTemplateProcessing(const Json& node, Template& out) {
  if (out.seen) return Unsupported("more than one TemplateProcessing");
  out.seen = true;
  TERN_ASSIGN_OR_RETURN(const Json* single, GetArray(node, "single", "TemplateProcessing"));
  const Json empty = Json::object();
  const Json* specials = &empty;
  if (!IsNullOrAbsent(node, "special_tokens")) {
    TERN_ASSIGN_OR_RETURN(specials, GetObject(node, "special_tokens", "TemplateProcessing"));
  }
  bool sequence_seen = false;
  for (const Json& item : *single) {
    if (item.is_object() && item.contains("Sequence")) {
      TERN_ASSIGN_OR_RETURN(const std::string id, GetString(item["Sequence"], "id", "Sequence"));
      if (id != "A" || sequence_seen) {
        return Invalid("TemplateProcessing.single must hold sequence A exactly once");
      }
      sequence_seen = true;
    } else if (item.is_object() && item.contains("SpecialToken") &&
               item["SpecialToken"].is_object()) {
      TERN_ASSIGN_OR_RETURN(const std::string name,
                            GetString(item["SpecialToken"], "id", "SpecialToken"));
      const auto it = specials->find(name);
      if (it == specials->end() || !it->is_object()) {
        return Invalid(absl::StrCat("TemplateProcessing uses \"", name,
                                    "\", missing from its special_tokens"));
      }
      TERN_ASSIGN_OR_RETURN(const Json* ids, GetArray(*it, "ids", name));
      for (const Json& id_json : *ids) {
        TERN_ASSIGN_OR_RETURN(const int32_t id, GetId(id_json, absl::StrCat(name, ".ids[]")));
        (sequence_seen ? out.suffix : out.prefix).push_back(id);
      }
    } else {
      return Invalid("TemplateProcessing.single items must be Sequence or SpecialToken");
    }
  }
  if (!sequence_seen) return Invalid("TemplateProcessing.single must hold sequence A");
  return absl::OkStatus();
}

absl::Status ParsePostProcessor(const Json& node, Template& out, int depth = 0) {
  if (!node.is_object()) return Invalid("post_processor must be an object");
  if (depth > kMaxNesting) return Unsupported("post_processor nesting depth");
  TERN_ASSIGN_OR_RETURN(const std::string type, GetString(node, "type", "post_processor"));
  if (type == "Sequence") {
    TERN_ASSIGN_OR_RETURN(const Json* list, GetArray(node, "processors", "post_processor"));
    for (const Json& step : *list) TERN_RETURN_IF_ERROR(ParsePostProcessor(step, out, depth + 1));
    return absl::OkStatus();
  }
  if (type == "ByteLevel") return absl::OkStatus();  // only adjusts offsets
  if (type == "TemplateProcessing") return ParseTemplateProcessing(node, out);
  return Unsupported(absl::StrCat("post_processor type \"", type, "\""));
}

}  // namespace

// Builds a Tokenizer from parsed JSON; a class so it may fill private members.
class TokenizerJsonLoader {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const Json& root) {
    if (!root.is_object()) return Invalid("the document must be a JSON object");
    if (!IsNullOrAbsent(root, "normalizer")) return Unsupported("normalizer (only null)");
    if (!IsNullOrAbsent(root, "truncation")) return Unsupported("truncation (only null)");
    if (!IsNullOrAbsent(root, "padding")) return Unsupported("padding (only null)");
    if (!root.contains("model")) return Invalid("model is missing");

    auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer());
    TERN_ASSIGN_OR_RETURN(BpeConfig config, ParseModel(root["model"]));
    TERN_ASSIGN_OR_RETURN(tokenizer->model_, BpeModel::Create(std::move(config)));

    bool byte_level = false;
    if (!IsNullOrAbsent(root, "pre_tokenizer")) {
      TERN_RETURN_IF_ERROR(
          ParsePreTokenizer(root["pre_tokenizer"], tokenizer->pre_tokenizer_steps_, byte_level));
    }
    if (!byte_level) return Unsupported("tokenizer without a ByteLevel pre_tokenizer");
    if (IsNullOrAbsent(root, "decoder") || !root["decoder"].is_object() ||
        root["decoder"].value("type", "") != "ByteLevel") {
      return Unsupported("decoder (only ByteLevel)");
    }
    Template tmpl;
    if (!IsNullOrAbsent(root, "post_processor")) {
      TERN_RETURN_IF_ERROR(ParsePostProcessor(root["post_processor"], tmpl));
    }
    tokenizer->template_prefix_ = std::move(tmpl.prefix);
    tokenizer->template_suffix_ = std::move(tmpl.suffix);
    if (!tokenizer->template_prefix_.empty()) {
      tokenizer->bos_token_id_ = tokenizer->template_prefix_.front();
    }

    TERN_ASSIGN_OR_RETURN(tokenizer->added_tokens_, ParseAddedTokens(root));
    int32_t limit = tokenizer->model_->id_limit();
    for (size_t i = 0; i < tokenizer->added_tokens_.size(); ++i) {
      const AddedToken& token = tokenizer->added_tokens_[i];
      tokenizer->added_index_.insert_or_assign(token.id, i);
      tokenizer->added_ids_.emplace(token.content, token.id);
      limit = std::max(limit, token.id + 1);
    }
    tokenizer->added_splitter_ = std::make_unique<AddedTokenSplitter>(tokenizer->added_tokens_);
    for (const int32_t id : tokenizer->template_prefix_) limit = std::max(limit, id + 1);
    for (const int32_t id : tokenizer->template_suffix_) limit = std::max(limit, id + 1);
    tokenizer->vocab_size_ = limit;
    return tokenizer;
  }
};

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read tokenizer file ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  auto tokenizer = FromJson(contents.str());
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json) {
  try {
    const Json root = Json::parse(json.begin(), json.end());
    return TokenizerJsonLoader::Load(root);
  } catch (const Json::exception& e) {
    return Invalid(e.what());
  }
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  std::string sanitized;
  if (!IsValidUtf8(text)) {
    sanitized = SanitizeUtf8(text);
    text = sanitized;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + template_prefix_.size() + template_suffix_.size());
  if (add_special_tokens) ids.assign(template_prefix_.begin(), template_prefix_.end());
  std::vector<AddedTokenSplitter::Piece> pieces;
  added_splitter_->Split(text, pieces);
  for (const AddedTokenSplitter::Piece& piece : pieces) {
    if (piece.token_id >= 0) {
      ids.push_back(piece.token_id);
    } else {
      EncodePlain(piece.text, ids);
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), template_suffix_.begin(), template_suffix_.end());
  return ids;
}

void Tokenizer::EncodePlain(std::string_view text, std::vector<int32_t>& ids) const {
  std::vector<std::string_view> pieces{text};
  std::vector<std::string_view> next;
  for (const auto& step : pre_tokenizer_steps_) {
    next.clear();
    for (std::string_view piece : pieces) step->Split(piece, next);
    pieces.swap(next);
  }
  for (std::string_view piece : pieces) model_->EncodeWord(piece, ids);
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (const int32_t id : ids) {
    if (skip_special_tokens && IsSpecial(id)) continue;
    bytes += TokenBytes(id);
  }
  std::string text;
  text.reserve(bytes.size());
  AppendUtf8Lossy(bytes, /*hold_incomplete_tail=*/false, text);
  return text;
}

const std::string& Tokenizer::TokenBytes(int32_t id) const {
  const auto it = added_index_.find(id);
  if (it != added_index_.end()) return added_tokens_[it->second].content;
  return model_->TokenBytes(id);
}

const std::string& Tokenizer::TokenString(int32_t id) const {
  const auto it = added_index_.find(id);
  if (it != added_index_.end()) return added_tokens_[it->second].content;
  return model_->TokenString(id);
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view token) const {
  const auto it = added_ids_.find(absl::string_view(token.data(), token.size()));
  if (it != added_ids_.end()) return it->second;
  return model_->TokenId(token);
}

bool Tokenizer::IsSpecial(int32_t id) const {
  const auto it = added_index_.find(id);
  return it != added_index_.end() && added_tokens_[it->second].special;
}

}  // namespace tern::gateway
