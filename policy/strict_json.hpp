#pragma once
// Strict JSON for body predicates: a body the engine cannot read in exactly one
// way is refused, never guessed at. Duplicate keys (compared after \u unescaping),
// invalid UTF-8, lone surrogates, nesting beyond the limit and numbers beyond
// double range each have their own error.
//
// The parser is our own rather than nlohmann's SAX: nlohmann's lexer alone costs
// about 20 us per 4 KiB, five times the decision budget. This one validates the
// whole document in one pass but materializes (as nlohmann::json) only the
// subtrees a JsonWant names, so a 4 KiB body tested on two pointers builds two values.

#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace runwarden::policy {

enum class JsonError : std::uint8_t {
  ok,
  not_json,
  duplicate_key,
  invalid_utf8,
  too_deep,
  number_out_of_range,
};

/// The Decision.code for each error ("body_not_json", "body_duplicate_key", ...).
std::string_view to_code(JsonError e);

/// Which parts of a document to materialize: a trie of pointer tokens (array
/// elements by their decimal index). `whole` keeps the entire subtree.
struct JsonWant {
  bool whole = false;
  std::map<std::string, JsonWant, std::less<>> children;

  /// Adds every prefix of this token path; an empty path means the whole document.
  void add(const std::vector<std::string>& tokens);
};

struct StrictJsonResult {
  JsonError error = JsonError::ok;
  std::string detail; // e.g. the duplicate key, or where parsing stopped
  nlohmann::json value;
};

/// Parses text as exactly one JSON value and materializes all of it. Never throws.
StrictJsonResult parse_strict_json(std::string_view text, std::size_t max_depth);

/// Validates all of text but materializes only what `want` names; containers on the
/// way are kept (with only wanted members), everything else is checked and dropped.
StrictJsonResult parse_strict_json(std::string_view text, std::size_t max_depth,
                                   const JsonWant& want);

} // namespace runwarden::policy
