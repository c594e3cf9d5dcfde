#pragma once
// Operations on the admin listener (DESIGN §5, §7): GET /v1/status, POST /v1/mode,
// GET /v1/runs, POST /v1/runs/{run}/kill, GET /metrics, GET /readyz; and the actions behind
// them, shared with signals, the kill-switch file and budget trips. Every change is logged,
// recorded in the audit log, counted and announced.

#include "proxy/admin_router.hpp"
#include "proxy/proxy_context.hpp"

#include <memory>
#include <string>

namespace runwarden::proxy {

/// Sets the operator mode. Paused denies every pending hold and closes every open passthrough
/// tunnel; read_only closes the tunnels whose CONNECT was not a read_only action (closing
/// records: outcome aborted, code paused or read_only_mode). False when already in `mode`.
bool change_mode(const std::shared_ptr<ProxyContext>& ctx, policy::Mode mode, const std::string& by,
                 const std::string& via);
/// The kill-switch file appeared (paused, as change_mode) or went away (back to the
/// operator mode).
void apply_kill_switch(const std::shared_ptr<ProxyContext>& ctx, bool present);
/// Stops one run: its pending holds are denied, its open passthrough tunnels closed (code
/// run_killed) and its new calls refused (403 run_killed). `via` (admin_api, budget) labels
/// runwarden_runs_killed_total. Returns false when the run was already killed.
bool kill_run(const std::shared_ptr<ProxyContext>& ctx, const std::string& run,
              const std::string& by, const std::string& reason, const std::string& via);

/// Registers the operations routes (replacing the built-in /v1/status and /readyz).
/// Mutating routes need ctx->authenticate_admin to accept the caller.
void add_ops_routes(AdminRouter& router, std::shared_ptr<ProxyContext> ctx);

} // namespace runwarden::proxy
