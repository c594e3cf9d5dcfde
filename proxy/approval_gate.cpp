#include "proxy/approval_gate.hpp"

#include "approval/audit_packet_redactor.hpp"
#include "approval/crypto.hpp"
#include "audit/redactor.hpp"
#include "config/approver_reach.hpp"
#include "proxy/admin_ops.hpp"
#include "proxy/log.hpp"
#include "proxy/proxy_context.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cstdlib>
#include <filesystem>

namespace runwarden::proxy {
namespace {

void audit_event(audit::AuditLog& log, std::string_view type, nlohmann::json fields) {
  log.event(type, fields, [type = std::string(type)](std::error_code ec) {
    if (ec) {
      log_event(LogLevel::error, "audit_event_failed", 0, {},
                {{"type", type}, {"error", ec.message()}});
    }
  });
}

nlohmann::json hold_fields(const approval::HoldView& h) {
  nlohmann::json j = {{"approval_id", h.id}, {"state", approval::to_string(h.state)}};
  if (h.packet) {
    j["run"] = h.packet->run;
    j["agent"] = h.packet->agent;
    j["request_id"] = h.packet->request_id;
    j["runbook"] = h.packet->runbook;
    j["action"] = h.packet->action;
  }
  return j;
}

/// A runbook's approvers entry that no operator name, token-file group or webhook identity
/// matches can never decide; if none of an action's entries match, its holds can only time
/// out (deny). Fail closed, but say so at start-up (`runwarden check` reports the same gaps,
/// from the same rule: config::unmatched_approvers).
void warn_unmatched_approvers(const config::Config& config, const approval::OperatorTokens& tokens,
                              const std::vector<approval::SignatureKey>& keys) {
  auto known = [&](std::string_view who) {
    return tokens.knows(who) ||
           std::any_of(keys.begin(), keys.end(), [&who](const auto& k) { return k.name == who; });
  };
  for (const auto& gap : config::unmatched_approvers(config.runbooks, known)) {
    if (!gap.approver.empty()) {
      log_event(LogLevel::warn, "approver_unknown", 0, {},
                {{"runbook", gap.runbook},
                 {"action", gap.action},
                 {"approver", gap.approver},
                 {"why", "no operator, token-file group or webhook identity has this name"}});
      continue;
    }
    log_event(LogLevel::warn, "approvers_unreachable", 0, {},
              {{"runbook", gap.runbook},
               {"action", gap.action},
               {"why", "nobody may decide this action's holds: they can only time out"}});
  }
}

constexpr std::string_view kShutdownReason =
    "runwarden shut down before a decision; nothing was forwarded";

bool ended_by_shutdown(approval::HoldState state, std::string_view by) {
  return state == approval::HoldState::expired && by == kShutdownBy;
}

/// One more held request waiting for its answer, until the returned handle is dropped.
std::shared_ptr<const void> answering(const std::shared_ptr<std::atomic<std::size_t>>& count) {
  count->fetch_add(1);
  return std::shared_ptr<const void>(nullptr, [count](const void*) { count->fetch_sub(1); });
}

} // namespace

ApprovalGate::ApprovalGate(boost::asio::io_context& ioc, boost::asio::ssl::context& webhook_tls,
                           std::shared_ptr<audit::AuditLog> audit, ApprovalGateOptions options)
    : ioc_(ioc), audit_(std::move(audit)), options_(std::move(options)),
      registry_(options_.registry, approval::system_clock()), sender_(ioc, webhook_tls),
      notifier_(options_.webhooks, sender_, approval::system_clock()), timer_(ioc) {
  if (!options_.redactor) {
    options_.redactor = std::make_shared<approval::HeaderOnlyRedactor>();
  }
  redactor_.store(options_.redactor);
  notifier_.set_signature_sink(options_.spend);
  if (options_.journal_path.empty()) {
    throw std::runtime_error("approvals: no journal path (it lives beside audit.path)");
  }
  journal_ = approval::Journal::open(options_.journal_path, approval::system_clock(), recovered_);
  registry_.set_listener([this](const approval::HoldEvent& e) { on_event(e); });
}

ApprovalGate::~ApprovalGate() = default;

void ApprovalGate::start(const std::shared_ptr<ProxyContext>& ctx) {
  ctx_ = ctx;
  for (const auto& h : recovered_) {
    log_event(LogLevel::warn, "approval_expired_on_restart", 0, h.request_id,
              {{"approval", h.id}, {"run", h.run}, {"action", h.action}});
    audit_event(*audit_, "approval.expired_on_restart",
                {{"approval_id", h.id},
                 {"state", "expired"},
                 {"outcome", "approval_timeout"},
                 {"run", h.run},
                 {"agent", h.agent},
                 {"runbook", h.runbook},
                 {"action", h.action},
                 {"request_id", h.request_id},
                 {"created", h.created},
                 {"reason", "pending when runwarden stopped; nothing was released"}});
  }
  schedule_tick();
}

void ApprovalGate::stop() {
  stopped_.store(true);
  boost::system::error_code ignored;
  timer_.cancel();
}

std::size_t ApprovalGate::shut_down() {
  shutting_down_.store(true);
  const std::size_t n = registry_.expire_all(kShutdownBy, kShutdownReason);
  ended_by_shutdown_.fetch_add(n);
  if (n > 0) {
    log_event(LogLevel::info, "holds_ended_at_shutdown", 0, {}, {{"holds", std::to_string(n)}});
  }
  return n;
}

bool ApprovalGate::webhooks_idle() const {
  const approval::WebhookStats s = notifier_.stats();
  return s.queued == 0 && s.in_flight == 0;
}

void ApprovalGate::schedule_tick() {
  if (stopped_.load()) {
    return;
  }
  timer_.expires_after(options_.tick);
  timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->stopped_.load()) {
      return;
    }
    self->tick();
    self->schedule_tick();
  });
}

