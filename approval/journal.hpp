#pragma once
// The approvals journal: an append-only JSON Lines file of hold transitions, so that after
// a restart every hold that was pending is recorded as expired and nothing is released by
// accident (DESIGN §5). Lines are written and fsync'ed by the journal's own thread (group
// commit): the registry's event listener runs on proxy I/O threads and an fsync there
// stalled every other connection on that thread (issue 5, approve-to-upstream tail).

#include "approval/clock.hpp"
#include "approval/hold_registry.hpp"

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
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

  /// Queues one transition for the writer thread, which writes and fsyncs every queued
  /// line together, at once (no timer: a lone line is synced as soon as it is queued).
  /// Never blocks on the disk. Once a write or fsync failed the journal stays unhealthy
  /// and every later append returns that error; the caller must stop creating holds.
  /// Safety does not depend on the sync: a hold lives in memory only, so a crash before
  /// its line is synced loses the expiry record, never releases anything.
  std::error_code append(const HoldEvent& event);

  /// Waits until every line queued before the call is written and fsync'ed; returns the
  /// failure, if any. For tests and shutdown; the proxy never waits on it.
  std::error_code flush();

  /// A listener for HoldRegistry::set_listener that appends every event.
  EventListener listener();

  bool healthy() const;
  std::uint64_t skipped_lines() const { return skipped_; }

private:
  Journal(int fd, const Clock& clock, std::uint64_t skipped);
  void run(); // the writer thread

  int fd_;
  const Clock& clock_;
  std::uint64_t skipped_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;    // lines queued, or stopping
  std::condition_variable written_; // a batch was written and synced
  std::string queued_;              // lines not yet handed to the writer
  std::uint64_t queued_count_ = 0;  // lines ever queued
  std::uint64_t synced_count_ = 0;  // lines ever written and synced (or failed)
  bool stopping_ = false;
  std::error_code failure_;
  std::thread writer_; // last: started once everything above exists
};

} // namespace runwarden::approval
