#pragma once
// The approvals journal: an append-only JSON Lines file of hold transitions, fsync'ed
// per line, so that after a restart every hold that was pending is recorded as expired
// and nothing is released by accident (DESIGN §5).

#include "approval/clock.hpp"
#include "approval/hold_registry.hpp"

#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace runwarden::approval {

/// A hold that was pending when the previous process stopped.
struct RecoveredHold {
  std::string id;
  std::string run;
  std::string agent;
  std::string runbook;
  std::string action;
  std::string request_id;
  std::string created; // RFC 3339, as journaled
};

class Journal {
public:
  /// Opens `path` (created if absent), replays it, appends an `expired` line for every
  /// hold still pending (fsync'ed), then starts a fresh file (the replayed one is kept
  /// as `path.prev`). Lines that do not parse (a torn last line) are skipped and counted.
  /// Throws std::runtime_error at start-up when the file cannot be read or written.
  static std::unique_ptr<Journal> open(const std::string& path, const Clock& clock,
                                       std::vector<RecoveredHold>& expired);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  /// Appends one transition and fsyncs. On error the journal stays unhealthy and
  /// returns the error; the caller must stop creating holds.
  std::error_code append(const HoldEvent& event);

  /// A listener for HoldRegistry::set_listener that appends every event.
  EventListener listener();

  bool healthy() const;
  std::uint64_t skipped_lines() const { return skipped_; }

private:
  Journal(int fd, const Clock& clock, std::uint64_t skipped);
  std::error_code write_line(const std::string& line);

  int fd_;
  const Clock& clock_;
  std::uint64_t skipped_;
  mutable std::mutex mutex_;
  std::error_code failure_;
};

} // namespace runwarden::approval