void ApprovalGate::tick() {
  if (auto ctx = ctx_.lock()) {
    std::error_code fs_ec;
    const auto cfg = ctx->runtime ? ctx->runtime->config() : ctx->config; // as reloaded
    const auto& kill_switch = cfg->kill_switch_file;
    // The file, seen here first (this tick is 50 ms, the reloader's poll 250 ms), pauses
    // through the same path the poll takes: one mode_changed event, by the kill switch,
    // counting the holds it denied (this gate's pause_all). Its removal is the poll's.
    const bool file = !kill_switch.empty() && std::filesystem::exists(kill_switch, fs_ec);
    if (file && ctx->runtime) {
      apply_kill_switch(ctx, true);
    }
    const bool paused = ctx->mode.load() == policy::Mode::paused || file;
    if (paused && registry_.stats().pending > 0) {
      pause_all("mode:paused");
    }
  }
  registry_.tick();
  notifier_.tick();
}

void ApprovalGate::on_event(const approval::HoldEvent& e) {
  if (journal_) {
    if (const auto ec = journal_->append(e)) {
      log_event(LogLevel::error, "approval_journal_failed", 0, {}, {{"error", ec.message()}});
    }
  }
  notifier_.on_hold_event(e);
  nlohmann::json fields = hold_fields(e.hold);
  switch (e.kind) {
  case approval::HoldEvent::Kind::created:
    if (e.hold.packet) {
      fields["body_sha256"] = e.hold.packet->request.body_sha256;
      fields["digest"] = e.hold.packet->digest;
      fields["timeout_ms"] = e.hold.packet->timeout.count();
    }
    audit_event(*audit_, "approval.requested", std::move(fields));
    break;
  case approval::HoldEvent::Kind::deferred:
    fields["wait_ms"] = e.hold.wait.count();
    audit_event(*audit_, "approval.deferred", std::move(fields));
    break;
  case approval::HoldEvent::Kind::resolved:
    fields["by"] = e.hold.by;
    fields["reason"] = e.hold.reason;
    fields["wait_ms"] = e.hold.wait.count();
    fields["outcome"] = ended_by_shutdown(e.hold.state, e.hold.by)
                            ? kShutdownCode
                            : approval::agent_code(e.hold.state, false);
    audit_event(*audit_, "approval.resolved", std::move(fields));
    log_event(LogLevel::info, "approval_resolved", 0,
              e.hold.packet ? e.hold.packet->request_id : std::string(),
              {{"approval", e.hold.id},
               {"state", approval::to_string(e.hold.state)},
               {"by", e.hold.by},
               {"wait_ms", std::to_string(e.hold.wait.count())}});
    break;
  }
  if (!stopped_.load()) {
    // Webhooks due now go out without waiting for the next tick.
    boost::asio::post(ioc_, [weak = weak_from_this()] {
      if (auto self = weak.lock()) {
        self->notifier_.tick();
      }
    });
  }
}

