// String forms of the small policy enums (model.hpp, engine.hpp).

#include "policy/engine.hpp"
#include "policy/model.hpp"

namespace runwarden::policy {

std::string_view to_string(ActionClass c) {
  switch (c) {
  case ActionClass::read_only:
    return "read_only";
  case ActionClass::allowed:
    return "allowed";
  case ActionClass::approval_required:
    return "approval_required";
  case ActionClass::denied:
    return "denied";
  }
  return "denied";
}

std::optional<ActionClass> parse_action_class(std::string_view s) {
  if (s == "read_only") {
    return ActionClass::read_only;
  }
  if (s == "allowed") {
    return ActionClass::allowed;
  }
  if (s == "approval_required") {
    return ActionClass::approval_required;
  }
  if (s == "denied") {
    return ActionClass::denied;
  }
  return std::nullopt;
}

std::string_view to_string(PredicateOp op) {
  switch (op) {
  case PredicateOp::eq:
    return "eq";
  case PredicateOp::in:
    return "in";
  case PredicateOp::glob:
    return "glob";
  case PredicateOp::regex:
    return "regex";
  case PredicateOp::lt:
    return "lt";
  case PredicateOp::lte:
    return "lte";
  case PredicateOp::gt:
    return "gt";
  case PredicateOp::gte:
    return "gte";
  case PredicateOp::exists:
    return "exists";
  }
  return "eq";
}

std::string_view to_string(Mode m) {
  switch (m) {
  case Mode::normal:
    return "normal";
  case Mode::read_only:
    return "read_only";
  case Mode::paused:
    return "paused";
  }
  return "paused";
}

std::optional<Mode> parse_mode(std::string_view s) {
  if (s == "normal") {
    return Mode::normal;
  }
  if (s == "read_only") {
    return Mode::read_only;
  }
  if (s == "paused") {
    return Mode::paused;
  }
  return std::nullopt;
}

std::string_view to_string(Verdict v) {
  switch (v) {
  case Verdict::allow:
    return "allow";
  case Verdict::deny:
    return "deny";
  case Verdict::hold:
    return "hold";
  case Verdict::paused:
    return "paused";
  }
  return "deny";
}

} // namespace runwarden::policy
