#pragma once
// The run's earlier calls in this session, shown in every approval packet so the
// approver sees what led up to the held request. Bounded per run and in runs.
// Thread-safe.

#include "approval/clock.hpp"

#include <cstddef>
#include <functional>
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

/// A call as the proxy sees it: views of the exchange's own strings. record() copies them
/// into storage the run's history already holds once it is full, so recording a call on a
/// busy run allocates nothing (the proxy records every judged call).
struct CallView {
  std::string_view request_id;
  std::string_view action;
  std::string_view outcome;
  std::string_view method;
  std::string_view url;
  WallTime time;
};

class RunHistory {
public:
  /// Keeps the last `per_run` calls of each of at most `max_runs` runs (the least
  /// recently active run is forgotten first).
  explicit RunHistory(std::size_t per_run = 50, std::size_t max_runs = 10000);

  /// The proxy records every judged call, whatever its outcome.
  void record(std::string_view run, CallRecord call);
  void record(std::string_view run, const CallView& call);
  /// Oldest first.
  std::vector<CallRecord> calls(std::string_view run) const;
  /// Forget a run (e.g. once it ends); nothing else refers to it.
  void forget(std::string_view run);
  std::size_t runs() const;

private:
  /// Lookups by string_view without building a std::string key per call.
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  /// A run's last calls, a ring once full: calls[oldest] is the oldest, and a new call
  /// overwrites it in place (a deque allocated a block every few calls).
  struct Entry {
    std::vector<CallRecord> calls;
    std::size_t oldest = 0;
    std::list<std::string>::iterator lru;
  };
  std::size_t per_run_;
  std::size_t max_runs_;
  mutable std::mutex mutex_;
  /// The run's entry, made most recently active (created, evicting the least recent run,
  /// when new). Called with mutex_ held.
  Entry& touch(std::string_view run);
  /// The slot the next call goes into: a new one until the run holds per_run_ calls, then
  /// the oldest.
  CallRecord& next_slot(Entry& entry);

  std::unordered_map<std::string, Entry, Hash, std::equal_to<>> runs_;
  std::list<std::string> lru_; // front: most recently active
};

} // namespace runwarden::approval