void ApprovalGate::record_refused_decision(const approval::HoldView& hold, approval::Choice choice,
                                           const approval::Principal& by) {
  nlohmann::json fields = hold_fields(hold);
  fields["choice"] = approval::to_string(choice);
  fields["by"] = by.name;
  fields["groups"] = by.groups;
  fields["approvers"] = hold.packet ? hold.packet->approvers : std::vector<std::string>();
  fields["error"] = "not_an_approver";
  audit_event(*audit_, "approval.decision_refused", std::move(fields));
}

void ApprovalGate::announce(std::string_view event, const nlohmann::json& data) {
  notifier_.publish(event, data);
  boost::asio::post(ioc_, [weak = weak_from_this()] {
    if (auto self = weak.lock()) {
      self->notifier_.tick();
    }
  });
}

void ApprovalGate::forget_request(const std::string& request_id) {
  std::lock_guard lock(mutex_);
  by_request_.erase(request_id);
}

void ApprovalGate::hold(HoldRequest request, HoldDone done) {
  auto token = answering(unanswered_);
  if (shutting_down_.load()) { // decided just before the drain began: nothing new is held
    HoldResult r;
    r.code = std::string(kShutdownCode);
    r.outcome = r.code;
    r.reason = "runwarden is shutting down: nothing was held or forwarded; retry once it is back";
    r.answering = std::move(token);
    done(std::move(r));
    return;
  }
  const policy::Request& req = request.request;
  const std::string body_sha = approval::sha256_hex(req.body);
  const std::string digest = approval::request_digest(req, body_sha);

  // A run that was told approval_pending comes back: an approval left a single-use grant.
  if (auto grant = registry_.take_grant(request.run, digest)) {
    audit_event(*audit_, "approval.grant_used",
                {{"approval_id", grant->approval_id},
                 {"by", grant->by},
                 {"run", request.run},
                 {"request_id", request.request_id},
                 {"digest", digest}});
    HoldResult r;
    r.approved = true;
    r.code = "approved";
    r.approval = audit::ApprovalInfo{grant->approval_id, grant->by, 0};
    r.answering = std::move(token);
    done(std::move(r));
    return;
  }
  if (auto pending = registry_.find_deferred(request.run, digest)) {
    HoldResult r;
    r.code = "approval_pending";
    r.outcome = "approval_pending";
    r.reason = "approval " + pending->id + " is still pending; retry after it is approved";
    r.approval_id = pending->id;
    r.approval = audit::ApprovalInfo{pending->id, "", pending->wait.count()};
    const auto wait = pending->packet && pending->packet->wait ? *pending->packet->wait
                                                               : std::chrono::milliseconds(5000);
    r.retry_after = std::max<std::chrono::seconds>(
        std::chrono::seconds(1), std::chrono::duration_cast<std::chrono::seconds>(wait));
    r.answering = std::move(token);
    done(std::move(r));
    return;
  }
  if (journal_ && !journal_->healthy()) {
    HoldResult r;
    r.code = "approval_unavailable";
    r.outcome = "refused";
    r.reason = "the approvals journal cannot be written, so no hold can be kept safely";
    r.answering = std::move(token);
    done(std::move(r));
    return;
  }

  approval::PacketInput in;
  in.run = request.run;
  in.agent = request.agent;
  in.request_id = request.request_id;
  in.decision = &request.decision;
  in.request = &req;
  in.body_sha256 = body_sha;
  in.history = history_.calls(request.run);
  const std::shared_ptr<const approval::PacketRedactor> redactor = redactor_.load();
  approval::ApprovalPacket packet =
      approval::build_packet(in, *redactor, options_.packet, approval::system_clock());

  approval::HoldOptions hold_options;
  hold_options.timeout = options_.hold_timeout;
  if (const policy::RunbookAction* a = request.decision.approval) {
    if (a->timeout) {
      hold_options.timeout = *a->timeout;
    }
    hold_options.wait = a->wait;
  }
  std::optional<std::chrono::seconds> retry_after;
  if (hold_options.wait) {
    retry_after = std::max<std::chrono::seconds>(
        std::chrono::seconds(1),
        std::chrono::duration_cast<std::chrono::seconds>(*hold_options.wait));
  }
  {
    std::lock_guard lock(mutex_);
    by_request_[request.request_id] = std::string();
  }
  auto shared_done = std::make_shared<HoldDone>(std::move(done));
  std::weak_ptr<ApprovalGate> weak = weak_from_this();
  const std::string request_id = request.request_id;
  auto created = registry_.create(
      std::move(packet), hold_options,
      [weak, shared_done, request_id, retry_after, token](const approval::HoldOutcome& o) {
        if (auto self = weak.lock()) {
          self->forget_request(request_id);
        }
        HoldResult r;
        const bool shutdown = ended_by_shutdown(o.state, o.by);
        const std::string_view code = shutdown ? kShutdownCode : o.code();
        r.approved = code == "approved";
        r.code = std::string(code);
        r.reason = o.reason;
        r.approval_id = o.id;
        r.approval = audit::ApprovalInfo{o.id, o.by, o.wait.count()};
        r.answering = token;
        if (!r.approved) {
          r.outcome = r.code;
          if (shutdown) {
            r.reason = "runwarden is shutting down: approval " + o.id +
                       " ended (expired) before a decision and nothing was forwarded; retry "
                       "once runwarden is back (the request will be held again)";
          } else if (code == "approval_pending") {
            r.reason = "no decision within the runbook's wait; approval " + o.id +
                       " stays pending: retry the same request after it is approved";
            r.retry_after = retry_after;
          } else {
            r.reason = "approval " + o.id + " ended " + std::string(approval::to_string(o.state)) +
                       (o.by.empty() ? std::string() : " by " + o.by) +
                       (o.reason.empty() ? std::string() : ": " + o.reason);
          }
        }
        (*shared_done)(std::move(r));
      });
  if (created.error != approval::CreateError::ok) {
    forget_request(request_id);
    log_event(LogLevel::warn, "hold_refused", 0, request_id,
              {{"error", approval::to_string(created.error)}});
    audit_event(*audit_, "approval.refused",
                {{"run", request.run},
                 {"request_id", request_id},
                 {"action", request.decision.action},
                 {"error", approval::to_string(created.error)},
                 {"reason", created.reason}});
    HoldResult r;
    r.code = created.error == approval::CreateError::capacity ? "approval_queue_full"
                                                              : "approval_unavailable";
    r.outcome = "refused";
    r.reason = created.reason;
    r.answering = std::move(token);
    (*shared_done)(std::move(r));
    return;
  }
  if (shutting_down_.load()) {
    // The drain began while this hold was being created: shut_down() may have missed it.
    ended_by_shutdown_.fetch_add(registry_.expire_all(kShutdownBy, kShutdownReason));
  }
  {
    std::lock_guard lock(mutex_);
    auto it = by_request_.find(request_id);
    if (it != by_request_.end()) { // absent: it already ended
      it->second = created.id;
    }
  }
  log_event(LogLevel::info, "held", 0, request_id,
            {{"approval", created.id}, {"run", request.run}, {"action", request.decision.action}});
}

