#include "approval/run_history.hpp"

namespace runwarden::approval {

RunHistory::RunHistory(std::size_t per_run, std::size_t max_runs)
    : per_run_(per_run == 0 ? 1 : per_run), max_runs_(max_runs == 0 ? 1 : max_runs) {}

void RunHistory::record(std::string_view run, CallRecord call) {
  std::lock_guard lock(mutex_);
  auto it = runs_.find(std::string(run));
  if (it == runs_.end()) {
    if (runs_.size() >= max_runs_) {
      runs_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.emplace_front(run);
    it = runs_.emplace(std::string(run), Entry{{}, lru_.begin()}).first;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
  }
  auto& calls = it->second.calls;
  calls.push_back(std::move(call));
  while (calls.size() > per_run_) {
    calls.pop_front();
  }
}

std::vector<CallRecord> RunHistory::calls(std::string_view run) const {
  std::lock_guard lock(mutex_);
  const auto it = runs_.find(std::string(run));
  if (it == runs_.end()) {
    return {};
  }
  return {it->second.calls.begin(), it->second.calls.end()};
}

void RunHistory::forget(std::string_view run) {
  std::lock_guard lock(mutex_);
  const auto it = runs_.find(std::string(run));
  if (it == runs_.end()) {
    return;
  }
  lru_.erase(it->second.lru);
  runs_.erase(it);
}

std::size_t RunHistory::runs() const {
  std::lock_guard lock(mutex_);
  return runs_.size();
}

} // namespace runwarden::approval
