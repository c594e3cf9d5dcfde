#pragma once
// The states of a hold and how each one ends for the waiting agent.

#include <cstdint>
#include <optional>
#include <string_view>

namespace runwarden::approval {

/// pending -> approved | denied | expired | killed | paused | abandoned; every other
/// transition is refused. A deferred hold is still pending (its client was answered
/// approval_pending and may come back for a grant).
enum class HoldState : std::uint8_t {
  pending,
  approved,
  denied,    // an operator said no
  expired,   // hold timeout (on_timeout: deny) or pending across a restart
  killed,    // its run was killed
  paused,    // the proxy entered paused mode
  abandoned, // the client went away; nothing is ever released
};
std::string_view to_string(HoldState s);
std::optional<HoldState> parse_hold_state(std::string_view s);

/// The code the agent sees (DESIGN §4): approved, approval_denied, approval_timeout,
/// approval_pending (pending and deferred), client_gone.
std::string_view agent_code(HoldState s, bool deferred);

/// What an operator asks for.
enum class Choice : std::uint8_t { approve, deny };
std::string_view to_string(Choice c);

} // namespace runwarden::approval