void ApprovalGate::abandon(const std::string& request_id) {
  std::string id;
  {
    std::lock_guard lock(mutex_);
    auto it = by_request_.find(request_id);
    if (it == by_request_.end()) {
      return;
    }
    id = it->second;
  }
  if (!id.empty()) {
    registry_.abandon(id);
  }
}

std::size_t ApprovalGate::kill_run(const std::string& run, const std::string& by) {
  return registry_.kill_run(run, by);
}

std::size_t ApprovalGate::pause_all(const std::string& by) {
  return registry_.pause_all(by);
}

void ApprovalGate::observe(const std::string& run, const std::string& request_id,
                           const std::string& action, const std::string& outcome,
                           const std::string& method, const std::string& url) {
  history_.record(run, approval::CallView{request_id, action, outcome, method, url,
                                          approval::system_clock().wall()});
}

void ApprovalGate::set_packet_redactor(std::shared_ptr<const approval::PacketRedactor> redactor) {
  if (redactor) {
    redactor_.store(std::move(redactor));
  }
}

std::shared_ptr<const approval::PacketRedactor>
make_packet_redactor(const config::Redaction& redaction, std::size_t body_bytes) {
  const audit::RedactionRules rules{redaction.headers, redaction.json_keys, redaction.patterns};
  return std::make_shared<approval::AuditPacketRedactor>(
      std::make_shared<const audit::Redactor>(rules), body_bytes);
}

