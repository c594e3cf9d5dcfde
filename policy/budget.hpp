#pragma once
// Per-run budgets and circuit breakers (DESIGN §7): how many calls, denials, calls per
// minute, calls per action, and value-aware sums over a window a run may spend. Pure: time
// is an input (a monotonic millisecond count), nothing here reads a clock or does I/O.

#include "policy/model.hpp"

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace runwarden::policy {

/// One call as the tracker sees it: the deciding action and, for value-aware budgets, the
/// parsed JSON body (nullptr when there is none or it is not JSON).
struct BudgetCall {
  std::string_view action;
  const nlohmann::json* body = nullptr;
};

/// Which budget a call would cross, and what the runbook says to do about it.
struct BudgetTrip {
  /// "calls", "denied", "per_minute", "actions.<name>" or "sums[<i>]".
  std::string budget;
  /// One sentence with the numbers, e.g. "calls budget 200 exhausted (this would be call 201)".
  std::string reason;
  OnExceed on_exceed = OnExceed::kill_run;
  double limit = 0;
  double value = 0; // what the count or sum would have become
};

/// Monotonic milliseconds; the caller owns the clock.
using BudgetTime = std::chrono::milliseconds;

/// Usage of one run under one runbook. Not thread-safe: the caller serializes per run.
/// A limit of N lets N through; the call that would make it N+1 trips (for sums: the call
/// that would take the sum above `max`). A refused call is not counted.
class BudgetTracker {
public:
  /// Checks a call the engine lets through (allowed or held) against every budget. Nothing
  /// trips: the call is counted and nullopt returned. Otherwise nothing is counted.
  /// A run already over its denied budget has every further call refused.
  std::optional<BudgetTrip> admit(const Budgets& budgets, const BudgetCall& call, BudgetTime now);

  /// Counts one denied attempt; trips when denials exceed the denied budget (the circuit
  /// breaker for a run that keeps trying what its runbook forbids).
  std::optional<BudgetTrip> record_denial(const Budgets& budgets);

  std::uint64_t calls() const { return calls_; }
  std::uint64_t denials() const { return denials_; }
  /// Calls of `action` counted so far.
  std::uint64_t action_calls(std::string_view action) const;
  /// The current windowed sum of budget `sum` at time `now`.
  double sum(const SumBudget& sum, BudgetTime now) const;

private:
  struct Window {
    std::deque<std::pair<BudgetTime, double>> entries;
  };
  static std::string sum_key(const SumBudget& s);
  static void prune(Window& w, BudgetTime now, std::chrono::milliseconds span);
  static double total(const Window& w, BudgetTime now, std::chrono::milliseconds span);

  std::uint64_t calls_ = 0;
  std::uint64_t denials_ = 0;
  // Made on the first call a per_minute budget counts: an empty deque allocates ~600 bytes,
  // and every run of the run table has a tracker.
  std::optional<Window> minute_;
  std::map<std::string, std::uint64_t, std::less<>> per_action_;
  std::map<std::string, Window, std::less<>> sums_;
};

} // namespace runwarden::policy
