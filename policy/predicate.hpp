#pragma once
// Evaluation of one Predicate on a JSON value or on a string (query, header).

#include "policy/model.hpp"

#include <string>

namespace runwarden::policy {

/// value == nullptr means "absent"; only `exists: false` holds then.
/// Comparisons (lt..gte) hold only for JSON numbers: the string "5000" is not <= 5000.
bool predicate_holds(const Predicate& p, const nlohmann::json* value);

/// For query parameters and headers. Numeric comparisons parse the whole string as a
/// JSON number and fail when it is not one.
bool predicate_holds(const Predicate& p, const std::string* value);

/// "lte 5000", "glob refund-*", "in [\"a\",\"b\"]": for reasons and explanations.
std::string describe(const Predicate& p);

/// A short, safe rendering of a JSON value for explanations (never throws).
std::string short_dump(const nlohmann::json& v);

} // namespace runwarden::policy
