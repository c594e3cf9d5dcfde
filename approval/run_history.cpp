#include "approval/run_history.hpp"

namespace runwarden::approval {

RunHistory::RunHistory(std::size_t per_run, std::size_t max_runs)
    : per_run_(per_run == 0 ? 1 : per_run), max_runs_(max_runs == 0 ? 1 : max_runs) {}

RunHistory::Entry& RunHistory::touch(std::string_view run) {
  auto it = runs_.find(run);
  if (it == runs_.end()) {
    if (runs_.size() >= max_runs_) {
      runs_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.emplace_front(run);
    it = runs_.emplace(std::string(run), Entry{{}, 0, lru_.begin()}).first;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
  }
  return it->second;
}

CallRecord& RunHistory::next_slot(Entry& entry) {
  auto& calls = entry.calls;
  if (calls.size() < per_run_) {
    return calls.emplace_back();
  }
  CallRecord& slot = calls[entry.oldest];
  entry.oldest = (entry.oldest + 1) % calls.size();
  return slot;
}

void RunHistory::record(std::string_view run, CallRecord call) {
  std::lock_guard lock(mutex_);
  next_slot(touch(run)) = std::move(call);
}

void RunHistory::record(std::string_view run, const CallView& call) {
  std::lock_guard lock(mutex_);
  CallRecord& slot = next_slot(touch(run));
  slot.request_id.assign(call.request_id);
  slot.action.assign(call.action);
  slot.outcome.assign(call.outcome);
  slot.method.assign(call.method);
  slot.url.assign(call.url);
  slot.time = call.time;
}

std::vector<CallRecord> RunHistory::calls(std::string_view run) const {
  std::lock_guard lock(mutex_);
  const auto it = runs_.find(run);
  if (it == runs_.end()) {
    return {};
  }
  const auto& calls = it->second.calls;
  const auto oldest = static_cast<std::ptrdiff_t>(it->second.oldest);
  std::vector<CallRecord> out;
  out.reserve(calls.size());
  out.insert(out.end(), calls.begin() + oldest, calls.end());
  out.insert(out.end(), calls.begin(), calls.begin() + oldest);
  return out;
}

void RunHistory::forget(std::string_view run) {
  std::lock_guard lock(mutex_);
  const auto it = runs_.find(run);
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
