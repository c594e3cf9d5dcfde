#pragma once
// Every held request and its state machine (DESIGN §5). The proxy creates a hold and is
// called back exactly once with how it ended; operators decide through the admin API;
// kill, pause, timeouts and disconnects end holds too. Thread-safe: every callback runs
// outside the registry's lock, on whichever thread caused the transition.

#include "approval/approval_packet.hpp"
#include "approval/approvers.hpp"
#include "approval/clock.hpp"
#include "approval/grant_store.hpp"
#include "approval/hold_state.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace runwarden::approval {

/// A consistent snapshot of one hold, for the admin API, webhooks and the journal.
struct HoldView {
  std::string id;
  std::shared_ptr<const ApprovalPacket> packet;
  HoldState state = HoldState::pending;
  bool deferred = false; // the client was answered approval_pending
  std::string by;        // approver identity, from the credential
  std::string reason;
  WallTime created{};
  std::optional<WallTime> resolved;
  std::chrono::milliseconds wait{0}; // creation to resolution

  /// Admin API shape: {"id","state","deferred","by","reason","created","resolved",
  /// "wait_ms","packet"}; `full` false leaves out the request headers/body and history.
  nlohmann::json to_json(bool full = true) const;
};

/// Delivered to the hold's creator exactly once: when the hold resolves, or (for
/// hold-then-defer) when `wait` elapses first, with state pending and deferred true.
struct HoldOutcome {
  std::string id;
  HoldState state = HoldState::pending;
  bool deferred = false;
  std::string by;
  std::string reason;
  std::chrono::milliseconds wait{0};
  /// approved, approval_denied, approval_timeout, approval_pending, client_gone.
  std::string_view code() const { return agent_code(state, deferred); }
};
using OutcomeCallback = std::function<void(const HoldOutcome&)>;

/// Registry-wide events, delivered in the order the transitions happened, for the
/// journal and the webhook notifier.
struct HoldEvent {
  enum class Kind : std::uint8_t { created, deferred, resolved };
  Kind kind = Kind::created;
  std::uint64_t seq = 0;
  HoldView hold;
};
using EventListener = std::function<void(const HoldEvent&)>;

struct HoldOptions {
  /// Hold timeout; on_timeout is always deny (fail closed).
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  /// Hold-then-defer: answer approval_pending after this and keep the hold pending.
  std::optional<std::chrono::milliseconds> wait;
};

struct RegistryOptions {
  std::size_t max_pending = 10000;
  std::chrono::milliseconds grant_ttl{std::chrono::minutes(10)};
  std::size_t max_grants = 10000;
  /// Resolved holds kept for `show`, idempotent re-decisions and 409s; oldest dropped.
  std::size_t max_resolved = 10000;
};

enum class CreateError : std::uint8_t { ok, capacity, no_entropy };
/// forbidden: the hold's action names approvers and the caller is none of them (403).
enum class DecideError : std::uint8_t { ok, not_found, conflict, forbidden };
std::string_view to_string(CreateError e);
std::string_view to_string(DecideError e);

struct CreateResult {
  CreateError error = CreateError::ok;
  std::string id;     // "apr_" + 32 hex digits when ok
  std::string reason; // why it was refused
};

struct DecideResult {
  DecideError error = DecideError::ok;
  /// True when this call resolved the hold; false for an idempotent repeat.
  bool changed = false;
  std::optional<HoldView> hold; // the hold as it now stands (absent when not_found)
};

struct RegistryStats {
  std::size_t pending = 0;
  std::size_t deferred = 0;
  std::size_t resolved_kept = 0;
  std::size_t grants = 0;
  std::uint64_t created = 0;
  std::uint64_t refused_capacity = 0;
  std::uint64_t approved = 0;
  std::uint64_t denied = 0;
  std::uint64_t expired = 0;
  std::uint64_t killed = 0;
  std::uint64_t paused = 0;
  std::uint64_t abandoned = 0;
  std::uint64_t forbidden = 0; // decisions refused: caller not among the approvers
};

class HoldRegistry {
public:
  HoldRegistry(RegistryOptions options, const Clock& clock);
  HoldRegistry(const HoldRegistry&) = delete;
  HoldRegistry& operator=(const HoldRegistry&) = delete;

  /// Set once before use: receives every transition in order (journal, webhooks).
  void set_listener(EventListener listener);

  /// Holds `packet`. On success `on_outcome` will be called exactly once; on refusal
  /// (capacity, CSPRNG failure) it is never called and the caller answers at once.
  CreateResult create(ApprovalPacket packet, HoldOptions options, OutcomeCallback on_outcome);

