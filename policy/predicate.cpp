// Predicate evaluation. JSON values compare with JSON semantics (1 == 1.0,
// "1" != 1); numeric comparisons are exact between integers and via double otherwise.

#include "policy/predicate.hpp"

#include "policy/strict_json.hpp"

#include <re2/re2.h>
#include <utility>

namespace runwarden::policy {
namespace {

using json = nlohmann::json;

// -1, 0, 1; both arguments are numbers.
int compare_numbers(const json& a, const json& b) {
  if (a.is_number_integer() && b.is_number_integer()) {
    bool au = a.is_number_unsigned();
    bool bu = b.is_number_unsigned();
    auto cmp = [](auto x, auto y) {
      return std::cmp_less(x, y) ? -1 : (std::cmp_equal(x, y) ? 0 : 1);
    };
    if (au && bu) {
      return cmp(a.get<std::uint64_t>(), b.get<std::uint64_t>());
    }
    if (au) {
      return cmp(a.get<std::uint64_t>(), b.get<std::int64_t>());
    }
    if (bu) {
      return cmp(a.get<std::int64_t>(), b.get<std::uint64_t>());
    }
    return cmp(a.get<std::int64_t>(), b.get<std::int64_t>());
  }
  double x = a.get<double>();
  double y = b.get<double>();
  return x < y ? -1 : (x > y ? 1 : 0);
}

bool compare_holds(PredicateOp op, int c) {
  switch (op) {
  case PredicateOp::lt:
    return c < 0;
  case PredicateOp::lte:
    return c <= 0;
  case PredicateOp::gt:
    return c > 0;
  case PredicateOp::gte:
    return c >= 0;
  default:
    return false;
  }
}

bool exists_wanted(const Predicate& p) {
  return p.operand.is_boolean() ? p.operand.get<bool>() : true;
}

// A query or header string equals a configured operand: strings compare exactly,
// numbers and booleans by their JSON spelling ("10" equals 10).
bool string_equals(const std::string& s, const json& operand) {
  if (operand.is_string()) {
    return operand.get_ref<const std::string&>() == s;
  }
  if (operand.is_number() || operand.is_boolean()) {
    return operand.dump() == s;
  }
  return false;
}

} // namespace

bool predicate_holds(const Predicate& p, const json* value) {
  if (p.op == PredicateOp::exists) {
    return (value != nullptr) == exists_wanted(p);
  }
  if (value == nullptr) {
    return false;
  }
  switch (p.op) {
  case PredicateOp::eq:
    return *value == p.operand;
  case PredicateOp::in:
    if (!p.operand.is_array()) {
      return false;
    }
    for (const json& option : p.operand) {
      if (*value == option) {
        return true;
      }
    }
    return false;
  case PredicateOp::glob:
    return value->is_string() && p.glob && p.glob->matches(value->get_ref<const std::string&>());
  case PredicateOp::regex:
    return value->is_string() && p.regex &&
           re2::RE2::FullMatch(value->get_ref<const std::string&>(), *p.regex);
  case PredicateOp::lt:
  case PredicateOp::lte:
  case PredicateOp::gt:
  case PredicateOp::gte:
    if (!value->is_number() || !p.operand.is_number()) {
      return false;
    }
    return compare_holds(p.op, compare_numbers(*value, p.operand));
  case PredicateOp::exists:
    break;
  }
  return false;
}

bool predicate_holds(const Predicate& p, const std::string* value) {
  if (p.op == PredicateOp::exists) {
    return (value != nullptr) == exists_wanted(p);
  }
  if (value == nullptr) {
    return false;
  }
  switch (p.op) {
  case PredicateOp::eq:
    return string_equals(*value, p.operand);
  case PredicateOp::in:
    if (!p.operand.is_array()) {
      return false;
    }
    for (const json& option : p.operand) {
      if (string_equals(*value, option)) {
        return true;
      }
    }
    return false;
  case PredicateOp::glob:
    return p.glob && p.glob->matches(*value);
  case PredicateOp::regex:
    return p.regex && re2::RE2::FullMatch(*value, *p.regex);
  case PredicateOp::lt:
  case PredicateOp::lte:
  case PredicateOp::gt:
  case PredicateOp::gte: {
    if (value->empty() || value->size() > 64 || !p.operand.is_number()) {
      return false;
    }
    StrictJsonResult r = parse_strict_json(*value, 1);
    if (r.error != JsonError::ok || !r.value.is_number()) {
      return false;
    }
    return compare_holds(p.op, compare_numbers(r.value, p.operand));
  }
  case PredicateOp::exists:
    break;
  }
  return false;
}

std::string short_dump(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 80) {
    s.resize(77);
    s.append("...");
  }
  return s;
}

std::string describe(const Predicate& p) {
  std::string s(to_string(p.op));
  s.push_back(' ');
  if (p.op == PredicateOp::glob && p.glob) {
    s.append(p.glob->pattern());
  } else if (p.op == PredicateOp::regex && p.regex) {
    s.append(p.regex->pattern());
  } else {
    s.append(short_dump(p.operand));
  }
  return s;
}

} // namespace runwarden::policy
