#include "approval/hold_registry.hpp"

#include "approval/crypto.hpp"
#include "approval/display.hpp"

#include <algorithm>

namespace runwarden::approval {

std::string_view to_string(CreateError e) {
  switch (e) {
  case CreateError::ok:
    return "ok";
  case CreateError::capacity:
    return "capacity";
  case CreateError::no_entropy:
    return "no_entropy";
  }
  return "unknown";
}

std::string_view to_string(DecideError e) {
  switch (e) {
  case DecideError::ok:
    return "ok";
  case DecideError::not_found:
    return "not_found";
  case DecideError::conflict:
    return "conflict";
  case DecideError::forbidden:
    return "not_an_approver";
  }
  return "unknown";
}

nlohmann::json HoldView::to_json(bool full) const {
  nlohmann::json j = {
      {"id", id},
      {"state", to_string(state)},
      {"deferred", deferred},
      {"by", by},
      {"reason", reason},
      {"created", format_time(created)},
      {"resolved", resolved ? nlohmann::json(format_time(*resolved)) : nlohmann::json(nullptr)},
      {"wait_ms", wait.count()},
  };
  if (packet) {
    nlohmann::json p = packet->to_json();
    if (!full) {
      p["request"].erase("headers");
      p["request"].erase("body");
      p.erase("history");
    }
    j["packet"] = std::move(p);
  }
  return j;
}

namespace {
std::chrono::milliseconds since(SteadyTime from, SteadyTime to) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(to - from);
}
} // namespace

HoldRegistry::HoldRegistry(RegistryOptions options, const Clock& clock)
    : options_(options), clock_(clock), grants_(options.grant_ttl, options.max_grants) {}

void HoldRegistry::set_listener(EventListener listener) {
  std::lock_guard lock(mutex_);
  listener_ = std::move(listener);
}

std::string HoldRegistry::grant_key(std::string_view run, std::string_view digest) {
  std::string k(run);
  k.push_back('\n');
  k.append(digest);
  return k;
}

CreateResult HoldRegistry::create(ApprovalPacket packet, HoldOptions options,
                                  OutcomeCallback on_outcome) {
  std::string id = random_id("apr_");
  CreateResult result;
  {
    std::lock_guard lock(mutex_);
    if (id.empty()) {
      result.error = CreateError::no_entropy;
      result.reason = "cannot issue an approval id: the random number generator failed";
      return result;
    }
    if (stats_.pending >= options_.max_pending) {
      ++stats_.refused_capacity;
      result.error = CreateError::capacity;
      result.reason = "approval queue full: " + std::to_string(stats_.pending) +
                      " pending holds (approvals.max_pending " +
                      std::to_string(options_.max_pending) + ")";
      return result;
    }
    const SteadyTime now = clock_.steady();
    Hold h;
    h.created_steady = now;
    h.created_wall = clock_.wall();
    packet.timeout = options.timeout;
    packet.wait = options.wait;
    h.packet = std::make_shared<const ApprovalPacket>(std::move(packet));
    h.order = ++order_;
    h.on_outcome = std::move(on_outcome);
    h.timeout_it = timeouts_.emplace(now + options.timeout, id);
    h.defer_it = options.wait ? defers_.emplace(now + *options.wait, id) : defers_.end();
    auto [it, inserted] = holds_.emplace(id, std::move(h));
    (void)inserted; // 128 random bits: a collision is not a practical case
    ++stats_.pending;
    ++stats_.created;
    emit_locked(HoldEvent::Kind::created, it->first, it->second);
    result.id = id;
  }
  drain_events();
  return result;
}

HoldView HoldRegistry::view_locked(const std::string& id, const Hold& h) const {
  HoldView v;
  v.id = id;
  v.packet = h.packet;
  v.state = h.state;
  v.deferred = h.deferred;
  v.by = h.by;
  v.reason = h.reason;
  v.created = h.created_wall;
  v.resolved = h.resolved_wall;
  v.wait = h.state == HoldState::pending ? since(h.created_steady, clock_.steady()) : h.wait;
  return v;
}

void HoldRegistry::emit_locked(HoldEvent::Kind kind, const std::string& id, const Hold& h) {
  events_.push_back(HoldEvent{kind, ++seq_, view_locked(id, h)});
}

