#include "approval/hold_state.hpp"

#include <array>

namespace runwarden::approval {

namespace {
constexpr std::array<std::string_view, 7> state_names = {
    "pending", "approved", "denied", "expired", "killed", "paused", "abandoned"};
}

std::string_view to_string(HoldState s) {
  return state_names[static_cast<std::size_t>(s)];
}

std::optional<HoldState> parse_hold_state(std::string_view s) {
  for (std::size_t i = 0; i < state_names.size(); ++i) {
    if (state_names[i] == s) {
      return static_cast<HoldState>(i);
    }
  }
  return std::nullopt;
}

std::string_view agent_code(HoldState s, bool deferred) {
  switch (s) {
  case HoldState::pending:
    return deferred ? "approval_pending" : "approval_required";
  case HoldState::approved:
    return "approved";
  case HoldState::expired:
    return "approval_timeout";
  case HoldState::abandoned:
    return "client_gone";
  case HoldState::denied:
  case HoldState::killed:
  case HoldState::paused:
    return "approval_denied";
  }
  return "approval_denied";
}

std::string_view to_string(Choice c) {
  return c == Choice::approve ? "approve" : "deny";
}

} // namespace runwarden::approval