Approvals make_approvals(boost::asio::io_context& ioc, boost::asio::ssl::context& webhook_tls,
                         const config::Config& config, std::shared_ptr<audit::AuditLog> audit) {
  Approvals out;
  if (config.audit.path.empty()) {
    return out;
  }
  const auto& a = config.approvals;
  ApprovalGateOptions o;
  o.registry.max_pending = a.max_pending;
  o.hold_timeout = a.hold_timeout;
  o.journal_path = (config.audit.path.parent_path() / "approvals.journal").string();
  o.packet.default_timeout = a.hold_timeout;
  o.packet.body_bytes = config.audit.body_bytes;
  o.redactor = make_packet_redactor(config.redaction, config.audit.body_bytes);
  std::vector<approval::SignatureKey> keys;
  for (std::size_t i = 0; i < a.webhooks.size(); ++i) {
    const auto& w = a.webhooks[i];
    const char* secret = w.secret_env.empty() ? nullptr : std::getenv(w.secret_env.c_str());
    if (secret == nullptr || *secret == '\0') {
      throw std::runtime_error("approvals.webhooks[" + std::to_string(i) + "]: secret_env " +
                               w.secret_env + " is not set (a webhook is never sent unsigned)");
    }
    const WebhookUrl url = parse_webhook_url(w.url);
    if (!url.ok) {
      throw std::runtime_error("approvals.webhooks[" + std::to_string(i) + "]: " + url.error);
    }
    o.webhooks.push_back(approval::WebhookEndpoint{w.url, secret});
    keys.push_back(approval::SignatureKey{"webhook:" + url.host, secret});
  }
  approval::OperatorTokens tokens;
  if (!a.operator_tokens_file.empty()) {
    tokens = approval::OperatorTokens::load(a.operator_tokens_file.string());
  }
  warn_unmatched_approvers(config, tokens, keys);
  out.tokens = tokens; // shares one set with the copy `auth` keeps
  out.auth = std::make_shared<AdminAuth>(std::move(tokens), std::move(keys));
  o.spend = [auth = out.auth](std::string_view header, std::int64_t t) {
    auth->verifier().spend(header, t);
  };
  out.gate = std::make_shared<ApprovalGate>(ioc, webhook_tls, std::move(audit), std::move(o));
  return out;
}

} // namespace runwarden::proxy
