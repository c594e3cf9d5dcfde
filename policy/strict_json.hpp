#pragma once
// Strict JSON for body predicates: a body the engine cannot read in exactly one
// way is refused, never guessed at. Duplicate keys (compared after \u unescaping),
// invalid UTF-8, lone surrogates, nesting beyond the limit and numbers beyond
// double range each have their own error.

#include <cstddef>
#include <cstdint>
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

struct StrictJsonResult {
  JsonError error = JsonError::ok;
  std::string detail; // e.g. the duplicate key, or the parser's message
  nlohmann::json value;
};

/// Parses text as exactly one JSON value. Never throws.
StrictJsonResult parse_strict_json(std::string_view text, std::size_t max_depth);

} // namespace runwarden::policy
