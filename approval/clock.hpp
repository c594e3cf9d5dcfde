#pragma once
// The approval module's only notion of time. Timeouts, retries and deadlines use the
// monotonic clock; timestamps shown to people and signature windows use wall time.
// Tests inject a fake to make every schedule deterministic.

#include <chrono>
#include <cstdint>
#include <string>

namespace runwarden::approval {

using SteadyTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

class Clock {
public:
  virtual ~Clock() = default;
  /// Monotonic now: deadlines and back-off.
  virtual SteadyTime steady() const = 0;
  /// Wall-clock now: packet/journal timestamps, signature `t=`.
  virtual WallTime wall() const = 0;
};

/// The real clocks.
class SystemClock final : public Clock {
public:
  SteadyTime steady() const override { return std::chrono::steady_clock::now(); }
  WallTime wall() const override { return std::chrono::system_clock::now(); }
};

/// A process-wide SystemClock, for callers that do not inject one.
const Clock& system_clock();

/// Seconds since the Unix epoch, the unit of Runwarden-Signature's `t=`.
std::int64_t unix_seconds(WallTime t);

/// RFC 3339 UTC with microseconds ("2026-11-21T10:00:00.123456Z"), as in the audit log.
std::string format_time(WallTime t);

} // namespace runwarden::approval
