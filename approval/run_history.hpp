#pragma once
// The run's earlier calls in this session, shown in every approval packet so the
// approver sees what led up to the held request. Bounded per run and in runs.
// Thread-safe.

#include "approval/clock.hpp"

#include <cstddef>
#include <deque>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace runwarden::approval {

struct CallRecord {
  std::string request_id;
  std::string action;  // "" when nothing matched
  std::string outcome; // the audit outcome: forwarded, denied, held, approved_forwarded, ...
  std::string method;
  std::string url;
  WallTime time;
};

class RunHistory {
public:
  /// Keeps the last `per_run` calls of each of at most `max_runs` runs (the least
  /// recently active run is forgotten first).
  explicit RunHistory(std::size_t per_run = 50, std::size_t max_runs = 10000);

  /// The proxy records every judged call, whatever its outcome.
  void record(std::string_view run, CallRecord call);
  /// Oldest first.
  std::vector<CallRecord> calls(std::string_view run) const;
  /// Forget a run (e.g. once it ends); nothing else refers to it.
  void forget(std::string_view run);
  std::size_t runs() const;

private:
  struct Entry {
    std::deque<CallRecord> calls;
    std::list<std::string>::iterator lru;
  };
  std::size_t per_run_;
  std::size_t max_runs_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Entry> runs_;
  std::list<std::string> lru_; // front: most recently active
};

} // namespace runwarden::approval