void HoldRegistry::resolve_locked(const std::string& id, Hold& h, HoldState state,
                                  std::string_view by, std::string_view reason, Pending& out) {
  const SteadyTime now = clock_.steady();
  h.state = state;
  h.by = escape_display(by);
  h.reason = escape_display(reason);
  h.resolved_wall = clock_.wall();
  h.wait = since(h.created_steady, now);
  if (h.timeout_it != timeouts_.end()) {
    timeouts_.erase(h.timeout_it);
    h.timeout_it = timeouts_.end();
  }
  if (h.defer_it != defers_.end()) {
    defers_.erase(h.defer_it);
    h.defer_it = defers_.end();
  }
  --stats_.pending;
  if (h.deferred) {
    --stats_.deferred;
    auto [lo, hi] = deferred_by_key_.equal_range(grant_key(h.packet->run, h.packet->digest));
    for (auto it = lo; it != hi; ++it) {
      if (it->second == id) {
        deferred_by_key_.erase(it);
        break;
      }
    }
    if (state == HoldState::approved) {
      grants_.add(h.packet->run, h.packet->digest, id, h.by, now);
    }
  }
  switch (state) {
  case HoldState::approved:
    ++stats_.approved;
    break;
  case HoldState::denied:
    ++stats_.denied;
    break;
  case HoldState::expired:
    ++stats_.expired;
    break;
  case HoldState::killed:
    ++stats_.killed;
    break;
  case HoldState::paused:
    ++stats_.paused;
    break;
  case HoldState::abandoned:
    ++stats_.abandoned;
    break;
  case HoldState::pending:
    break;
  }
  if (h.on_outcome) {
    out.callbacks.emplace_back(std::move(h.on_outcome),
                               HoldOutcome{id, state, h.deferred, h.by, h.reason, h.wait});
    h.on_outcome = nullptr;
  }
  resolved_order_.push_back(id);
  emit_locked(HoldEvent::Kind::resolved, id, h);
}

void HoldRegistry::defer_locked(const std::string& id, Hold& h, Pending& out) {
  h.deferred = true;
  if (h.defer_it != defers_.end()) {
    defers_.erase(h.defer_it);
    h.defer_it = defers_.end();
  }
  ++stats_.deferred;
  deferred_by_key_.emplace(grant_key(h.packet->run, h.packet->digest), id);
  if (h.on_outcome) {
    out.callbacks.emplace_back(
        std::move(h.on_outcome),
        HoldOutcome{
            id, HoldState::pending, true, {}, {}, since(h.created_steady, clock_.steady())});
    h.on_outcome = nullptr;
  }
  emit_locked(HoldEvent::Kind::deferred, id, h);
}

void HoldRegistry::trim_resolved_locked() {
  while (resolved_order_.size() > options_.max_resolved) {
    holds_.erase(resolved_order_.front());
    resolved_order_.pop_front();
  }
}

void HoldRegistry::finish(Pending& work) {
  for (auto& [callback, outcome] : work.callbacks) {
    callback(outcome);
  }
  drain_events();
}

bool HoldRegistry::events_idle() const {
  std::lock_guard lock(mutex_);
  return !draining_ && events_.empty();
}

void HoldRegistry::drain_events() {
  {
    std::lock_guard lock(mutex_);
    if (draining_ || events_.empty()) {
      return;
    }
    draining_ = true;
  }
  // One thread at a time delivers events, in sequence order; others only enqueue.
  for (;;) {
    std::deque<HoldEvent> batch;
    EventListener listener;
    {
      std::lock_guard lock(mutex_);
      if (events_.empty()) {
        draining_ = false;
        return;
      }
      batch.swap(events_);
      listener = listener_;
    }
    if (listener) {
      for (const auto& e : batch) {
        listener(e);
      }
    }
  }
}

DecideResult HoldRegistry::decide(std::string_view id, Choice choice, const Principal& by,
                                  std::string_view reason) {
  DecideResult result;
  Pending work;
  {
    std::lock_guard lock(mutex_);
    const auto it = holds_.find(std::string(id));
    if (it == holds_.end()) {
      result.error = DecideError::not_found;
      return result;
    }
    Hold& h = it->second;
    if (!may_decide(h.packet->approvers, by)) {
      ++stats_.forbidden;
      result.error = DecideError::forbidden;
      result.hold = view_locked(it->first, h);
      return result;
    }
    const HoldState wanted = choice == Choice::approve ? HoldState::approved : HoldState::denied;
    if (h.state == HoldState::pending) {
      resolve_locked(it->first, h, wanted, by.name, reason, work);
      result.changed = true;
    } else if (h.state != wanted) {
      result.error = DecideError::conflict;
    }
    result.hold = view_locked(it->first, h);
    trim_resolved_locked();
  }
  finish(work);
  return result;
}

bool HoldRegistry::abandon(std::string_view id) {
  Pending work;
  {
    std::lock_guard lock(mutex_);
    const auto it = holds_.find(std::string(id));
    if (it == holds_.end() || it->second.state != HoldState::pending || it->second.deferred) {
      return false;
    }
    resolve_locked(it->first, it->second, HoldState::abandoned, "",
                   "client disconnected while held; nothing was forwarded", work);
    trim_resolved_locked();
  }
  finish(work);
  return true;
}

