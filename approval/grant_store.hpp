#pragma once
// Single-use grants for hold-then-defer: after an operator approves a deferred hold,
// the same run may send the same canonical request (same digest) once within the TTL.
// Thread-safe, bounded.

#include "approval/clock.hpp"

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace runwarden::approval {

struct Grant {
  std::string approval_id;
  std::string by;
  SteadyTime expires{};
};

class GrantStore {
public:
  GrantStore(std::chrono::milliseconds ttl, std::size_t max_grants);

  /// Adds a grant for (run, digest). When full, the grant closest to expiry is dropped
  /// (the agent then asks again: fail closed).
  void add(std::string_view run, std::string_view digest, std::string approval_id, std::string by,
           SteadyTime now);
  /// Consumes the grant for exactly this run and digest, if one is live at `now`. An
  /// empty digest (no digest could be made) is never stored and never matches.
  std::optional<Grant> take(std::string_view run, std::string_view digest, SteadyTime now);
  /// Drops expired grants.
  void purge(SteadyTime now);
  std::size_t size() const;

private:
  static std::string key(std::string_view run, std::string_view digest);
  std::chrono::milliseconds ttl_;
  std::size_t max_;
  mutable std::mutex mutex_;
  std::unordered_multimap<std::string, Grant> grants_;
  std::multimap<SteadyTime, std::string> expiry_; // expiry -> key (for purge and eviction)
};

} // namespace runwarden::approval
