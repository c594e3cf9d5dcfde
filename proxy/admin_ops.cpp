#include "proxy/admin_ops.hpp"

#include "certs/authority.hpp"
#include "proxy/approval_gate.hpp"
#include "proxy/log.hpp"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

namespace runwarden::proxy {
namespace {

AdminResponse json_response(int status, const nlohmann::json& j) {
  AdminResponse r;
  r.status = status;
  r.body = j.dump();
  return r;
}

AdminResponse error(int status, std::string_view code, std::string_view reason) {
  return json_response(status, nlohmann::json{{"error", code}, {"reason", reason}});
}

void record_event(const std::shared_ptr<ProxyContext>& ctx, std::string_view type,
                  const nlohmann::json& fields) {
  if (ctx->audit) {
    ctx->audit->event(type, fields, [type = std::string(type)](std::error_code ec) {
      if (ec) {
        log_event(LogLevel::error, "audit_event_failed", 0, {},
                  {{"event", type}, {"error", ec.message()}});
      }
    });
  }
  if (ctx->announce) {
    ctx->announce(type, fields);
  }
}

/// The caller's operator name, or the 401 to answer.
std::optional<std::string> authorize(const ProxyContext& ctx, const AdminRequest& req,
                                     AdminResponse& refusal) {
  std::string why = "no operator credentials are configured (approvals.operator_tokens_file)";
  if (ctx.authenticate_admin) {
    if (auto who = ctx.authenticate_admin(req, &why)) {
      return who;
    }
  }
  log_event(LogLevel::warn, "admin_unauthorized", 0, {}, {{"path", req.path}, {"why", why}});
  refusal = error(401, "unauthorized", why);
  return std::nullopt;
}

/// Requests held for approval now; 0 when holds are refused (no approvals gate).
std::size_t pending_holds(const ProxyContext& ctx) {
  if (auto gate = std::dynamic_pointer_cast<ApprovalGate>(ctx.gate)) {
    return gate->registry().stats().pending;
  }
  return 0;
}

/// Closes the open tunnels the new effective mode would refuse: every one when paused, those
/// not judged read_only under read_only (a new CONNECT is judged the same way). Returns how
/// many.
std::size_t close_tunnels_for_mode(ProxyContext& ctx, policy::Mode mode) {
  if (mode == policy::Mode::paused) {
    return ctx.tunnels.close_if([](const TunnelRegistry::Entry&) { return true; },
                                paused_tunnel_close());
  }
  if (mode == policy::Mode::read_only) {
    return ctx.tunnels.close_if([](const TunnelRegistry::Entry& e) { return !e.read_only; },
                                read_only_tunnel_close());
  }
  return 0;
}

nlohmann::json status_json(const ProxyContext& ctx) {
  const auto cfg = ctx.runtime->config();
  std::string sha;
  if (cfg->engine) {
    if (const auto* rb = cfg->engine->runbook(cfg->active_runbook)) {
      sha = rb->sha256;
    }
  }
  const ModeState m = ctx.runtime->mode_state();
  auto uptime = std::chrono::duration<double>(std::chrono::steady_clock::now() - ctx.started);
  return nlohmann::json{{"mode", policy::to_string(m.mode)},
                        {"since", m.since},
                        {"by", m.by},
                        {"via", m.via},
                        {"kill_switch", ctx.runtime->kill_switch_present()},
                        {"agent", cfg->agent_id},
                        {"active_runbook", cfg->active_runbook},
                        {"runbook_sha256", sha},
                        {"uptime_s", uptime.count()},
                        {"open_connections", ctx.open_connections.load()},
                        {"rejected_connections", ctx.rejected_connections.load()},
                        {"requests", ctx.requests.load()},
                        {"in_flight", ctx.in_flight.load()},
                        {"pending_holds", pending_holds(ctx)},
                        {"open_tunnels", ctx.tunnels.size()},
                        {"runs", ctx.runtime->run_count()},
                        {"draining", ctx.draining.load()}};
}

/// While the kill-switch file exists runwarden stays paused whatever mode an operator sets:
/// the answer says so, with the file to remove (else `ctl mode normal` looks like it worked).
void note_kill_switch(const ProxyContext& ctx, policy::Mode asked, nlohmann::json& j) {
  if (!ctx.runtime->kill_switch_present()) {
    return;
  }
  const auto cfg = ctx.runtime->config();
  j["kill_switch_file"] = cfg->kill_switch_file.string();
  if (asked != policy::Mode::paused) {
    j["note"] = "runwarden stays paused while the kill-switch file " +
                cfg->kill_switch_file.string() + " exists: remove it to resume (then mode " +
                std::string(policy::to_string(asked)) + " applies)";
  }
}

} // namespace

bool change_mode(const std::shared_ptr<ProxyContext>& ctx, policy::Mode mode, const std::string& by,
                 const std::string& via) {
  auto previous = ctx->runtime->set_mode(mode, by, via);
  if (!previous) {
    return false;
  }
  ctx->mode.store(ctx->runtime->effective_mode());
  std::size_t denied = 0;
  if (ctx->runtime->effective_mode() == policy::Mode::paused && ctx->gate) {
    denied = ctx->gate->pause_all(by);
  }
  const std::size_t closed = close_tunnels_for_mode(*ctx, ctx->runtime->effective_mode());
  const std::string from(policy::to_string(previous->mode));
  const std::string to(policy::to_string(mode));
  log_event(LogLevel::warn, "mode_changed", 0, {},
            {{"from", from},
             {"to", to},
             {"by", by},
             {"via", via},
             {"tunnels_closed", std::to_string(closed)}});
  if (ctx->metrics) {
    ctx->metrics->mode_changes.inc({to, via});
  }
  record_event(ctx, "mode_changed",
               {{"from", from},
                {"to", to},
                {"by", by},
                {"via", via},
                {"holds_denied", denied},
                {"tunnels_closed", closed}});
  return true;
}

void apply_kill_switch(const std::shared_ptr<ProxyContext>& ctx, bool present) {
  const policy::Mode before = ctx->runtime->effective_mode();
  if (!ctx->runtime->set_kill_switch(present)) {
    return;
  }
  const policy::Mode after = ctx->runtime->effective_mode();
  ctx->mode.store(after);
  std::size_t denied = 0;
  if (after == policy::Mode::paused && ctx->gate) {
    denied = ctx->gate->pause_all("kill_switch_file");
  }
  const std::size_t closed = close_tunnels_for_mode(*ctx, after);
  const std::string from(policy::to_string(before));
  const std::string to(policy::to_string(after));
  log_event(LogLevel::warn, "mode_changed", 0, {},
            {{"from", from},
             {"to", to},
             {"by", "kill_switch_file"},
             {"via", "kill_switch_file"},
             {"tunnels_closed", std::to_string(closed)}});
  if (ctx->metrics) {
    ctx->metrics->mode_changes.inc({to, "kill_switch_file"});
  }
  record_event(ctx, "mode_changed",
               {{"from", from},
                {"to", to},
                {"by", "kill_switch_file"},
                {"via", "kill_switch_file"},
                {"kill_switch", present},
                {"holds_denied", denied},
                {"tunnels_closed", closed}});
}

bool kill_run(const std::shared_ptr<ProxyContext>& ctx, const std::string& run,
              const std::string& by, const std::string& reason, const std::string& via) {
  if (!ctx->runtime->kill_run(run, by, reason)) {
    return false;
  }
  const std::size_t denied = ctx->gate ? ctx->gate->kill_run(run, by) : 0;
  const std::size_t closed =
      ctx->tunnels.close_if([&run](const TunnelRegistry::Entry& e) { return e.run == run; },
                            run_killed_tunnel_close(run));
  log_event(LogLevel::warn, "run_killed", 0, {},
            {{"run", run},
             {"by", by},
             {"via", via},
             {"reason", reason},
             {"holds_denied", std::to_string(denied)},
             {"tunnels_closed", std::to_string(closed)}});
  if (ctx->metrics) {
    ctx->metrics->runs_killed.inc({via});
  }
  record_event(ctx, "run_killed",
               {{"run", run},
                {"by", by},
                {"via", via},
                {"reason", reason},
                {"holds_denied", denied},
                {"tunnels_closed", closed}});
  return true;
}

void add_ops_routes(AdminRouter& router, std::shared_ptr<ProxyContext> ctx) {
  router.add("GET", "/v1/status", [ctx](const AdminRequest&) {
    auto j = status_json(*ctx);
    note_kill_switch(*ctx, ctx->runtime->mode_state().mode, j);
    return json_response(200, j);
  });
  router.add("POST", "/v1/mode", [ctx](const AdminRequest& req) {
    AdminResponse refusal;
    auto who = authorize(*ctx, req, refusal);
    if (!who) {
      return refusal;
    }
    std::map<std::string, std::string, std::less<>> body;
    std::string why;
    if (!parse_admin_body(req.body, {"mode"}, body, why) || body.count("mode") == 0) {
      return error(400, "bad_request",
                   (why.empty() ? std::string() : why + ": ") +
                       "expected {\"mode\": \"normal\"|\"read_only\"|\"paused\"}");
    }
    auto mode = policy::parse_mode(body["mode"]);
    if (!mode) {
      return error(400, "bad_mode", "mode must be normal, read_only or paused");
    }
    const bool changed = change_mode(ctx, *mode, *who, "admin_api");
    auto j = status_json(*ctx);
    j["changed"] = changed;
    note_kill_switch(*ctx, *mode, j);
    return json_response(200, j);
  });
  router.add("GET", "/v1/runs",
             [ctx](const AdminRequest&) { return json_response(200, ctx->runtime->runs_json()); });
  router.add_prefix("POST", "/v1/runs/", [ctx](const AdminRequest& req) {
    std::string_view rest = std::string_view(req.path).substr(std::string_view("/v1/runs/").size());
    const auto slash = rest.find('/');
    if (slash == std::string_view::npos || slash == 0 || rest.substr(slash + 1) != "kill") {
      return error(404, "not_found",
                   "expected POST /v1/runs/{run}/kill, the run id percent-encoded (a '/' in it "
                   "as %2F)");
    }
    AdminResponse refusal;
    auto who = authorize(*ctx, req, refusal);
    if (!who) {
      return refusal;
    }
    // Decoded as the approvals routes decode their ids (`ctl kill` encodes every byte
    // outside the unreserved set), except that a run id may hold a '/': Runwarden-Run is
    // free text. Killing the undecoded text would report success and stop nothing.
    std::string run;
    std::string why;
    if (!decode_path_segment(rest.substr(0, slash), run, true, why)) {
      return error(400, "bad_run_id", why);
    }
    // What Runwarden-Run accepts, or agent.id (the run of headerless calls under
    // agent.runs: shared): no call can ever carry a longer id.
    const std::size_t longest = std::max(kMaxRunId, ctx->runtime->config()->agent_id.size());
    if (run.size() > longest) {
      return error(400, "bad_run_id",
                   "the run id is " + std::to_string(run.size()) +
                       " bytes; a Runwarden-Run value is 1-" + std::to_string(kMaxRunId) +
                       " bytes, so no call has this one");
    }
    std::map<std::string, std::string, std::less<>> body;
    if (!parse_admin_body(req.body, {"reason"}, body, why)) {
      return error(400, "bad_request", why + ": expected {\"reason\": string} or no body");
    }
    const std::string reason = body.count("reason") != 0 ? body["reason"] : "killed by operator";
    // A run not in the table is killed too (its first call may be still to come, or it
    // was evicted past the table's cap), but the answer says so: a mistyped id must not
    // look like the run that goes on was stopped (`ctl kill` warns and exits 3).
    const bool known = ctx->runtime->run_known(run);
    const bool newly = kill_run(ctx, run, *who, reason, "admin_api");
    return json_response(
        200, {{"run", run}, {"killed", true}, {"already_killed", !newly}, {"known", known}});
  });
  router.add("GET", "/metrics", [ctx](const AdminRequest&) {
    AdminResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = ctx->metrics ? ctx->metrics->registry.render() : std::string();
    return r;
  });
  router.add("GET", "/readyz", [ctx](const AdminRequest&) {
    nlohmann::json checks = nlohmann::json::object();
    nlohmann::json failing = nlohmann::json::object();
    const auto cfg = ctx->runtime->config();
    if (cfg && cfg->engine) {
      checks["config"] = "loaded " + cfg->file.string();
    } else {
      failing["config"] = "no policy loaded";
    }
    if (ctx->authority) {
      checks["ca"] = "loaded";
    } else {
      failing["ca"] = "no CA loaded: TLS interception unavailable";
    }
    if (ctx->audit && ctx->audit->healthy()) {
      checks["audit"] = "writable";
    } else {
      failing["audit"] = ctx->audit ? ctx->audit->failure() : std::string("no audit log");
    }
    if (ctx->draining.load()) {
      failing["draining"] = "shutting down";
    }
    nlohmann::json j{{"ready", failing.empty()},
                     {"checks", checks},
                     {"mode", policy::to_string(ctx->runtime->effective_mode())}};
    if (!failing.empty()) {
      j["failing"] = failing;
    }
    return json_response(failing.empty() ? 200 : 503, j);
  });
}

} // namespace runwarden::proxy