std::size_t HoldRegistry::kill_run(std::string_view run, std::string_view by) {
  const std::string shown = escape_display(run);
  Pending work;
  std::size_t n = 0;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, h] : holds_) {
      if (h.state == HoldState::pending && h.packet->run == shown) {
        resolve_locked(id, h, HoldState::killed, by, "run " + shown + " was killed", work);
        ++n;
      }
    }
    trim_resolved_locked();
  }
  finish(work);
  return n;
}

std::size_t HoldRegistry::pause_all(std::string_view by) {
  Pending work;
  std::size_t n = 0;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, h] : holds_) {
      if (h.state == HoldState::pending) {
        resolve_locked(id, h, HoldState::paused, by, "runwarden entered paused mode", work);
        ++n;
      }
    }
    trim_resolved_locked();
  }
  finish(work);
  return n;
}

std::size_t HoldRegistry::expire_all(std::string_view by, std::string_view reason) {
  Pending work;
  std::size_t n = 0;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, h] : holds_) {
      if (h.state == HoldState::pending) {
        resolve_locked(id, h, HoldState::expired, by, reason, work);
        ++n;
      }
    }
    trim_resolved_locked();
  }
  finish(work);
  return n;
}

void HoldRegistry::tick() {
  Pending work;
  {
    std::lock_guard lock(mutex_);
    const SteadyTime now = clock_.steady();
    // Timeouts first: when both are due, the hold has run out of time.
    while (!timeouts_.empty() && timeouts_.begin()->first <= now) {
      const std::string id = timeouts_.begin()->second;
      Hold& h = holds_.at(id);
      resolve_locked(id, h, HoldState::expired, "",
                     "no decision within " + std::to_string(h.packet->timeout.count()) +
                         " ms (on_timeout: deny)",
                     work);
    }
    while (!defers_.empty() && defers_.begin()->first <= now) {
      const std::string id = defers_.begin()->second;
      defer_locked(id, holds_.at(id), work);
    }
    trim_resolved_locked();
    grants_.purge(now);
  }
  finish(work);
}

std::optional<SteadyTime> HoldRegistry::next_deadline() const {
  std::lock_guard lock(mutex_);
  std::optional<SteadyTime> next;
  if (!timeouts_.empty()) {
    next = timeouts_.begin()->first;
  }
  if (!defers_.empty() && (!next || defers_.begin()->first < *next)) {
    next = defers_.begin()->first;
  }
  return next;
}

std::optional<Grant> HoldRegistry::take_grant(std::string_view run, std::string_view digest) {
  return grants_.take(escape_display(run), digest, clock_.steady());
}

std::optional<HoldView> HoldRegistry::find_deferred(std::string_view run,
                                                    std::string_view digest) const {
  if (digest.empty()) {
    return std::nullopt; // no digest: it would match every other request without one
  }
  std::lock_guard lock(mutex_);
  const auto it = deferred_by_key_.find(grant_key(escape_display(run), digest));
  if (it == deferred_by_key_.end()) {
    return std::nullopt;
  }
  return view_locked(it->second, holds_.at(it->second));
}

std::optional<HoldView> HoldRegistry::get(std::string_view id) const {
  std::lock_guard lock(mutex_);
  const auto it = holds_.find(std::string(id));
  if (it == holds_.end()) {
    return std::nullopt;
  }
  return view_locked(it->first, it->second);
}

std::vector<HoldView> HoldRegistry::list(std::optional<HoldState> state) const {
  std::vector<std::pair<std::uint64_t, HoldView>> found;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, h] : holds_) {
      if (!state || h.state == *state) {
        found.emplace_back(h.order, view_locked(id, h));
      }
    }
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<HoldView> out;
  out.reserve(found.size());
  for (auto& [order, v] : found) {
    out.push_back(std::move(v));
  }
  return out;
}

RegistryStats HoldRegistry::stats() const {
  std::lock_guard lock(mutex_);
  RegistryStats s = stats_;
  s.resolved_kept = resolved_order_.size();
  s.grants = grants_.size();
  return s;
}

std::chrono::milliseconds HoldRegistry::oldest_pending_age() const {
  const SteadyTime now = clock_.steady();
  std::lock_guard lock(mutex_);
  std::optional<SteadyTime> oldest;
  for (const auto& [id, h] : holds_) {
    if (h.state == HoldState::pending && (!oldest || h.created_steady < *oldest)) {
      oldest = h.created_steady;
    }
  }
  if (!oldest || *oldest > now) {
    return std::chrono::milliseconds{0};
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(now - *oldest);
}

} // namespace runwarden::approval
