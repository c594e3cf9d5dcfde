#pragma once
// What operations change while runwarden runs (DESIGN §7): the mode (normal, read_only,
// paused) with since/by/via, the kill-switch file's presence, the policy snapshot a reload
// swaps, and the run table (calls, denials, holds, writes, killed runs, budget usage).
// Thread-safe; the hot path reads atomics and takes one short lock per judged call.

#include "config/config.hpp"
#include "policy/budget.hpp"
#include "policy/engine.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace runwarden::proxy {

/// The operator-set mode and who set it.
struct ModeState {
  policy::Mode mode = policy::Mode::normal;
  std::string since; // RFC 3339 UTC
  std::string by;    // operator name, "signal", "kill_switch_file", "startup"
  std::string via;   // "admin_api", "signal", "kill_switch_file", "startup"
};

/// One run as operators see it in GET /v1/runs.
struct RunStats {
  std::string runbook;
  std::uint64_t calls = 0;   // judged requests
  std::uint64_t denials = 0; // refused by the runbook, a budget or a kill
  std::uint64_t holds = 0;   // sent for approval
  std::uint64_t writes = 0;  // forwarded calls with side effects (class above read_only)
  bool killed = false;
  std::string killed_at;
  std::string killed_by;
  std::string killed_reason;
  // Kept as times and formatted when listed: a call is counted under the state's lock on
  // every request, and formatting a time there cost more than the rest of the count.
  std::chrono::system_clock::time_point first_seen;
  std::chrono::system_clock::time_point last_seen;
  policy::BudgetTracker budget; // usage under its runbook's budgets
};

/// How a judged call ended, for the run table.
enum class CallKind : std::uint8_t { allowed_read, allowed_write, held, denied };

class RuntimeState {
public:
  explicit RuntimeState(std::shared_ptr<const config::Config> config);

  /// The policy snapshot for the next request; requests in flight keep theirs.
  std::shared_ptr<const config::Config> config() const { return config_.load(); }
  /// The same snapshot from this thread's copy, refreshed only after a swap: the data path
  /// calls this per request, and reads one word a reload writes instead of taking the
  /// atomic shared_ptr's lock and bouncing its reference count between I/O threads. The
  /// reference stays valid until this thread calls it again (copy it to keep it longer).
  const std::shared_ptr<const config::Config>& config_here() const;
  void swap_config(std::shared_ptr<const config::Config> config);

  /// The mode requests are judged under: paused while the kill-switch file exists,
  /// else the operator mode.
  policy::Mode effective_mode() const { return effective_.load(); }
  ModeState mode_state() const;
  bool kill_switch_present() const { return kill_switch_.load(); }
  /// Sets the operator mode. Returns the previous state when the mode changed.
  std::optional<ModeState> set_mode(policy::Mode mode, std::string by, std::string via);
  /// Records the kill-switch file's presence; true when that changed.
  bool set_kill_switch(bool present);

  /// Counts one judged call of `run` (created on first sight).
  void note_call(const std::string& run, const std::string& runbook, CallKind kind);
  /// True when `run` was killed (new calls are refused).
  bool run_killed(const std::string& run) const;
  /// True when `run` is in the run table (seen, or killed, and not evicted).
  bool run_known(const std::string& run) const;
  /// Marks `run` killed; false when it already was.
  bool kill_run(const std::string& run, const std::string& by, const std::string& reason);
  /// Checks a call the engine lets through against the run's budgets (counting it if none
  /// trips), or counts a denial against the denied budget.
  std::optional<policy::BudgetTrip> admit(const std::string& run, const policy::Budgets& budgets,
                                          const policy::BudgetCall& call);
  std::optional<policy::BudgetTrip> record_denial(const std::string& run,
                                                  const policy::Budgets& budgets);
  /// {"runs":[{run, runbook, calls, denials, holds, writes, killed, ...}]}, newest first.
  nlohmann::json runs_json() const;
  std::size_t run_count() const;

  /// RFC 3339 UTC now with microseconds.
  static std::string now_rfc3339();

private:
  /// A run's row and its place in the eviction order (`recency`: live runs only, most
  /// recently seen first; a killed run leaves it, as it is never evicted).
  struct RunSlot {
    RunStats stats;
    std::list<const std::string*>::iterator recent;
    bool listed = false;
  };
  // `now` is its first_seen when the run is new; past kMaxRuns runs, the least recently
  // seen live one is dropped to make room (in constant time, not a scan of the table).
  RunSlot& run_locked(const std::string& run,
                      std::chrono::system_clock::time_point now = std::chrono::system_clock::now());
  void recompute_effective_locked();

  std::atomic<std::shared_ptr<const config::Config>> config_;
  std::atomic<std::uint64_t> config_swaps_{0}; // bumped after each swap_config
  const std::uint64_t instance_;               // tells this state's thread copies from others'

  std::atomic<policy::Mode> effective_{policy::Mode::normal};
  std::atomic<bool> kill_switch_{false};
  std::atomic<std::uint64_t> killed_runs_{0}; // runs ever killed: none, no lock to ask
  mutable std::mutex mutex_;
  ModeState mode_;
  std::string kill_switch_since_;
  std::map<std::string, RunSlot, std::less<>> runs_;
  std::list<const std::string*> recency_; // keys of runs_ (stable in a map node)
};

} // namespace runwarden::proxy
