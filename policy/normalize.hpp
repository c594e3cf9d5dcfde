#pragma once
// Internal pieces of request normalization shared with glob compilation.

#include "policy/request.hpp"

#include <string>
#include <string_view>

namespace runwarden::policy {

/// Canonical form of a path alone (must start with '/', no '?' or '#').
/// Glob patterns go through the same function so a pattern and a request
/// are compared in one spelling.
NormalizeError normalize_path(std::string_view raw, std::string& out);

/// Validates a raw query (escapes well formed, no NUL, no control or non-ASCII bytes).
NormalizeError check_query(std::string_view raw);

/// Decodes "%XX" escapes (and '+' as space when form is true). Returns false on a
/// malformed escape. Used for query parameter names and values.
bool percent_decode(std::string_view in, bool form, std::string& out);

} // namespace runwarden::policy
