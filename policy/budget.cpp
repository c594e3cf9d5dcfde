#include "policy/budget.hpp"

#include <cmath>
#include <sstream>
#include <vector>

namespace runwarden::policy {
namespace {

constexpr std::chrono::milliseconds kMinute{60'000};

std::string number(double v) {
  std::ostringstream out;
  out.precision(15);
  out << v;
  return out.str();
}

BudgetTrip trip(std::string budget, std::string reason, OnExceed on_exceed, double limit,
                double value) {
  BudgetTrip t;
  t.budget = std::move(budget);
  t.reason = std::move(reason);
  t.on_exceed = on_exceed;
  t.limit = limit;
  t.value = value;
  return t;
}

} // namespace

std::string_view to_string(OnExceed e) {
  return e == OnExceed::refuse ? "refuse" : "kill_run";
}

std::string BudgetTracker::sum_key(const SumBudget& s) {
  return s.action + ' ' + s.pointer.text();
}

void BudgetTracker::prune(Window& w, BudgetTime now, std::chrono::milliseconds span) {
  while (!w.entries.empty() && now - w.entries.front().first >= span) {
    w.entries.pop_front();
  }
}

double BudgetTracker::total(const Window& w, BudgetTime now, std::chrono::milliseconds span) {
  double t = 0;
  for (const auto& [at, value] : w.entries) {
    if (now - at < span) {
      t += value;
    }
  }
  return t;
}

std::uint64_t BudgetTracker::action_calls(std::string_view action) const {
  auto it = per_action_.find(action);
  return it == per_action_.end() ? 0 : it->second;
}

double BudgetTracker::sum(const SumBudget& s, BudgetTime now) const {
  auto it = sums_.find(sum_key(s));
  return it == sums_.end() ? 0 : total(it->second, now, s.window);
}

std::optional<BudgetTrip> BudgetTracker::admit(const Budgets& b, const BudgetCall& call,
                                               BudgetTime now) {
  if (b.denied && denials_ > *b.denied) {
    return trip("denied",
                "denied budget " + std::to_string(*b.denied) + " exceeded (" +
                    std::to_string(denials_) + " denied attempts): the run is off its runbook",
                b.on_exceed, static_cast<double>(*b.denied), static_cast<double>(denials_));
  }
  if (b.calls && calls_ + 1 > *b.calls) {
    return trip("calls",
                "calls budget " + std::to_string(*b.calls) + " exhausted (this would be call " +
                    std::to_string(calls_ + 1) + ")",
                b.on_exceed, static_cast<double>(*b.calls), static_cast<double>(calls_ + 1));
  }
  if (b.per_minute) {
    if (!minute_) {
      minute_.emplace();
    }
    prune(*minute_, now, kMinute);
    const auto in_window = static_cast<std::uint64_t>(minute_->entries.size());
    if (in_window + 1 > *b.per_minute) {
      return trip(
          "per_minute",
          "per_minute budget " + std::to_string(*b.per_minute) + " exhausted (this would be call " +
              std::to_string(in_window + 1) + " in the last 60s)",
          b.on_exceed, static_cast<double>(*b.per_minute), static_cast<double>(in_window + 1));
    }
  }
  std::uint64_t action_count = 0;
  if (!call.action.empty()) {
    action_count = action_calls(call.action);
    if (auto it = b.actions.find(call.action); it != b.actions.end()) {
      if (action_count + 1 > it->second) {
        return trip("actions." + it->first,
                    "budget for action \"" + it->first + "\" " + std::to_string(it->second) +
                        " exhausted (this would be call " + std::to_string(action_count + 1) + ")",
                    b.on_exceed, static_cast<double>(it->second),
                    static_cast<double>(action_count + 1));
      }
    }
  }
  // Value-aware sums: every applicable one must fit before anything is counted.
  std::vector<std::pair<std::size_t, double>> adds;
  for (std::size_t i = 0; i < b.sums.size(); ++i) {
    const auto& s = b.sums[i];
    if (call.action.empty() || s.action != call.action) {
      continue;
    }
    const std::string name = "sums[" + std::to_string(i) + "]";
    const nlohmann::json* v = call.body == nullptr ? nullptr : s.pointer.resolve(*call.body);
    if (v == nullptr || !v->is_number() || !std::isfinite(v->get<double>()) ||
        v->get<double>() < 0) {
      // Fail closed: a call the sum cannot account for is refused (never kills the run).
      return trip(name,
                  "budget " + name + " sums " + s.pointer.text() + " of \"" + s.action +
                      "\", but the body has no non-negative number there",
                  OnExceed::refuse, s.max, 0);
    }
    const double value = v->get<double>();
    const double current = sum(s, now);
    if (current + value > s.max) {
      return trip(name,
                  "budget " + name + ": sum of " + s.pointer.text() + " over \"" + s.action +
                      "\" would reach " + number(current + value) + ", above " + number(s.max),
                  b.on_exceed, s.max, current + value);
    }
    adds.emplace_back(i, value);
  }
  ++calls_;
  if (b.per_minute) {
    minute_->entries.emplace_back(now, 1.0); // made above, where per_minute was checked
  }
  if (!call.action.empty()) {
    per_action_[std::string(call.action)] = action_count + 1;
  }
  for (const auto& [i, value] : adds) {
    auto& w = sums_[sum_key(b.sums[i])];
    prune(w, now, b.sums[i].window);
    w.entries.emplace_back(now, value);
  }
  return std::nullopt;
}

std::optional<BudgetTrip> BudgetTracker::record_denial(const Budgets& b) {
  ++denials_;
  if (b.denied && denials_ > *b.denied) {
    return trip("denied",
                "denied budget " + std::to_string(*b.denied) + " exceeded (" +
                    std::to_string(denials_) + " denied attempts): the run is off its runbook",
                b.on_exceed, static_cast<double>(*b.denied), static_cast<double>(denials_));
  }
  return std::nullopt;
}

} // namespace runwarden::policy
