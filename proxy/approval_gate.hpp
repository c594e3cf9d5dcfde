#pragma once
// The Gate that really holds (DESIGN §4-§5): a request that needs a human waits on its
// live connection in approval::HoldRegistry until an operator approves or denies it, it
// times out, its run is killed, runwarden is paused or shuts down, or the agent disconnects.
// Every transition is journaled, announced by webhook and recorded in the audit log.

#include "approval/approval_packet.hpp"
#include "approval/hold_registry.hpp"
#include "approval/journal.hpp"
#include "approval/packet_redactor.hpp"
#include "approval/run_history.hpp"
#include "approval/webhook_notifier.hpp"
#include "audit/audit_log.hpp"
#include "config/config.hpp"
#include "proxy/admin_approvals.hpp"
#include "proxy/gate.hpp"
#include "proxy/webhook_client.hpp"

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace runwarden::proxy {

struct ProxyContext;

/// Who ends the holds still pending when runwarden shuts down (HoldView::by).
inline constexpr std::string_view kShutdownBy = "shutdown";

struct ApprovalGateOptions {
  approval::RegistryOptions registry;
  std::chrono::milliseconds hold_timeout{std::chrono::minutes(10)};
  std::vector<approval::WebhookEndpoint> webhooks; // secrets already read from the env
  std::string journal_path;                        // required: where pending holds survive
  /// At start-up (set_packet_redactor replaces it); null: HeaderOnlyRedactor.
  std::shared_ptr<const approval::PacketRedactor> redactor;
  approval::PacketOptions packet;
  std::chrono::milliseconds tick{50}; // timer period for timeouts, defers, webhooks, pause
  /// Every outbound webhook signature, before it is sent: the admin API's replay cache
  /// (a delivery must never work as an inbound credential).
  approval::WebhookNotifier::SignatureSink spend;
};

class ApprovalGate final : public Gate, public std::enable_shared_from_this<ApprovalGate> {
public:
  /// Opens the journal (expiring what a previous process left pending). Throws
  /// std::runtime_error at start-up when the journal cannot be opened.
  ApprovalGate(boost::asio::io_context& ioc, boost::asio::ssl::context& webhook_tls,
               std::shared_ptr<audit::AuditLog> audit, ApprovalGateOptions options);
  ~ApprovalGate() override;
  ApprovalGate(const ApprovalGate&) = delete;
  ApprovalGate& operator=(const ApprovalGate&) = delete;

  /// Records an audit event per hold expired by the restart and starts the tick timer.
  /// `ctx` is watched (weakly) for paused mode.
  void start(const std::shared_ptr<ProxyContext>& ctx);
  /// Cancels the timer (before the io_context stops).
  void stop();

  /// The drain began (SIGTERM/SIGINT): every pending hold ends now, expired by `shutdown`
  /// (kShutdownBy), so each waiting agent is answered (503 approval_shutdown with its
  /// approval id), the approval's end is journaled, recorded (approval.resolved) and sent
  /// by webhook, and a hold asked for from now on is refused the same way. Without this
  /// the I/O threads would stop under the waiting connections: no answer, no record.
  /// Returns how many holds it ended; idempotent.
  std::size_t shut_down();
  /// Held requests whose answer is not yet written: from hold() until the session drops
  /// HoldResult::answering. The drain waits for none to remain.
  std::size_t unanswered() const { return unanswered_->load(); }
  /// No webhook delivery is waiting or in flight (the drain gives them its grace).
  bool webhooks_idle() const;
  /// Every hold transition so far has been journaled, recorded and queued as a webhook
  /// (another thread may still be delivering the shutdown's events when it returns).
  bool events_idle() const { return registry_.events_idle(); }
  /// Holds ended by shut_down() or by a hold() that raced it: their webhooks get the grace.
  std::size_t shutdown_ended() const { return ended_by_shutdown_.load(); }

  void hold(HoldRequest request, HoldDone done) override;
  void abandon(const std::string& request_id) override;
  std::size_t kill_run(const std::string& run, const std::string& by) override;
  std::size_t pause_all(const std::string& by) override;
  void observe(const std::string& run, const std::string& request_id, const std::string& action,
               const std::string& outcome, const std::string& method,
               const std::string& url) override;
  /// Packets built after it returns use `redactor`; those of pending holds keep what they
  /// were built with (only their redacted form is kept, so nothing can be re-redacted).
  void set_packet_redactor(std::shared_ptr<const approval::PacketRedactor> redactor) override;

  /// Audit record `approval.decision_refused` for an operator outside the hold's approvers
  /// (the admin API answered 403; the hold is unchanged).
  void record_refused_decision(const approval::HoldView& hold, approval::Choice choice,
                               const approval::Principal& by);

  /// Publishes an operations event (mode_changed, run_killed, ...) to the webhooks.
  void announce(std::string_view event, const nlohmann::json& data);

  approval::HoldRegistry& registry() { return registry_; }
  const approval::WebhookNotifier& notifier() const { return notifier_; }
  /// Holds the previous process left pending (already journaled as expired).
  const std::vector<approval::RecoveredHold>& recovered() const { return recovered_; }

private:
  void on_event(const approval::HoldEvent& event);
  void schedule_tick();
  void tick();
  void forget_request(const std::string& request_id);

  boost::asio::io_context& ioc_;
  std::shared_ptr<audit::AuditLog> audit_;
  ApprovalGateOptions options_; // its redactor is the one at start-up: see redactor_
  std::atomic<std::shared_ptr<const approval::PacketRedactor>> redactor_; // as reloaded
  approval::HoldRegistry registry_;
  approval::RunHistory history_;
  WebhookClient sender_;
  approval::WebhookNotifier notifier_;
  std::unique_ptr<approval::Journal> journal_;
  std::vector<approval::RecoveredHold> recovered_;
  boost::asio::steady_timer timer_;
  std::weak_ptr<ProxyContext> ctx_;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> shutting_down_{false};
  std::atomic<std::size_t> ended_by_shutdown_{0}; // holds the drain ended (their webhooks)
  std::shared_ptr<std::atomic<std::size_t>> unanswered_ =
      std::make_shared<std::atomic<std::size_t>>(0);

  std::mutex mutex_;
  std::unordered_map<std::string, std::string> by_request_; // request id -> approval id
};

/// The approval packets' redactor for `redaction:` (built-ins plus these additions), showing
/// at most `body_bytes` (audit.body_bytes) of a body: audit's Redactor, so a packet hides
/// what the audit record hides. Throws std::invalid_argument when a pattern does not compile.
std::shared_ptr<const approval::PacketRedactor>
make_packet_redactor(const config::Redaction& redaction, std::size_t body_bytes);

/// The gate and the admin credentials, built from config at start-up.
struct Approvals {
  std::shared_ptr<ApprovalGate> gate;
  std::shared_ptr<AdminAuth> auth;
  /// A handle on the tokens `auth` checks: a reload replaces them in place (reload.hpp).
  approval::OperatorTokens tokens;
};

/// Builds both from `approvals:` (hold_timeout, max_pending, webhooks with secrets read
/// from their secret_env, operator_tokens_file) with the journal at
/// <audit dir>/approvals.journal. Returns an empty gate when config has no audit.path (no
/// place for the journal: holds are then refused). Throws std::runtime_error at start-up
/// on an unset webhook secret, a bad tokens file or an unwritable journal.
Approvals make_approvals(boost::asio::io_context& ioc, boost::asio::ssl::context& webhook_tls,
                         const config::Config& config, std::shared_ptr<audit::AuditLog> audit);

} // namespace runwarden::proxy