  /// An operator's decision. `by` comes from the authenticated credential. If the hold's
  /// action names approvers and `by` is neither one of them nor in one of their groups,
  /// the answer is forbidden and nothing changes (checked first, for approve and deny
  /// alike, so a non-approver learns nothing from 409 versus 200). Deciding the same way
  /// again is an idempotent success; any other decision on a resolved hold is conflict
  /// (409); an unknown id is not_found (404). Approving a deferred hold issues a
  /// single-use grant for the same run and digest.
  DecideResult decide(std::string_view id, Choice choice, const Principal& by,
                      std::string_view reason);

  /// The client went away: the hold ends abandoned and nothing is released. A deferred
  /// hold has no client left and is unaffected. Returns true if this call ended it.
  bool abandon(std::string_view id);

  /// Kill switch for one run: its pending holds end killed. Returns how many.
  std::size_t kill_run(std::string_view run, std::string_view by);
  /// Paused mode: every pending hold ends paused. Returns how many.
  std::size_t pause_all(std::string_view by);
  /// Shutdown: every pending hold (deferred ones too) ends expired with `by` and `reason`,
  /// as a timeout would, so nothing is released and nothing is left for the next process
  /// to expire on restart. Returns how many.
  std::size_t expire_all(std::string_view by, std::string_view reason);

  /// Fires deferrals and timeouts due at the clock's now. The proxy calls it from a
  /// timer at next_deadline() (or periodically).
  void tick();
  /// The earliest pending deadline, so a timer need not poll.
  std::optional<SteadyTime> next_deadline() const;

  /// Consumes the grant for (run, digest) if an approval issued one.
  std::optional<Grant> take_grant(std::string_view run, std::string_view digest);
  /// A pending deferred hold for the same run and digest: a retried request is told
  /// approval_pending with the same id instead of opening a second hold.
  std::optional<HoldView> find_deferred(std::string_view run, std::string_view digest) const;

  std::optional<HoldView> get(std::string_view id) const;
  /// Newest first; `state` nullopt means all kept holds.
  std::vector<HoldView> list(std::optional<HoldState> state) const;
  RegistryStats stats() const;
  /// No event is waiting to be delivered and no thread is delivering one: every transition
  /// so far has reached the listener (journal, audit, webhook queue).
  bool events_idle() const;
  /// How long the oldest pending hold has waited (zero when none): the approval queue's age,
  /// which on-call watches (metrics). Linear in pending holds; meant for scrapes.
  std::chrono::milliseconds oldest_pending_age() const;

private:
  struct Hold {
    std::shared_ptr<const ApprovalPacket> packet;
    HoldState state = HoldState::pending;
    bool deferred = false;
    std::string by;
    std::string reason;
    SteadyTime created_steady{};
    WallTime created_wall{};
    std::optional<WallTime> resolved_wall;
    std::chrono::milliseconds wait{0};
    std::uint64_t order = 0;
    OutcomeCallback on_outcome;
    std::multimap<SteadyTime, std::string>::iterator timeout_it;
    std::multimap<SteadyTime, std::string>::iterator defer_it;
  };
  struct Pending { // work collected under the lock, run after it
    std::vector<std::pair<OutcomeCallback, HoldOutcome>> callbacks;
  };

  HoldView view_locked(const std::string& id, const Hold& h) const;
  void resolve_locked(const std::string& id, Hold& h, HoldState state, std::string_view by,
                      std::string_view reason, Pending& out);
  void defer_locked(const std::string& id, Hold& h, Pending& out);
  void emit_locked(HoldEvent::Kind kind, const std::string& id, const Hold& h);
  void trim_resolved_locked();
  void finish(Pending& work);
  void drain_events();
  static std::string grant_key(std::string_view run, std::string_view digest);

  RegistryOptions options_;
  const Clock& clock_;
  GrantStore grants_;
  EventListener listener_;

  mutable std::mutex mutex_;
  std::unordered_map<std::string, Hold> holds_;
  std::multimap<SteadyTime, std::string> timeouts_; // pending holds by timeout
  std::multimap<SteadyTime, std::string> defers_;   // undeferred holds by wait deadline
  std::unordered_multimap<std::string, std::string> deferred_by_key_; // run+digest -> id
  std::deque<std::string> resolved_order_;
  std::deque<HoldEvent> events_;
  bool draining_ = false;
  std::uint64_t seq_ = 0;
  std::uint64_t order_ = 0;
  RegistryStats stats_;
};

} // namespace runwarden::approval
