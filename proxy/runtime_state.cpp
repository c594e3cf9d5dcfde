#include "proxy/runtime_state.hpp"

#include "approval/clock.hpp"

#include <algorithm>
#include <vector>

namespace runwarden::proxy {
namespace {

constexpr std::size_t kMaxRuns = 10000; // beyond it the least recently seen live run is dropped

policy::BudgetTime monotonic_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now().time_since_epoch());
}

} // namespace

std::string RuntimeState::now_rfc3339() {
  return approval::format_time(std::chrono::system_clock::now());
}

namespace {

std::atomic<std::uint64_t> g_instances{0};

/// One thread's copy of a RuntimeState's config (config_here): which state (its instance
/// number: an address could be reused by a later state) at which swap.
struct ThreadConfig {
  std::uint64_t instance = 0; // 0: none yet (instances count from 1)
  std::uint64_t swaps = 0;
  std::shared_ptr<const config::Config> config;
};
thread_local ThreadConfig t_config;

} // namespace

RuntimeState::RuntimeState(std::shared_ptr<const config::Config> config)
    : config_(std::move(config)), instance_(g_instances.fetch_add(1) + 1) {
  mode_.since = now_rfc3339();
  mode_.by = "startup";
  mode_.via = "startup";
}

void RuntimeState::swap_config(std::shared_ptr<const config::Config> config) {
  config_.store(std::move(config));
  config_swaps_.fetch_add(1, std::memory_order_release);
}

const std::shared_ptr<const config::Config>& RuntimeState::config_here() const {
  // The count is read before the pointer: a swap between the two leaves the copy one count
  // behind, so the next call loads again; a copy is never newer than its count says.
  const std::uint64_t swaps = config_swaps_.load(std::memory_order_acquire);
  if (t_config.instance != instance_ || t_config.swaps != swaps) {
    t_config.config = config_.load();
    t_config.instance = instance_;
    t_config.swaps = swaps;
  }
  return t_config.config;
}

ModeState RuntimeState::mode_state() const {
  std::lock_guard lock(mutex_);
  if (kill_switch_.load()) {
    return ModeState{policy::Mode::paused, kill_switch_since_, "kill_switch_file",
                     "kill_switch_file"};
  }
  return mode_;
}

void RuntimeState::recompute_effective_locked() {
  effective_.store(kill_switch_.load() ? policy::Mode::paused : mode_.mode);
}

std::optional<ModeState> RuntimeState::set_mode(policy::Mode mode, std::string by,
                                                std::string via) {
  std::lock_guard lock(mutex_);
  if (mode_.mode == mode) {
    return std::nullopt;
  }
  ModeState previous = mode_;
  mode_ = ModeState{mode, now_rfc3339(), std::move(by), std::move(via)};
  recompute_effective_locked();
  return previous;
}

bool RuntimeState::set_kill_switch(bool present) {
  std::lock_guard lock(mutex_);
  if (kill_switch_.load() == present) {
    return false;
  }
  kill_switch_.store(present);
  kill_switch_since_ = now_rfc3339();
  recompute_effective_locked();
  return true;
}

RuntimeState::RunSlot& RuntimeState::run_locked(const std::string& run,
                                                std::chrono::system_clock::time_point now) {
  auto it = runs_.find(run);
  if (it != runs_.end()) {
    return it->second;
  }
  if (runs_.size() >= kMaxRuns && !recency_.empty()) {
    // Found first, then erased by iterator: the key named by the list lives in the node.
    const auto victim = runs_.find(*recency_.back());
    recency_.pop_back();
    runs_.erase(victim);
  }
  it = runs_.try_emplace(run).first;
  auto& slot = it->second;
  slot.stats.first_seen = now;
  slot.stats.last_seen = now;
  recency_.push_front(&it->first);
  slot.recent = recency_.begin();
  slot.listed = true;
  return slot;
}

void RuntimeState::note_call(const std::string& run, const std::string& runbook, CallKind kind) {
  std::lock_guard lock(mutex_);
  // Read under the lock: a run's times then never step back, whichever thread counts it.
  const auto now = std::chrono::system_clock::now();
  auto& slot = run_locked(run, now);
  if (slot.listed && slot.recent != recency_.begin()) {
    recency_.splice(recency_.begin(), recency_, slot.recent); // seen now: evicted last
  }
  auto& s = slot.stats;
  if (!runbook.empty() && s.runbook != runbook) {
    s.runbook = runbook;
  }
  s.last_seen = now;
  ++s.calls;
  switch (kind) {
  case CallKind::allowed_read:
    break;
  case CallKind::allowed_write:
    ++s.writes;
    break;
  case CallKind::held:
    ++s.holds;
    break;
  case CallKind::denied:
    ++s.denials;
    break;
  }
}

bool RuntimeState::run_killed(const std::string& run) const {
  // Kills are rare and a killed run is never evicted: until the first, every run's answer
  // is no, without the lock both I/O threads take for every request.
  if (killed_runs_.load(std::memory_order_acquire) == 0) {
    return false;
  }
  std::lock_guard lock(mutex_);
  auto it = runs_.find(run);
  return it != runs_.end() && it->second.stats.killed;
}

bool RuntimeState::run_known(const std::string& run) const {
  std::lock_guard lock(mutex_);
  return runs_.find(run) != runs_.end();
}

bool RuntimeState::kill_run(const std::string& run, const std::string& by,
                            const std::string& reason) {
  std::lock_guard lock(mutex_);
  auto& slot = run_locked(run);
  auto& s = slot.stats;
  if (s.killed) {
    return false;
  }
  s.killed = true;
  if (slot.listed) { // a killed run stays in the table, killed, until the process ends
    recency_.erase(slot.recent);
    slot.listed = false;
  }
  killed_runs_.fetch_add(1, std::memory_order_release);
  s.killed_at = now_rfc3339();
  s.killed_by = by;
  s.killed_reason = reason;
  return true;
}

std::optional<policy::BudgetTrip> RuntimeState::admit(const std::string& run,
                                                      const policy::Budgets& budgets,
                                                      const policy::BudgetCall& call) {
  std::lock_guard lock(mutex_);
  return run_locked(run).stats.budget.admit(budgets, call, monotonic_ms());
}

std::optional<policy::BudgetTrip> RuntimeState::record_denial(const std::string& run,
                                                              const policy::Budgets& budgets) {
  std::lock_guard lock(mutex_);
  return run_locked(run).stats.budget.record_denial(budgets);
}

std::size_t RuntimeState::run_count() const {
  std::lock_guard lock(mutex_);
  return runs_.size();
}

nlohmann::json RuntimeState::runs_json() const {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<const std::string*, const RunStats*>> order;
  order.reserve(runs_.size());
  for (const auto& [run, slot] : runs_) {
    order.emplace_back(&run, &slot.stats);
  }
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a.second->last_seen > b.second->last_seen; });
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& [run, stats] : order) {
    const auto& s = *stats;
    nlohmann::json j{{"run", *run},
                     {"runbook", s.runbook},
                     {"calls", s.calls},
                     {"denials", s.denials},
                     {"holds", s.holds},
                     {"writes", s.writes},
                     {"killed", s.killed},
                     {"first_seen", approval::format_time(s.first_seen)},
                     {"last_seen", approval::format_time(s.last_seen)}};
    if (s.killed) {
      j["killed_at"] = s.killed_at;
      j["killed_by"] = s.killed_by;
      j["killed_reason"] = s.killed_reason;
    }
    runs.push_back(std::move(j));
  }
  return nlohmann::json{{"runs", std::move(runs)}};
}

} // namespace runwarden::proxy
